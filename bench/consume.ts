/**
 * Consumer throughput through the public API, against a raw ioredis loop in the same run
 * on the same redis-server, over the same category log.
 *
 * The log: EVENTS events (~200 bytes of fields each) over 1,000 streams in P partitions
 * (default 1,000,000 and 8), written once through `EventStore.append`.
 * Baseline: the fastest raw loop known for the same work with ioredis alone: per
 * partition, XREADGROUP COUNT 500 on one auto-pipelined connection, then for each entry
 * JSON.parse of its data and the same Schema decode the subscriber does, then one XACK of
 * the page (not awaited before the next read); one such loop per partition, concurrently,
 * in its own consumer group.
 * Candidate: `Subscriber.run` with ownership (membership, leases, fenced reads, claims),
 * a no-op handler, default concurrency and readCount 500, in another group over the same
 * log. `verified` only when every event was handled exactly once and every pending list
 * is empty. RSS growth: the candidate's peak resident set minus its resident set at start.
 * The two run alternately, `--rounds` times (default 1), each over the whole log in a
 * fresh group; figures are medians.
 *
 * Usage: npm run bench:consume [-- --events 1000000 --partitions 8 --rounds 1]
 * With `--backend postgres`: the same on PostgreSQL (bench/consume-postgres.ts).
 * Starts its own redis-server on a free loopback port unless REDIS_URL is set.
 * Prints one JSON line at the end.
 *
 * With `--cluster`: the same log (200,000 events and 16 partitions unless told
 * otherwise) written on one redis-server and on a local Redis Cluster of 3 masters,
 * started side by side; on each, the raw per-partition loop (on a cluster through the
 * cluster client, each partition's commands routed to its master) and the subscriber,
 * alternately, `--rounds` times (default 3); per topology events/s and the CPU per event
 * of this process and of the servers.
 */
import { Context, Deferred, Effect, Exit, Fiber, Layer, Schema } from "effect"
import { Contract, EventStore, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Cluster, Redis } from "ioredis"
import { startRedisCluster } from "../test/support/redisCluster.js"
import { startRedisServer } from "../test/support/redisServer.js"
import { arg, backend, median, withCpu } from "./support.js"

const CLUSTER = process.argv.includes("--cluster")
const EVENTS = arg("events", CLUSTER ? 200_000 : 1_000_000)
const PARTITIONS = arg("partitions", CLUSTER ? 16 : 8)
const ROUNDS = arg("rounds", CLUSTER ? 3 : 1)
const STREAMS = 1000
const READ_COUNT = 500

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
// the Schema the subscriber decodes with: the contract's event schema (the stored data
// has no tag: the type is stored beside it)
const decodeItem = Schema.decodeUnknownSync(Bench.events.ItemAdded.schema, { onExcessProperty: "ignore" })


type Target = string | ReadonlyArray<{ readonly host: string; readonly port: number }>

const layerFor = (url: Target, prefix: string) =>
  RedisChronicle.layer({ prefix, partitions: PARTITIONS }).pipe(
    Layer.provide(typeof url === "string" ? RedisClient.layer({ url }) : RedisClient.layerCluster({ nodes: url }))
  )

/** Writes the log once, through the store, as fast as it goes. */
const fill = (url: Target, prefix: string) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(layerFor(url, prefix))
    const store = Context.get(ctx, EventStore.EventStore)
    const perStream = Math.ceil(EVENTS / STREAMS)
    // batches of 10 per stream: the log is the subject here, not how fast it was written
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
      { concurrency: "unbounded", discard: true }
    )
  }).pipe(Effect.scoped)

const logKey = (prefix: string, p: number) => `${prefix}:{cbench:${p}}:log`

/** One partition's raw loop: XREADGROUP COUNT 500 until empty, each page handled, then one XACK of it (not awaited before the next read). */
const partitionLoop = async (redis: Redis | Cluster, key: string, group: string, handle: (fields: Array<string>) => void) => {
  const acks: Array<Promise<unknown>> = []
  for (;;) {
    const reply = (await redis.xreadgroup("GROUP", group, "c", "COUNT", READ_COUNT, "STREAMS", key, ">")) as Array<[string, Array<[string, Array<string>]>]> | null
    const entries = reply?.[0]?.[1] ?? []
    if (entries.length === 0) break
    const ids: Array<string> = new Array(entries.length)
    for (let i = 0; i < entries.length; i++) {
      handle(entries[i]![1])
      ids[i] = entries[i]![0]
    }
    acks.push(redis.xack(key, group, ...ids))
  }
  await Promise.all(acks)
}

/**
 * The raw loops. "multi": one XREADGROUP COUNT 500 over every partition at once, then
 * JSON.parse + decode of each entry, then one XACK per partition (not awaited before the
 * next read), on one connection. "per-partition": the same per partition, each on a
 * connection of its own, concurrently. The faster one is the baseline.
 */
