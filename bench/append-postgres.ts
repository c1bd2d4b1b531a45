/**
 * Append throughput and latency on PostgreSQL through the public API, against the raw
 * `pg` driver in the same run on the same server (`npm run bench:append -- --backend
 * postgres`).
 *
 * Candidate: 1000 streams, each appending one event at a time in order with its expected
 * version through `EventStore.append` of `PostgresChronicle.layer({ schema, partitions })`
 * over `PgClient.layer` (a pool of `--pool` connections, default 10, opened once for the
 * whole bench like the baseline's connections), all streams at once.
 * The store coalesces the appends that meet on one partition into one call of its append
 * function, which locks the partition, checks each batch (idempotency, expected version)
 * and writes the events at the partition's next gapless positions.
 * Typed: the same through `EventStore.forContract(...).append` (Schema validation, id
 * minting); reported beside the ratio, not in it.
 * Context: the baseline's own calls awaited from Effect fibers (`Effect.promise` in the
 * same 1000-fiber shape as the candidate), which shows what the Effect runtime alone
 * costs in this workload; reported beside the ratio, not in it.
 * Baseline: the same workload and payload with `pg` alone, one round trip per event: a
 * named (prepared) single-statement insert whose WHERE checks the expected version
 * against the stream's last (unique `(stream_id, version)` as the backstop), on as many
 * connections as the candidate's pool, each in pg's pipeline mode (stream s on connection
 * s mod pool), so that each connection has its streams' appends in flight together.
 * The baseline does less work than the candidate: no idempotency map (no lookup of the
 * event ids, no unique index on them), no partition log (no lock, no gapless positions
 * per partition, no stream registry), no limits or JSON encoding by the store.
 * Two warm-up runs of each of the four, then three alternating rounds, each in fresh tables; the ratio is the
 * median of the per-round candidate/baseline ratios. Latency: one awaited append at a
 * time, baseline and candidate alternating sample by sample, p50 of each.
 *
 * Also reported: Emmett's PostgreSQL store with expected version on this kind of machine
 * (2 cores), 3.3k events/s (p50 0.78 ms), as a constant: `emmett_ratio` is the
 * candidate's rate over it. On a private server (pg_stat_statements loaded) each round
 * prints the server's execution time per append call and per event of both, and the CPU
 * per event of this process and of the server's processes.
 *
 * Usage: npm run bench:append -- --backend postgres [--partitions 8 --events-per-stream 40
 *   --pool 10 --latency-samples 1000]
 * Starts its own PostgreSQL 15 on a free loopback port (test/support/postgresServer.ts)
 * unless DATABASE_URL is set; then it works in fresh schemas and drops them at the end.
 * Prints one JSON line at the end.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit, Layer, Redacted, Schema, Scope } from "effect"
import { Contract, EventStore } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { readdirSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { partitionOf } from "../src/internal/ids.js"
import { startPostgresServer } from "../test/support/postgresServer.js"
import { arg, median, percentile } from "./support.js"

const STREAMS = 1000
const PER_STREAM = arg("events-per-stream", 40)
const PARTITIONS = arg("partitions", 8)
const POOL = arg("pool", 10)
const LATENCY_SAMPLES = arg("latency-samples", 1000)
const EMMETT_EVENTS_PER_SEC = 3300

const Bench = Contract.make("bench", {
  ItemAdded: {
    orderId: Schema.String,
    sku: Schema.String,
    quantity: Schema.Int,
    price: Schema.Number,
    note: Schema.String
  }
})
const fields = (i: number) => ({
  orderId: `order-${i}`,
  sku: "SKU-0001-ABCDEF",
  quantity: 2,
  price: 19.99,
  note: "a note long enough to make the payload about two hundred bytes in all, like a real event"
})
const payload = (i: number) => JSON.stringify(fields(i))

/** What this bench uses of the `pg` driver (the one `@effect/sql-pg` runs on; its types are not installed). */
interface PgResult<R> {
  readonly rows: Array<R>
  readonly rowCount: number | null
}
interface PgConnection {
  connect(): Promise<void>
  end(): Promise<void>
  query<R = Record<string, unknown>>(text: string, values?: ReadonlyArray<unknown>): Promise<PgResult<R>>
  query<R = Record<string, unknown>>(config: { readonly name: string; readonly text: string; readonly values: ReadonlyArray<unknown> }): Promise<PgResult<R>>
}
interface PgDriver {
  /** `pipeline: true` sends each query at once, without waiting for the previous one's reply. */
  readonly Client: new(config: { readonly connectionString: string; readonly pipeline?: boolean; readonly application_name?: string }) => PgConnection
}
const pg = createRequire(import.meta.url)("pg") as PgDriver

