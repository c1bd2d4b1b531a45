/**
 * Following one stream among busy ones: `read(stream, { live: true })` against the ways
 * to do the same without it, in the same run on the same redis-server.
 *
 * Workload: a category of 8 partitions; 1,000 other streams appended to without pause by
 * 32 writers (one event per append), while 10 target streams get one event each every
 * few milliseconds. Ten readers follow the ten targets, each from version 1.
 *
 * Candidate: `read(target, { live: true })` (the append script announces each stream's new
 * version on the stream's shard channel; the reader reads the stream when told).
 * Category: `readCategory(category, { live: true, from: end })` filtered to the target,
 * what a user would do without a live read of one stream.
 * Baseline (raw ioredis): XREAD BLOCK on the target's partition log from `$`, keeping the
 * target's entries: the fastest raw way to follow one entity of a partitioned log.
 *
 * Reported per way: target events delivered per second, Redis commands the readers sent
 * per delivered event, log entries the readers were sent per delivered event, delivery
 * latency after the append returned (p50, p99), and whether every reader got exactly its
 * stream's versions in order. Commands of the store's readers are counted at their
 * RedisClient (every call, and each SSUBSCRIBE).
 *
 * Usage: npm run bench:live [-- --seconds 8]
 * Starts its own redis-server on a free loopback port unless REDIS_URL is set.
 * Prints one JSON line at the end.
 */
import { Context, Effect, Fiber, Layer, Stream } from "effect"
import { EventStore } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { partitionOf } from "../src/internal/ids.js"
import { startRedisServer } from "../test/support/redisServer.js"
import { arg, percentile } from "./support.js"

const SECONDS = arg("seconds", 8)
const OTHERS = 1000
const WRITERS = 32
const TARGETS = 10
const TARGET_EVERY_MS = 5
const PARTITIONS = 8


interface Tally {
  commands: number
  entries: number
}

/** A RedisClient that counts the calls made through it. */
const countingClient = (url: string, tally: Tally) =>
  Layer.scoped(
    RedisClient.RedisClient,
    Effect.map(RedisClient.make({ url }), (client) =>
      RedisClient.RedisClient.of({
        ...client,
        call: (operation, f, connection) => {
          tally.commands++
          return client.call(operation, f, connection)
        },
        callBlocking: (operation, connection, block, f) => {
          tally.commands++
          return client.callBlocking(operation, connection, block, f)
        },
        dedicated: (role) =>
          Effect.map(client.dedicated(role), (redis) => {
            // the notices connection's subscriptions are commands too
            const ssubscribe = redis.ssubscribe.bind(redis) as (...channels: Array<string>) => Promise<unknown>
            redis.ssubscribe = ((...channels: Array<string>) => {
              tally.commands++
              return ssubscribe(...channels)
            }) as typeof redis.ssubscribe
            return redis
          })
      }))
  )

const storeOn = (url: string, prefix: string, tally?: Tally) =>
  Effect.map(
    Layer.build(RedisChronicle.layer({ prefix, partitions: PARTITIONS }).pipe(
      Layer.provide(tally === undefined ? RedisClient.layer({ url }) : countingClient(url, tally))
    )),
    (ctx) => Context.get(ctx, EventStore.EventStore)
  )

type Way = "candidate" | "category" | "baseline"