const baseline = async (url: string, prefix: string, group: string, variant: "multi" | "per-partition") => {
  const admin = new Redis(url)
  for (let p = 0; p < PARTITIONS; p++) await admin.xgroup("CREATE", logKey(prefix, p), group, "0")
  const seen = new Uint8Array(EVENTS)
  let handled = 0
  const handle = (list: Array<string>) => {
    let data = ""
    for (let f = 0; f < list.length; f += 2) if (list[f] === "d") data = list[f + 1]!
    const item = decodeItem({ ...JSON.parse(data), _tag: "ItemAdded" })
    seen[item.seq]!++
    handled++
  }
  const keys = Array.from({ length: PARTITIONS }, (_, p) => logKey(prefix, p))
  const connections = Array.from({ length: variant === "multi" ? 1 : PARTITIONS }, () => new Redis(url))
  const start = performance.now()
  if (variant === "multi") {
    const redis = connections[0]!
    const acks: Array<Promise<unknown>> = []
    for (;;) {
      const reply = (await redis.xreadgroup("GROUP", group, "c", "COUNT", READ_COUNT, "STREAMS", ...keys, ...keys.map(() => ">"))) as Array<[string, Array<[string, Array<string>]>]> | null
      if (reply === null || reply.every(([, entries]) => entries.length === 0)) break
      for (const [key, entries] of reply) {
        const ids: Array<string> = new Array(entries.length)
        for (let i = 0; i < entries.length; i++) {
          handle(entries[i]![1])
          ids[i] = entries[i]![0]
        }
        if (ids.length > 0) acks.push(redis.xack(key, group, ...ids))
      }
    }
    await Promise.all(acks)
  } else {
    await Promise.all(keys.map((key, p) => partitionLoop(connections[p]!, key, group, handle)))
  }
  const seconds = (performance.now() - start) / 1000
  let pending = 0
  for (let p = 0; p < PARTITIONS; p++) pending += ((await admin.xpending(logKey(prefix, p), group)) as [number])[0]
  for (const c of [admin, ...connections]) c.disconnect()
  return { eventsPerSec: handled / seconds, verified: handled === EVENTS && seen.every((n) => n === 1) && pending === 0 }
}

/**
 * The raw per-partition loop through a cluster client: each partition's XREADGROUP and
 * XACK routed to its master, the partitions' loops concurrent on the client's one
 * connection per master (reads without BLOCK: nothing holds a connection).
 */
const baselineCluster = async (seeds: ReadonlyArray<{ readonly host: string; readonly port: number }>, prefix: string, group: string) => {
  const redis = new Cluster(seeds.map((n) => ({ host: n.host, port: n.port })), { scaleReads: "master" })
  const keys = Array.from({ length: PARTITIONS }, (_, p) => logKey(prefix, p))
  for (const key of keys) await redis.xgroup("CREATE", key, group, "0")
  const seen = new Uint8Array(EVENTS)
  let handled = 0
  const start = performance.now()
  await Promise.all(keys.map((key) => partitionLoop(redis, key, group, (list) => {
    let data = ""
    for (let f = 0; f < list.length; f += 2) if (list[f] === "d") data = list[f + 1]!
    const item = decodeItem({ ...JSON.parse(data), _tag: "ItemAdded" })
    seen[item.seq]!++
    handled++
  })))
  const seconds = (performance.now() - start) / 1000
  let pending = 0
  for (const key of keys) pending += ((await redis.xpending(key, group)) as [number])[0]
  redis.disconnect()
  return { eventsPerSec: handled / seconds, verified: handled === EVENTS && seen.every((n) => n === 1) && pending === 0 }
}

/** The subscriber, over the same log, with a no-op handler. */
const candidate = (url: Target, prefix: string, group: string) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(layerFor(url, prefix))
    const seen = new Uint8Array(EVENTS)
    let handled = 0
    let peakRss = 0
    const startRss = process.memoryUsage().rss
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50)
    const start = performance.now()
    let done = 0
    // the harness waits on the handler's count, not by polling the group's status (which
    // would add its own load to the measurement); the pending lists are checked after
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
    const idle = performance.now()
    clearInterval(sampler)
    const status = yield* Subscriber.status(group).pipe(Effect.provide(ctx))
    yield* Fiber.interrupt(fiber)
    const pending = status.partitionStatus.reduce((n, p) => n + p.pending + p.lag, 0)
    return {
      eventsPerSec: handled / (((done || idle) - start) / 1000),
      verified: handled === EVENTS && seen.every((n) => n === 1) && pending === 0,
      rssGrowthMb: (Math.max(peakRss, process.memoryUsage().rss) - startRss) / 1024 / 1024
    }
  }).pipe(Effect.scoped)