const clientLayer = (url: string) => PgClient.layer({ url: Redacted.make(url), maxConnections: POOL, applicationName: "chronicle-bench" })

/**
 * The candidate's connection pool: one for the whole bench, as a service keeps its pool
 * (the baseline's connections are opened once too), so that no run opens connections
 * while it is timed.
 */
type Pool = Context.Context<Layer.Layer.Success<ReturnType<typeof clientLayer>>>

const candidateLayer = (pool: Pool, schema: string) =>
  PostgresChronicle.layer({ schema, partitions: PARTITIONS }).pipe(Layer.provide(Layer.succeedContext(pool)))

/** Runs one statement on a connection of its own. */
const once = async <R = Record<string, unknown>>(url: string, text: string, values: Array<unknown> = []) => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await client.query<R>(text, values)
  } finally {
    await client.end()
  }
}

const baselineTable = (schema: string, round: string) => `"${schema}".base_${round}`

const createBaseline = (url: string, schema: string, round: string) =>
  once(url, `CREATE TABLE ${baselineTable(schema, round)} (
    stream_id text NOT NULL,
    version bigint NOT NULL,
    event_id uuid NOT NULL,
    type text NOT NULL,
    data text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
  )`)

/** The baseline's insert: written only when the stream's last version is the expected one. */
const baselineInsert = (table: string) =>
  `INSERT INTO ${table} (stream_id, version, event_id, type, data)
   SELECT $1, $2::bigint + 1, $3, $4, $5
   WHERE coalesce((SELECT max(b.version) FROM ${table} b WHERE b.stream_id = $1), 0) = $2::bigint
   ON CONFLICT DO NOTHING`

/** `POOL` pipelined connections, and a named query on them per table. */
const baselineClients = async (url: string) => {
  const clients = Array.from({ length: POOL }, () => new pg.Client({ connectionString: url, pipeline: true, application_name: "chronicle-bench-raw" }))
  await Promise.all(clients.map((c) => c.connect()))
  return {
    clients,
    append: (table: string, client: number, stream: string, expected: number, data: string) =>
      clients[client]!.query({ name: `append_${table}`, text: baselineInsert(table), values: [stream, expected, crypto.randomUUID(), "ItemAdded", data] }),
    end: () => Promise.all(clients.map((c) => c.end()))
  }
}
type Baseline = Awaited<ReturnType<typeof baselineClients>>

const baselineRun = async (url: string, base: Baseline, schema: string, round: string) => {
  await createBaseline(url, schema, round)
  const table = baselineTable(schema, round)
  const start = performance.now()
  await Promise.all(
    Array.from({ length: STREAMS }, async (_, s) => {
      for (let v = 0; v < PER_STREAM; v++) {
        const r = await base.append(table, s % POOL, `s${s}`, v, payload(s))
        if (r.rowCount !== 1) throw new Error(`baseline: stream s${s} at ${v} was not written`)
      }
    })
  )
  const seconds = (performance.now() - start) / 1000
  const check = await once<{ n: string }>(url, `SELECT count(*)::text AS n FROM (SELECT stream_id FROM ${table} GROUP BY stream_id HAVING count(*) = ${PER_STREAM} AND max(version) = ${PER_STREAM}) x`)
  if (Number(check.rows[0]!.n) !== STREAMS) throw new Error("baseline: stream lengths are wrong")
  return (STREAMS * PER_STREAM) / seconds
}

/** The baseline's calls, each awaited from one of 1000 Effect fibers. */
const baselineInEffect = async (url: string, base: Baseline, schema: string, round: string) => {
  await createBaseline(url, schema, round)
  const table = baselineTable(schema, round)
  const start = performance.now()
  await Effect.runPromise(Effect.forEach(
    Array.from({ length: STREAMS }, (_, s) => s),
    (s) =>
      Effect.gen(function*() {
        for (let v = 0; v < PER_STREAM; v++) yield* Effect.promise(() => base.append(table, s % POOL, `s${s}`, v, payload(s)))
      }),
    { concurrency: "unbounded", discard: true }
  ))
  return (STREAMS * PER_STREAM) / ((performance.now() - start) / 1000)
}

