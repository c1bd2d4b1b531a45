/**
 * End-to-end latency: from the producer's send to the handler's start, through the public
 * API, beside a raw ioredis loop on the same redis-server in the same run.
 *
 * Workload per row: single-event appends to 200 streams at a fixed rate, sent in bursts
 * every 10 ms (each burst's appends issued together, as a producer that batches per tick
 * does), for `--seconds` (default 3); one consumer. Latency = handler start − the time the
 * producer sent the event (carried in the event).
 * Candidate: one `TypedStore.appendMany` per tick (the store sends a tick's appends in one
 * script call per partition) and one
 * `Subscriber.run` (ownership, fenced reads, acks batched), P partitions.
 * Baseline: XADD auto-pipelined to P partition streams, and per partition a loop of
 * XREADGROUP COUNT 500 BLOCK on a connection of its own, then XACK; same process.
 * Floor (reported beside, not a bound): raw ioredis doing what the product's design does
 * on the server, with no library code: each tick's appends in one call per partition of
 * the product's append script (every check, the same keys), and per partition a loop of
 * the product's wait shape, XREAD BLOCK from the partition's tail with an XREADGROUP
 * queued behind it on the same connection (the product's fenced read is a script in
 * that place), then XACK. What the candidate adds to the floor is the library's own.
 * Rows: 1,000, 5,000 and 10,000 events/s, P = 1 and P = 8; baseline, candidate and floor
 * alternate per row. `verified` when every event was handled in every run.
 *
 * Usage: npm run bench:latency [-- --seconds 3]
 * Starts its own redis-server on a free loopback port unless REDIS_URL is set.
 * Prints one JSON line at the end.
 */
import { Deferred, Effect, Exit, Fiber, Layer, Schema } from "effect"
import { Contract, EventStore, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { APPEND } from "../src/redis/internal/scripts.js"
import { startRedisServer } from "../test/support/redisServer.js"
import { arg, percentile } from "./support.js"

const SECONDS = arg("seconds", 3)
const STREAMS = 200
const TICK_MS = 10
const RATES = [1000, 5000, 10000]
const PARTITIONS = [1, 8]

const Ticks = Contract.make("lat", { Sent: { n: Schema.Int, at: Schema.Number } })

const now = () => performance.timeOrigin + performance.now()
const ms = (x: number) => +x.toFixed(2)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Result {
  readonly p50: number
  readonly p99: number
  readonly sent: number
  readonly reached: number
  readonly verified: boolean
}

/** Sends `rate` events/s in bursts every TICK_MS for SECONDS, calling `burst` with the events of each tick. */
const drive = async (rate: number, burst: (from: number, count: number) => void) => {
  const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000))
  const ticks = Math.round((SECONDS * 1000) / TICK_MS)
  const start = now()
  let sent = 0
  for (let t = 0; t < ticks; t++) {
    const due = start + t * TICK_MS
    const wait = due - now()
    if (wait > 0) await sleep(wait)
    burst(sent, perTick)
    sent += perTick
  }
  return { sent, seconds: (now() - start) / 1000 }
}