/** One run: the writers, and ten readers of one way; the figures of that way. */
const run = (url: string, way: Way, prefix: string) =>
  Effect.scoped(Effect.gen(function*() {
    const writer = yield* storeOn(url, prefix)
    const tally: Tally = { commands: 0, entries: 0 }
    const reader = yield* storeOn(url, prefix, tally)
    const targets = Array.from({ length: TARGETS }, (_, i) => `live-target${i}`)
    // the category exists before the readers start
    yield* writer.append("live-warm", [{ eventId: crypto.randomUUID(), type: "Warm", data: {} }])
    const appendedAt = targets.map(() => [] as Array<number>)
    const delivered = targets.map(() => [] as Array<{ version: number; at: number }>)
    const raw: Array<Redis> = []

    const follow = (t: number): Effect.Effect<void, unknown> => {
      const stream = targets[t]!
      const seen = (version: number) => Effect.sync(() => void delivered[t]!.push({ version, at: performance.now() }))
      if (way === "candidate") {
        return reader.read(stream, { live: true }).pipe(
          Stream.filter((x): x is EventStore.RecordedEvent => !EventStore.isStreamCaughtUp(x)),
          Stream.tap(() => Effect.sync(() => void tally.entries++)),
          Stream.runForEach((e) => seen(e.version))
        )
      }
      if (way === "category") {
        return Effect.flatMap(reader.end("live"), (end) =>
          reader.readCategory("live", { live: true, from: end }).pipe(
            Stream.filter((x): x is EventStore.RecordedEvent => !EventStore.isCaughtUp(x)),
            Stream.tap(() => Effect.sync(() => void tally.entries++)),
            Stream.filter((e) => e.stream === stream),
            Stream.runForEach((e) => seen(e.version))
          ))
      }
      // raw: XREAD BLOCK on the target's partition log, keeping the target's entries
      return Effect.gen(function*() {
        const p = partitionOf(stream.slice("live-".length), PARTITIONS)
        const redis = new Redis(url)
        raw.push(redis)
        const key = `${prefix}:{live:${p}}:log`
        let last = (yield* Effect.promise(() => redis.xrevrange(key, "+", "-", "COUNT", 1)))[0]?.[0] ?? "0-0"
        const entity = stream.slice("live-".length)
        for (;;) {
          tally.commands++
          const reply = yield* Effect.promise(() => redis.xread("COUNT", 1000, "BLOCK", 1000, "STREAMS", key, last) as Promise<Array<[string, Array<[string, Array<string>]>]> | null>)
          if (reply === null) continue
          for (const [id, fields] of reply[0]![1]) {
            last = id
            tally.entries++
            let i = -1
            let v = -1
            for (let f = 0; f < fields.length; f += 2) {
              if (fields[f] === "i") i = f
              else if (fields[f] === "v") v = f
            }
            if (fields[i + 1] === entity) yield* seen(Number(fields[v + 1]))
          }
        }
      })
    }

    const readers = yield* Effect.forEach(targets, (_, t) => Effect.fork(follow(t)))
    yield* Effect.sleep("300 millis")
    tally.commands = 0
    tally.entries = 0
    const deadline = performance.now() + SECONDS * 1000
    let background = 0
    const others = Effect.forEach(Array.from({ length: WRITERS }, (_, w) => w), (w) =>
      Effect.gen(function*() {
        for (let n = 0; performance.now() < deadline; n++) {
          yield* writer.append(`live-o${(w * 7919 + n * 31) % OTHERS}`, [{ eventId: crypto.randomUUID(), type: "Other", data: { n } }])
          background++
        }
      }), { concurrency: "unbounded", discard: true })
    const onTargets = Effect.gen(function*() {
      for (let n = 0; performance.now() < deadline; n++) {
        const t = n % TARGETS
        yield* writer.append(targets[t]!, [{ eventId: crypto.randomUUID(), type: "Target", data: { n } }])
        appendedAt[t]!.push(performance.now())
        if (t === TARGETS - 1) yield* Effect.sleep(`${TARGET_EVERY_MS} millis`)
      }
    })
    const started = performance.now()
    yield* Effect.all([others, onTargets], { concurrency: "unbounded", discard: true })
    const elapsed = (performance.now() - started) / 1000
    // everything delivered, or 10 s more at most
    for (let n = 0; n < 1000 && delivered.some((d, t) => d.length < appendedAt[t]!.length); n++) yield* Effect.sleep("10 millis")
    yield* Effect.forEach(readers, Fiber.interrupt, { discard: true })
    for (const r of raw) r.disconnect()
    const latencies: Array<number> = []
    let complete = true
    let total = 0
    for (let t = 0; t < TARGETS; t++) {
      const got = delivered[t]!
      total += got.length
      if (got.length !== appendedAt[t]!.length || got.some((d, i) => d.version !== i + 1)) complete = false
      for (let i = 0; i < got.length && i < appendedAt[t]!.length; i++) latencies.push(got[i]!.at - appendedAt[t]![i]!)
    }
    return {
      delivered_per_sec: Math.round(total / elapsed),
      background_appends_per_sec: Math.round(background / elapsed),
      commands_per_delivered: +(tally.commands / Math.max(1, total)).toFixed(3),
      entries_sent_per_delivered: +(tally.entries / Math.max(1, total)).toFixed(2),
      p50_ms: +percentile(latencies, 0.5).toFixed(2),
      p99_ms: +percentile(latencies, 0.99).toFixed(2),
      complete
    }
  }))

const main = async () => {
  const external = process.env.REDIS_URL
  const server = external ? undefined : await startRedisServer()
  const url = external ?? server!.url
  const tag = Date.now().toString(36)
  try {
    const results: Record<string, unknown> = {}
    for (const way of ["baseline", "candidate", "category"] as const) {
      const r = await Effect.runPromise(run(url, way, `live_${tag}_${way}`).pipe(Effect.orDie))
      console.error(JSON.stringify({ way, ...r }))
      results[way] = r
    }
    console.log(JSON.stringify({ bench: "live-read", others: OTHERS, targets: TARGETS, partitions: PARTITIONS, seconds: SECONDS, ...results }))
  } finally {
    await server?.stop()
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