/** The workload: every stream appended to once per version, in order, all streams at once; events/s. */
const timedWrites = <E>(append: (stream: number, version: number) => Effect.Effect<unknown, E>) =>
  Effect.gen(function*() {
    const start = performance.now()
    yield* Effect.forEach(
      Array.from({ length: STREAMS }, (_, s) => s),
      (s) =>
        Effect.gen(function*() {
          for (let v = 0; v < PER_STREAM; v++) yield* append(s, v)
        }),
      { concurrency: "unbounded", discard: true }
    )
    return (STREAMS * PER_STREAM) / ((performance.now() - start) / 1000)
  })

const candidateRun = (pool: Pool, schema: string, typed: boolean) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(candidateLayer(pool, schema))
    const raw = Context.get(ctx, EventStore.EventStore)
    const store = yield* EventStore.forContract(Bench).pipe(Effect.provide(ctx))
    yield* store.append("warm", [Bench.make.ItemAdded(fields(0))])
    return yield* timedWrites((s, v) =>
      typed
        ? store.append(`s${s}`, [Bench.make.ItemAdded(fields(s))], { expectedVersion: v })
        : raw.append(`bench-s${s}`, [{ eventId: crypto.randomUUID(), type: "ItemAdded", data: fields(s) }], { expectedVersion: v })
    )
  }).pipe(Effect.scoped)

/**
 * Reads back what the candidate wrote in `schema`: per partition, as many events as were
 * appended to its streams, at positions 1..head without a hole; per stream, versions
 * 1..n, every event in its stream's partition; the stream registry complete.
 */
const verify = async (url: string, schema: string) => {
  const expected = new Map<number, number>()
  const add = (entity: string, n: number) => {
    const p = partitionOf(entity, PARTITIONS)
    expected.set(p, (expected.get(p) ?? 0) + n)
  }
  add("warm", 1)
  for (let s = 0; s < STREAMS; s++) add(`s${s}`, PER_STREAM)
  const partitions = await once<{ partition: number; n: string; lo: string; hi: string }>(url,
    `SELECT partition, count(*)::text AS n, min(pos)::text AS lo, max(pos)::text AS hi FROM "${schema}".events WHERE category = 'bench' GROUP BY partition`)
  if (partitions.rows.length !== expected.size) return false
  for (const row of partitions.rows) {
    const n = Number(row.n)
    // pos is unique per partition (the primary key): n rows within 1..n are exactly 1..n
    if (n !== expected.get(row.partition) || Number(row.lo) !== 1 || Number(row.hi) !== n) return false
  }
  const streams = await once<{ stream_id: string; partition: number; n: string; lo: string; hi: string; parts: string }>(url,
    `SELECT stream_id, min(partition) AS partition, count(DISTINCT partition)::text AS parts, count(*)::text AS n, min(version)::text AS lo, max(version)::text AS hi
     FROM "${schema}".events WHERE category = 'bench' GROUP BY stream_id`)
  if (streams.rows.length !== STREAMS + 1) return false
  for (const row of streams.rows) {
    const n = row.stream_id === "warm" ? 1 : PER_STREAM
    if (Number(row.n) !== n || Number(row.lo) !== 1 || Number(row.hi) !== n || Number(row.parts) !== 1) return false
    if (row.partition !== partitionOf(row.stream_id, PARTITIONS)) return false
  }
  const registry = await once<{ n: string }>(url, `SELECT count(*)::text AS n FROM "${schema}".streams WHERE category = 'bench'`)
  return Number(registry.rows[0]!.n) === STREAMS + 1
}

/**
 * p50 of one awaited append at a time, baseline and candidate alternating sample by
 * sample, so that both see the same machine.
 */
const latency = (url: string, pool: Pool, base: Baseline, schema: string) =>
  Effect.gen(function*() {
    yield* Effect.promise(() => createBaseline(url, schema, "lat"))
    const table = baselineTable(schema, "lat")
    const ctx = yield* Layer.build(candidateLayer(pool, schema))
    const store = Context.get(ctx, EventStore.EventStore)
    const baseline: Array<number> = []
    const candidate: Array<number> = []
    for (let v = 0; v < LATENCY_SAMPLES; v++) {
      let t = process.hrtime.bigint()
      yield* Effect.promise(() => base.append(table, 0, "latency", v, payload(v)))
      baseline.push(Number(process.hrtime.bigint() - t) / 1000)
      t = process.hrtime.bigint()
      yield* store.append("bench-latency", [{ eventId: crypto.randomUUID(), type: "ItemAdded", data: fields(v) }], { expectedVersion: v })
      candidate.push(Number(process.hrtime.bigint() - t) / 1000)
    }
    return { baseline: percentile(baseline, 0.5), candidate: percentile(candidate, 0.5) }
  }).pipe(Effect.scoped)