const candidate = (url: string, prefix: string, rate: number, partitions: number) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(RedisChronicle.layer({ prefix, partitions }).pipe(Layer.provide(RedisClient.layer({ url }))))
    const store = yield* Effect.provide(EventStore.forContract(Ticks), ctx)
    const latencies: Array<number> = []
    const seen = new Set<number>()
    let expected = Infinity
    const done = yield* Deferred.make<void>()
    const fiber = yield* Effect.fork(Subscriber.run(Ticks, {
      group: "g",
      handlers: {
        Sent: (e) =>
          Effect.sync(() => {
            latencies.push(now() - e.at)
            seen.add(e.n)
            if (seen.size >= expected) Deferred.unsafeDone(done, Exit.void)
          })
      }
    }).pipe(Effect.provide(ctx)))
    // the group exists and owns its partitions before anything is sent
    yield* Subscriber.awaitIdle("g", { pollInterval: "20 millis" }).pipe(Effect.provide(ctx), Effect.timeout("10 seconds"), Effect.ignore)
    yield* Effect.sleep("500 millis")
    const failures = { n: 0 }
    const { sent, seconds } = yield* Effect.promise(() =>
      drive(rate, (from, count) => {
        // one tick's appends sent together: one call, one fiber (the producer batches per tick)
        const appends = new Array<{ entityId: string; events: ReadonlyArray<Contract.Event<typeof Ticks>> }>(count)
        for (let k = 0; k < count; k++) {
          const i = from + k
          appends[k] = { entityId: `s${i % STREAMS}`, events: [Ticks.make.Sent({ n: i, at: now() })] }
        }
        Effect.runFork(
          store.appendMany(appends).pipe(
            Effect.map((results) => {
              for (const r of results) if (r._tag === "Left") failures.n++
            }),
            Effect.catchAll(() => Effect.sync(() => failures.n += count))
          )
        )
      })
    )
    expected = sent
    if (seen.size >= sent) Deferred.unsafeDone(done, Exit.void)
    const finished = yield* Deferred.await(done).pipe(Effect.timeout("30 seconds"), Effect.option)
    yield* Fiber.interrupt(fiber)
    return {
      p50: ms(percentile(latencies, 0.5)),
      p99: ms(percentile(latencies, 0.99)),
      sent,
      reached: Math.round(sent / seconds),
      verified: finished._tag === "Some" && failures.n === 0 && seen.size === sent
    } satisfies Result
  }).pipe(Effect.scoped)

/**
 * The end of a raw run: waits (30 s at most) until every event sent was handled, stops
 * the reader loops, closes the connections and sums up.
 */
const finish = async (run: {
  readonly sent: number
  readonly seconds: number
  readonly handled: () => number
  readonly latencies: ReadonlyArray<number>
  readonly readers: ReadonlyArray<{ readonly r: Redis; readonly loop: Promise<void> }>
  readonly writer: Redis
  readonly stop: () => void
}): Promise<Result> => {
  const deadline = Date.now() + 30_000
  while (run.handled() < run.sent && Date.now() < deadline) await sleep(5)
  run.stop()
  await Promise.all(run.readers.map((x) => x.loop))
  for (const x of run.readers) x.r.disconnect()
  run.writer.disconnect()
  const { latencies, sent } = run
  return { p50: ms(percentile(latencies, 0.5)), p99: ms(percentile(latencies, 0.99)), sent, reached: Math.round(sent / run.seconds), verified: run.handled() === sent }
}

const baseline = async (url: string, prefix: string, rate: number, partitions: number): Promise<Result> => {
  const writer = new Redis(url, { enableAutoPipelining: true })
  const keys = Array.from({ length: partitions }, (_, p) => `${prefix}:p${p}`)
  for (const key of keys) await writer.xgroup("CREATE", key, "g", "$", "MKSTREAM")
  const latencies: Array<number> = []
  let handled = 0
  let stop = false
  const readers = keys.map((key) => {
    const r = new Redis(url)
    const loop = (async () => {
      while (!stop) {
        const reply = (await r.xreadgroup("GROUP", "g", "c", "COUNT", 500, "BLOCK", 100, "STREAMS", key, ">")) as Array<[string, Array<[string, Array<string>]>]> | null
        const entries = reply?.[0]?.[1] ?? []
        if (entries.length === 0) continue
        const ids: Array<string> = new Array(entries.length)
        for (let i = 0; i < entries.length; i++) {
          const fields = entries[i]![1]
          latencies.push(now() - Number(fields[1]))
          handled++
          ids[i] = entries[i]![0]
        }
        void r.xack(key, "g", ...ids)
      }
    })()
    return { r, loop }
  })
  const { sent, seconds } = await drive(rate, (from, count) => {
    for (let i = from; i < from + count; i++) void writer.xadd(keys[(i % STREAMS) % partitions]!, "*", "t", String(now()), "n", String(i))
  })
  return finish({ sent, seconds, handled: () => handled, latencies, readers, writer, stop: () => void (stop = true) })
}