const clusterMain = async () => {
  const single = await startRedisServer()
  const cluster = await startRedisCluster({ masters: 3, replicas: 0 })
  const masters = await cluster.masters()
  const prefix = `cbench_${Date.now().toString(36)}`
  try {
    await Effect.runPromise(fill(single.url, prefix))
    await Effect.runPromise(fill(cluster.seeds, prefix))
    type Row = Awaited<ReturnType<typeof withCpu>> & { readonly verified: boolean }
    const rows: Record<"single" | "single_baseline" | "cluster" | "cluster_baseline", Array<Row>> = { single: [], single_baseline: [], cluster: [], cluster_baseline: [] }
    const timed = async (name: keyof typeof rows, ports: ReadonlyArray<number>, run: () => Promise<{ readonly eventsPerSec: number; readonly verified: boolean }>) => {
      let verified = false
      const figures = await withCpu(ports, EVENTS, async () => {
        const r = await run()
        verified = r.verified
        return r.eventsPerSec
      })
      rows[name].push({ ...figures, verified })
    }
    for (let r = 0; r < ROUNDS; r++) {
      await timed("single_baseline", [single.port], () => baseline(single.url, prefix, `raw${r}`, "per-partition"))
      await timed("single", [single.port], () => Effect.runPromise(candidate(single.url, prefix, `sub${r}`)))
      await timed("cluster_baseline", masters, () => baselineCluster(cluster.seeds, prefix, `raw${r}`))
      await timed("cluster", masters, () => Effect.runPromise(candidate(cluster.seeds, prefix, `sub${r}`)))
      console.error(JSON.stringify({ round: r, ...Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, v[r]])) }))
    }
    const mid = (xs: ReadonlyArray<Row>) => xs.slice().sort((a, b) => a.events_per_sec - b.events_per_sec)[Math.floor(xs.length / 2)]!
    const { verified: _s, ...single1 } = mid(rows.single)
    const { verified: _sb, ...singleBaseline } = mid(rows.single_baseline)
    const { verified: _c, ...cluster1 } = mid(rows.cluster)
    const { verified: _cb, ...clusterBaseline } = mid(rows.cluster_baseline)
    console.log(JSON.stringify({
      bench: "consume",
      topology: "single server vs cluster",
      masters: masters.length,
      partitions: PARTITIONS,
      events: EVENTS,
      single: single1,
      single_baseline: singleBaseline,
      cluster: cluster1,
      cluster_baseline: clusterBaseline,
      cluster_vs_single: +(cluster1.events_per_sec / single1.events_per_sec).toFixed(3),
      cores: (await import("node:os")).availableParallelism(),
      verified: Object.values(rows).every((xs) => xs.every((x) => x.verified))
    }))
  } finally {
    await single.stop()
    await cluster.stop()
  }
}

const main = async () => {
  if (backend() === "postgres") return (await import("./consume-postgres.js")).main()
  if (CLUSTER) return clusterMain()
  const external = process.env.REDIS_URL
  const server = external ? undefined : await startRedisServer()
  const url = external ?? server!.url
  const prefix = `cbench_${Date.now().toString(36)}`
  try {
    const t = performance.now()
    await Effect.runPromise(fill(url, prefix))
    console.error(JSON.stringify({ filled: EVENTS, seconds: +((performance.now() - t) / 1000).toFixed(1) }))
    const rounds: Array<{ baseline: number; candidate: number; rss: number; verified: boolean }> = []
    for (let r = 0; r < ROUNDS; r++) {
      const multi = await baseline(url, prefix, `rawm${r}`, "multi")
      const per = await baseline(url, prefix, `rawp${r}`, "per-partition")
      console.error(JSON.stringify({ round: r, baseline_multi: Math.round(multi.eventsPerSec), baseline_per_partition: Math.round(per.eventsPerSec) }))
      const b = multi.eventsPerSec >= per.eventsPerSec ? multi : per
      const c = await Effect.runPromise(candidate(url, prefix, `sub${r}`))
      rounds.push({ baseline: b.eventsPerSec, candidate: c.eventsPerSec, rss: c.rssGrowthMb, verified: b.verified && c.verified })
      console.error(JSON.stringify({ round: r, events_per_sec: Math.round(c.eventsPerSec), baseline_events_per_sec: Math.round(b.eventsPerSec), ratio: +(c.eventsPerSec / b.eventsPerSec).toFixed(3), rss_growth_mb: +c.rssGrowthMb.toFixed(1), baseline_verified: b.verified, verified: c.verified }))
    }
    console.log(JSON.stringify({
      bench: "consume",
      partitions: PARTITIONS,
      events: EVENTS,
      events_per_sec: Math.round(median(rounds.map((r) => r.candidate))),
      baseline_events_per_sec: Math.round(median(rounds.map((r) => r.baseline))),
      ratio: +median(rounds.map((r) => r.candidate / r.baseline)).toFixed(3),
      rss_growth_mb: +Math.max(...rounds.map((r) => r.rss)).toFixed(1),
      verified: rounds.every((r) => r.verified)
    }))
  } finally {
    await server?.stop()
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