/** The server's execution time of the statements like `pattern` since the last reset: calls and ms in all. */
const statementTime = async (url: string, pattern: string) => {
  const r = await once<{ calls: string; ms: string }>(url,
    `SELECT coalesce(sum(calls), 0)::text AS calls, coalesce(sum(total_exec_time), 0)::text AS ms FROM pg_stat_statements WHERE query LIKE $1`, [pattern])
  return { calls: Number(r.rows[0]!.calls), ms: Number(r.rows[0]!.ms) }
}

/**
 * CPU seconds used so far by a private server's processes: the postmaster's own and its
 * ended children's (which it has waited for), and its live children's; and its live
 * children's PIDs. Undefined when the postmaster is not found (a server not started here).
 */
const serverCpu = (postmaster: number | undefined): { readonly seconds: number; readonly children: string } | undefined => {
  if (postmaster === undefined) return undefined
  const ticks = 100 // USER_HZ on Linux
  const stat = (pid: string) => {
    try {
      const text = readFileSync(`/proc/${pid}/stat`, "utf8")
      return text.slice(text.lastIndexOf(")") + 2).split(" ")
    } catch {
      return undefined
    }
  }
  // fields after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
  const ended = () => {
    const own = stat(String(postmaster))
    return own === undefined ? undefined : Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14])
  }
  for (;;) {
    const before = ended()
    if (before === undefined) return undefined
    let live = 0
    const children: Array<string> = []
    for (const pid of readdirSync("/proc")) {
      if (!/^\d+$/.test(pid)) continue
      const s = stat(pid)
      if (s !== undefined && Number(s[1]) === postmaster) {
        live += Number(s[11]) + Number(s[12])
        children.push(pid)
      }
    }
    // a child waited for meanwhile would be in neither figure: read again
    if (ended() === before) return { seconds: (before + live) / ticks, children: children.join(",") }
  }
}

/**
 * The server's CPU once the connections a run opened have ended and their processes were
 * waited for (their CPU is then in the postmaster's children's figure): when its set of
 * processes has not changed for 200 ms, or after 3 s.
 */
const settledServerCpu = async (postmaster: number | undefined) => {
  let last = serverCpu(postmaster)
  for (let i = 0, still = 0; i < 60 && still < 4; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    const now = serverCpu(postmaster)
    still = now?.children === last?.children ? still + 1 : 0
    last = now
  }
  return last
}

/** The postmaster listening on this loopback port (found by its command line), if any. */
const postmasterOf = (port: number): number | undefined => {
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
      const p = args.indexOf("-p")
      if (args[0]?.endsWith("/postgres") && p >= 0 && args[p + 1] === String(port)) return Number(pid)
    } catch {
      // gone meanwhile
    }
  }
  return undefined
}

interface Cost {
  readonly client_cpu_us_per_event: number
  readonly server_cpu_us_per_event?: number
  readonly server_ms_per_call?: number
  readonly server_us_per_event?: number
  readonly events_per_call?: number
}

/** Runs `run` (which returns events/s) and measures what it cost: CPU of both sides, the server's time in `pattern`'s statements. */
const measured = async (url: string, stats: boolean, postmaster: number | undefined, pattern: string, run: () => Promise<number>) => {
  if (stats) await once(url, "SELECT pg_stat_statements_reset()")
  const server0 = serverCpu(postmaster)
  const client0 = process.cpuUsage()
  const rate = await run()
  const client = process.cpuUsage(client0)
  const server1 = server0 === undefined ? undefined : await settledServerCpu(postmaster)
  const events = STREAMS * PER_STREAM
  const cost: Cost = {
    client_cpu_us_per_event: +((client.user + client.system) / events).toFixed(1),
    ...(server0 !== undefined && server1 !== undefined ? { server_cpu_us_per_event: +(((server1.seconds - server0.seconds) * 1e6) / events).toFixed(1) } : {})
  }
  if (!stats) return { rate, cost }
  const { calls, ms } = await statementTime(url, pattern)
  return {
    rate,
    cost: {
      ...cost,
      server_ms_per_call: +(ms / Math.max(1, calls)).toFixed(3),
      server_us_per_event: +((ms * 1000) / events).toFixed(1),
      events_per_call: +(events / Math.max(1, calls)).toFixed(1)
    }
  }
}