/** The design's floor: the product's append script and wait shape, driven by raw ioredis (see the header). */
const floor = async (url: string, prefix: string, rate: number, partitions: number): Promise<Result> => {
  const writer = new Redis(url)
  const sha = (await writer.script("LOAD", APPEND.source)) as string
  const tags = Array.from({ length: partitions }, (_, p) => `${prefix}:{lat:${p}}`)
  for (const tag of tags) await writer.xgroup("CREATE", `${tag}:log`, "g", "$", "MKSTREAM")
  const latencies: Array<number> = []
  let handled = 0
  let stop = false
  const readers = tags.map((tag) => {
    const log = `${tag}:log`
    const r = new Redis(url)
    const loop = (async () => {
      let tail = "0-0"
      while (!stop) {
        const p = r.pipeline()
        p.xread("COUNT", 1, "BLOCK", 100, "STREAMS", log, tail)
        p.xreadgroup("GROUP", "g", "c", "COUNT", 500, "STREAMS", log, ">")
        const results = await p.exec()
        const entries = ((results?.[1]?.[1] as Array<[string, Array<[string, Array<string>]>]> | null)?.[0]?.[1]) ?? []
        if (entries.length === 0) continue
        const ids: Array<string> = new Array(entries.length)
        for (let i = 0; i < entries.length; i++) {
          const fields = entries[i]![1]
          // fields: e, i, v, t, d, m (the data is the event's JSON)
          latencies.push(now() - (JSON.parse(fields[9]!) as { at: number }).at)
          handled++
          ids[i] = entries[i]![0]
        }
        tail = ids[ids.length - 1]!
        void r.xack(log, "g", ...ids)
      }
    })()
    return { r, loop }
  })
  const { sent, seconds } = await drive(rate, (from, count) => {
    const calls = tags.map((tag) => ({ keys: [`${tag}:log`, `${tag}:streams`], args: [0] as Array<string | number> }))
    for (let i = from; i < from + count; i++) {
      const entity = `s${i % STREAMS}`
      const call = calls[(i % STREAMS) % partitions]!
      call.keys.push(`${tags[(i % STREAMS) % partitions]}:ids:${entity}`, `${tags[(i % STREAMS) % partitions]}:s:${entity}`)
      call.args[0] = (call.args[0] as number) + 1
      call.args.push(entity, -1, 1, `${prefix}-${i}`, "Sent", JSON.stringify({ n: i, at: now() }), "")
    }
    for (const call of calls) if ((call.args[0] as number) > 0) void writer.evalsha(sha, call.keys.length, ...call.keys, ...call.args)
  })
  return finish({ sent, seconds, handled: () => handled, latencies, readers, writer, stop: () => void (stop = true) })
}

const main = async () => {
  const external = process.env.REDIS_URL
  const server = external ? undefined : await startRedisServer()
  const url = external ?? server!.url
  const tag = Date.now().toString(36)
  try {
    // warm-up of both paths
    await baseline(url, `lat_${tag}_w`, 1000, 1)
    await floor(url, `lat_${tag}_wf`, 1000, 1)
    await Effect.runPromise(candidate(url, `lat_${tag}_w`, 1000, 1))
    const rows: Array<Record<string, number | boolean>> = []
    let verified = true
    for (const partitions of PARTITIONS) {
      for (const rate of RATES) {
        const b = await baseline(url, `lat_${tag}_b${partitions}_${rate}`, rate, partitions)
        const c = await Effect.runPromise(candidate(url, `lat_${tag}_c${partitions}_${rate}`, rate, partitions))
        const f = await floor(url, `lat_${tag}_f${partitions}_${rate}`, rate, partitions)
        verified &&= b.verified && c.verified && f.verified
        const row = {
          rate,
          partitions,
          p50_ms: c.p50,
          p99_ms: c.p99,
          baseline_p50_ms: b.p50,
          baseline_p99_ms: b.p99,
          reached_per_sec: c.reached,
          baseline_reached_per_sec: b.reached,
          p50_ratio: +(c.p50 / b.p50).toFixed(2),
          p99_ratio: +(c.p99 / b.p99).toFixed(2),
          floor_p50_ms: f.p50,
          floor_p99_ms: f.p99,
          floor_p50_ratio: +(f.p50 / b.p50).toFixed(2),
          floor_p99_ratio: +(f.p99 / b.p99).toFixed(2)
        }
        console.error(JSON.stringify({ ...row, verified: b.verified && c.verified && f.verified }))
        rows.push(row)
      }
    }
    console.log(JSON.stringify({ bench: "latency", seconds: SECONDS, rows, verified }))
  } finally {
    await server?.stop()
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
