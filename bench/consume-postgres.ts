/**
 * Consumer throughput on PostgreSQL through the public API, against a raw `pg` loop in
 * the same run on the same server, over the same category log (`npm run bench:consume --
 * --backend postgres`).
 *
 * The log: EVENTS events (~200 bytes of data each) over 1,000 streams in P partitions
 * (default 200,000 and 8), written once through `EventStore.append`.
 * Baseline: the fastest raw loop known for the same work with the driver alone: per
 * partition, on a connection of its own, a keyset-paged `SELECT … WHERE category = $1 AND
 * partition = $2 AND pos > $3 ORDER BY pos LIMIT 500` (a prepared statement), then
 * JSON.parse of each event's data and the same Schema decode the subscriber does, then
 * one upsert of the partition's checkpoint per page (its consumer's only durable state;
 * sent before the next read, awaited at the end). It has no leases, no pending list and
 * no delivery counts: it is the floor, not a consumer group.
 * Candidate: `Subscriber.run` (membership, fenced leases, pending lists, claims) with a
 * no-op handler, default concurrency and readCount 500, in a fresh group over the same
 * log. `verified` only when every event was handled exactly once and nothing is pending.
 * The two alternate `--rounds` times (default 3); figures are medians. With a private
 * server, the statements' server time per event (pg_stat_statements) is printed on stderr.
 *
 * Usage: npm run bench:consume -- --backend postgres [--events 200000 --partitions 8 --rounds 3]
 * Starts its own PostgreSQL on a free loopback port unless DATABASE_URL is set.
 * Prints one JSON line at the end.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Redacted, Schema } from "effect"
import { Contract, EventStore, Subscriber } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import pg from "pg"
import { startPostgresServer } from "../test/support/postgresServer.js"
import { arg, median } from "./support.js"

const EVENTS = arg("events", 200_000)
const PARTITIONS = arg("partitions", 8)
const ROUNDS = arg("rounds", 3)
const STREAMS = 1000
const READ_COUNT = 500
const POOL = arg("pool", 10)

const Bench = Contract.make("cbench", {
  ItemAdded: {
    seq: Schema.Int,
    orderId: Schema.String,
    sku: Schema.String,
    quantity: Schema.Int,
    price: Schema.Number,
    note: Schema.String
  }
})
const fields = (seq: number) => ({
  seq,
  orderId: `order-${seq % STREAMS}`,
  sku: "SKU-0001-ABCDEF",
  quantity: 2,
  price: 19.99,
  note: "a note long enough to make the payload about two hundred bytes in all, like a real event"
})
const decodeItem = Schema.decodeUnknownSync(Bench.events.ItemAdded.schema, { onExcessProperty: "ignore" })

const layerFor = (url: string, schema: string) =>
  PostgresChronicle.layer({ schema, partitions: PARTITIONS }).pipe(
    Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: POOL }))
  )

/** Writes the log once, through the store. */
const fill = (url: string, schema: string) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(layerFor(url, schema))
    const store = Context.get(ctx, EventStore.EventStore)
    const perStream = Math.ceil(EVENTS / STREAMS)
    yield* Effect.forEach(
      Array.from({ length: STREAMS }, (_, s) => s),
      (s) =>
        Effect.gen(function*() {
          for (let i = 0; i < perStream; i += 10) {
            const batch = []
            for (let j = i; j < Math.min(i + 10, perStream); j++) {
              const seq = j * STREAMS + s
              if (seq < EVENTS) batch.push({ eventId: crypto.randomUUID(), type: "ItemAdded", data: fields(seq) })
            }
            if (batch.length > 0) yield* store.append(`cbench-s${s}`, batch)
          }
        }),
      { concurrency: 200, discard: true }
    )
  }).pipe(Effect.scoped)

/** The raw loops: one per partition, each on its own connection. */
const baseline = async (url: string, schema: string, name: string) => {
  const pool = new pg.Pool({ connectionString: url, max: PARTITIONS + 1 })
  await pool.query(`CREATE TABLE IF NOT EXISTS "${schema}".raw_checkpoints (name text, partition int, pos bigint, PRIMARY KEY (name, partition))`)
  const seen = new Uint8Array(EVENTS)
  let handled = 0
  const start = performance.now()
  await Promise.all(Array.from({ length: PARTITIONS }, async (_, p) => {
    const client = await pool.connect()
    try {
      let after = 0
      const saves: Array<Promise<unknown>> = []
      for (;;) {
        const r = await client.query({
          name: "page",
          text: `SELECT pos, data FROM "${schema}".events WHERE category = $1 AND partition = $2 AND pos > $3 ORDER BY pos LIMIT $4`,
          values: ["cbench", p, after, READ_COUNT],
          rowMode: "array"
        })
        if (r.rows.length === 0) break
        for (const row of r.rows as Array<[string, string]>) {
          const item = decodeItem({ ...JSON.parse(row[1]), _tag: "ItemAdded" })
          seen[item.seq]!++
          handled++
        }
        after = Number((r.rows as Array<[string, string]>)[r.rows.length - 1]![0])
        saves.push(client.query({
          name: "save",
          text: `INSERT INTO "${schema}".raw_checkpoints (name, partition, pos) VALUES ($1, $2, $3) ON CONFLICT (name, partition) DO UPDATE SET pos = EXCLUDED.pos`,
          values: [name, p, after]
        }))
      }
      await Promise.all(saves)
    } finally {
      client.release()
    }
  }))
  const seconds = (performance.now() - start) / 1000
  await pool.end()
  return { eventsPerSec: handled / seconds, verified: handled === EVENTS && seen.every((n) => n === 1) }
}