export const postgresMain = async () => {
  const server = await startPostgresServer()
  const url = server.url
  const tag = Date.now().toString(36)
  const schema = (round: string) => `bench_${tag}_${round}`
  const created: Array<string> = []
  const fresh = async (round: string) => {
    const name = schema(round)
    created.push(name)
    if (round.startsWith("b")) await once(url, `CREATE SCHEMA "${name}"`)
    return name
  }
  const postmaster = server.owned ? postmasterOf(Number(new URL(url).port)) : undefined
  const stats = server.statementStats
  const appendPattern = "%.append($1%"
  let base: Baseline | undefined
  const poolScope = Effect.runSync(Scope.make())
  try {
    const pool = await Effect.runPromise(Layer.buildWithScope(clientLayer(url), poolScope))
    if (stats) await once(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    base = await baselineClients(url)
    // warm-up of every path (JIT, plans, the function's cached plans), twice: measured,
    // the candidate's client CPU per event settles only in its third run of the workload
    // (~48, ~39, then ~27 µs), the baseline's in its second
    const warm = await fresh("bw")
    for (let w = 0; w < 2; w++) {
      await baselineRun(url, base, warm, `w${w}`)
      await baselineInEffect(url, base, warm, `we${w}`)
      await Effect.runPromise(candidateRun(pool, await fresh(`cw${w}`), false))
      await Effect.runPromise(candidateRun(pool, await fresh(`tw${w}`), true))
    }
    const rounds: Array<{ baseline: number; candidate: number; typed: number; inEffect: number; verified: boolean }> = []
    for (let r = 0; r < 3; r++) {
      const b = await fresh(`b${r}`)
      const baseline = await measured(url, stats, postmaster, "INSERT INTO %base_%", () => baselineRun(url, base!, b, String(r)))
      const c = await fresh(`c${r}`)
      const candidate = await measured(url, stats, postmaster, appendPattern, () => Effect.runPromise(candidateRun(pool, c, false)))
      const t = await fresh(`t${r}`)
      const typed = await measured(url, stats, postmaster, appendPattern, () => Effect.runPromise(candidateRun(pool, t, true)))
      const inEffect = await measured(url, stats, postmaster, "INSERT INTO %base_%", () => baselineInEffect(url, base!, b, `e${r}`))
      const verified = (await verify(url, c)) && (await verify(url, t))
      rounds.push({ baseline: baseline.rate, candidate: candidate.rate, typed: typed.rate, inEffect: inEffect.rate, verified })
      console.error(JSON.stringify({
        round: r,
        baseline_events_per_sec: Math.round(baseline.rate),
        events_per_sec: Math.round(candidate.rate),
        typed_events_per_sec: Math.round(typed.rate),
        baseline_in_effect_events_per_sec: Math.round(inEffect.rate),
        ratio: +(candidate.rate / baseline.rate).toFixed(3),
        baseline_cost: baseline.cost,
        cost: candidate.cost,
        typed_cost: typed.cost,
        baseline_in_effect_cost: inEffect.cost,
        verified
      }))
    }
    const lat = await Effect.runPromise(latency(url, pool, base, await fresh("blat")))
    const events = median(rounds.map((p) => p.candidate))
    console.log(JSON.stringify({
      bench: "append",
      backend: "postgres",
      partitions: PARTITIONS,
      events_per_sec: Math.round(events),
      baseline_events_per_sec: Math.round(median(rounds.map((p) => p.baseline))),
      ratio: +median(rounds.map((p) => p.candidate / p.baseline)).toFixed(3),
      typed_events_per_sec: Math.round(median(rounds.map((p) => p.typed))),
      typed_ratio: +median(rounds.map((p) => p.typed / p.baseline)).toFixed(3),
      baseline_in_effect_events_per_sec: Math.round(median(rounds.map((p) => p.inEffect))),
      baseline_in_effect_ratio: +median(rounds.map((p) => p.inEffect / p.baseline)).toFixed(3),
      emmett_events_per_sec: EMMETT_EVENTS_PER_SEC,
      emmett_ratio: +(events / EMMETT_EVENTS_PER_SEC).toFixed(2),
      p50_us: +lat.candidate.toFixed(1),
      baseline_p50_us: +lat.baseline.toFixed(1),
      verified: rounds.every((p) => p.verified)
    }))
  } finally {
    await Effect.runPromise(Scope.close(poolScope, Exit.void))
    await base?.end()
    if (!server.owned) {
      for (const name of created) await once(url, `DROP SCHEMA IF EXISTS "${name}" CASCADE`).catch(() => undefined)
    }
    await server.stop()
  }
}