/** The subscriber, over the same log, with a no-op handler. */
const candidate = (url: string, schema: string, group: string) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(layerFor(url, schema))
    const seen = new Uint8Array(EVENTS)
    let handled = 0
    let peakRss = 0
    const startRss = process.memoryUsage().rss
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50)
    const start = performance.now()
    let done = 0
    const all = yield* Deferred.make<void>()
    const fiber = yield* Effect.forkScoped(Subscriber.run(Bench, {
      group,
      readCount: READ_COUNT,
      handlers: {
        ItemAdded: (event) =>
          Effect.sync(() => {
            seen[event.seq]!++
            if (++handled === EVENTS) {
              done = performance.now()
              Deferred.unsafeDone(all, Exit.void)
            }
          })
      }
    }).pipe(Effect.provide(ctx)))
    yield* Deferred.await(all)
    yield* Subscriber.awaitIdle(group, { pollInterval: "20 millis" }).pipe(Effect.provide(ctx), Effect.timeout("60 seconds"), Effect.ignore)
    clearInterval(sampler)
    const status = yield* Subscriber.status(group).pipe(Effect.provide(ctx))
    yield* Fiber.interrupt(fiber)
    const pending = status.partitionStatus.reduce((n, p) => n + p.pending + p.lag, 0)
    return {
      eventsPerSec: handled / ((done - start) / 1000),
      verified: handled === EVENTS && seen.every((n) => n === 1) && pending === 0,
      rssGrowthMb: (Math.max(peakRss, process.memoryUsage().rss) - startRss) / 1024 / 1024
    }
  }).pipe(Effect.scoped)

/** Server time per event of the statements run since the last reset, the costliest first. */
const statementTimes = async (url: string) => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  const r = await client.query(
    `SELECT calls, round(total_exec_time::numeric, 1) AS ms, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query
     FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 8`
  )
  await client.query(`SELECT pg_stat_statements_reset()`)
  await client.end()
  return r.rows.map((row) => ({ calls: Number(row.calls), us_per_event: +((Number(row.ms) * 1000) / EVENTS).toFixed(2), query: String(row.query) }))
}

export const main = async () => {
  const external = process.env.DATABASE_URL
  const server = external ? undefined : await startPostgresServer()
  const url = external ?? server!.url
  const schema = `cbench_${Date.now().toString(36)}`
  const stats = server?.statementStats === true
  try {
    if (stats) {
      const c = new pg.Client({ connectionString: url })
      await c.connect()
      await c.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
      await c.end()
    }
    const t = performance.now()
    await Effect.runPromise(fill(url, schema))
    console.error(JSON.stringify({ filled: EVENTS, seconds: +((performance.now() - t) / 1000).toFixed(1) }))
    if (stats) await statementTimes(url)
    const rounds: Array<{ baseline: number; candidate: number; rss: number; verified: boolean }> = []
    for (let r = 0; r < ROUNDS; r++) {
      const cpu0 = process.cpuUsage()
      // --candidate-only: for profiling the candidate alone
      const b = process.argv.includes("--candidate-only") ? { eventsPerSec: NaN, verified: false } : await baseline(url, schema, `raw${r}`)
      const cpuB = process.cpuUsage(cpu0)
      if (stats) console.error(JSON.stringify({ round: r, baseline_server: await statementTimes(url) }))
      const cpu1 = process.cpuUsage()
      const c = await Effect.runPromise(candidate(url, schema, `sub${r}`))
      const cpuC = process.cpuUsage(cpu1)
      console.error(JSON.stringify({ round: r, client_cpu_us_per_event: +((cpuC.user + cpuC.system) / EVENTS).toFixed(1), baseline_client_cpu_us_per_event: +((cpuB.user + cpuB.system) / EVENTS).toFixed(1) }))
      if (stats) console.error(JSON.stringify({ round: r, candidate_server: await statementTimes(url) }))
      rounds.push({ baseline: b.eventsPerSec, candidate: c.eventsPerSec, rss: c.rssGrowthMb, verified: b.verified && c.verified })
      console.error(JSON.stringify({ round: r, events_per_sec: Math.round(c.eventsPerSec), baseline_events_per_sec: Math.round(b.eventsPerSec), ratio: +(c.eventsPerSec / b.eventsPerSec).toFixed(3), baseline_verified: b.verified, verified: c.verified }))
    }
    console.log(JSON.stringify({
      bench: "consume",
      backend: "postgres",
      partitions: PARTITIONS,
      events: EVENTS,
      events_per_sec: Math.round(median(rounds.map((r) => r.candidate))),
      baseline_events_per_sec: Math.round(median(rounds.map((r) => r.baseline))),
      ratio: +median(rounds.map((r) => r.candidate / r.baseline)).toFixed(3),
      rss_growth_mb: +Math.max(...rounds.map((r) => r.rss)).toFixed(1),
      verified: rounds.every((r) => r.verified)
    }))
  } finally {
    if (external) {
      const c = new pg.Client({ connectionString: url })
      await c.connect()
      await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
      await c.end()
    }
    await server?.stop()
  }
}
