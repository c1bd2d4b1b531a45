/**
 * Crash during appends: redis-server killed with SIGKILL and restarted while 8 writers
 * append 5,000 batches of 5 events. Every batch is all there or not at all; every stream's
 * version equals its length equals its id entries; with appendfsync always, every
 * acknowledged batch is there. With everysec the same invariants hold and any loss of
 * acknowledged batches is counted and printed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { appendSurely, batchOf, restartableServer } from "./support.js"
import { figures } from "../support/figures.js"

const WRITERS = 8
const BATCHES = 5000
const STREAMS_PER_WRITER = 10

const crashRun = (fsync: "always" | "everysec") =>
  Effect.gen(function*() {
    const server = yield* restartableServer(["--appendonly", "yes", "--appendfsync", fsync, "--save", ""])
    const layer = RedisChronicle.layer({ prefix: "crash", partitions: 1 }).pipe(
      Layer.provide(RedisClient.layer({ url: server.url, commandTimeout: "2 seconds", connectTimeout: "2 seconds" }))
    )
    const ctx = yield* Layer.build(layer)
    const counters = { unknown: 0, unavailable: 0 }
    const acknowledged: Array<{ readonly stream: string; readonly ids: ReadonlyArray<string>; readonly lastVersion: number }> = []
    const attempted: Array<{ readonly stream: string; readonly ids: ReadonlyArray<string> }> = []
    let crashes = 0
    const writers = Effect.forEach(Array.from({ length: WRITERS }, (_, w) => w), (w) =>
      Effect.gen(function*() {
        for (let b = 0; b < BATCHES / WRITERS; b++) {
          const stream = `crash-w${w}s${b % STREAMS_PER_WRITER}`
          const batch = batchOf(5, (i) => ({ w, b, i }))
          attempted.push({ stream, ids: batch.map((e) => e.eventId) })
          const result = yield* appendSurely(stream, batch, counters)
          acknowledged.push({ stream, ids: batch.map((e) => e.eventId), lastVersion: result.lastVersion })
          // paced, so that the run spans several crashes
          yield* Effect.sleep("4 millis")
        }
      }), { concurrency: "unbounded", discard: true }).pipe(Effect.provide(ctx))
    const killer = Effect.gen(function*() {
      for (;;) {
        yield* Effect.sleep("400 millis")
        yield* Effect.promise(() => server.crash())
        crashes++
        yield* Effect.sleep("100 millis")
        yield* Effect.promise(() => server.start())
      }
    })
    const k = yield* Effect.fork(killer)
    yield* writers
    yield* Fiber.interrupt(k)
    if (!server.running) yield* Effect.promise(() => server.start())
    const raw = new Redis(server.url)
    yield* Effect.addFinalizer(() => Effect.promise(() => raw.quit()))
    // the invariants, stream by stream
    let lostAcknowledged = 0
    let broken = 0
    const streams = new Set(attempted.map((a) => a.stream))
    for (const stream of streams) {
      const id = stream.slice("crash-".length)
      const [version, hlen, llen] = yield* Effect.promise(() =>
        Promise.all([raw.hget(`crash:{crash:0}:ids:${id}`, "v"), raw.hlen(`crash:{crash:0}:ids:${id}`), raw.llen(`crash:{crash:0}:s:${id}`)]))
      const v = Number(version ?? 0)
      expect(llen, `${stream}: length`).toBe(v)
      expect(hlen, `${stream}: id entries`).toBe(v === 0 ? 0 : v + 1)
    }
    // every batch whole or absent
    const present = new Map<string, number>()
    for (const a of attempted) {
      const id = a.stream.slice("crash-".length)
      const found = yield* Effect.promise(() => raw.hmget(`crash:{crash:0}:ids:${id}`, ...a.ids))
      const n = found.filter((x) => x !== null).length
      if (n !== 0 && n !== a.ids.length) broken++
      present.set(a.ids[0]!, n)
    }
    for (const a of acknowledged) if (present.get(a.ids[0]!) === 0) lostAcknowledged++
    const logLength = yield* Effect.promise(() => raw.xlen("crash:{crash:0}:log"))
    const total = Array.from(streams).length
    figures(({
      fault: "crash",
      appendfsync: fsync,
      crashes,
      batches_attempted: attempted.length,
      batches_acknowledged: acknowledged.length,
      batches_found: Array.from(present.values()).filter((n) => n > 0).length,
      acknowledged_lost: lostAcknowledged,
      half_batches: broken,
      unknown_outcomes: counters.unknown,
      unavailable: counters.unavailable,
      streams: total,
      log_entries: logLength
    }))
    expect(crashes).toBeGreaterThan(0)
    expect(broken).toBe(0)
    return { lostAcknowledged, acknowledged: acknowledged.length }
  }).pipe(Effect.scoped)

describe("faults: redis-server killed during appends", () => {
  it.live("appendfsync always: every acknowledged batch survives, none is half there", () =>
    Effect.gen(function*() {
      const { acknowledged, lostAcknowledged } = yield* crashRun("always")
      expect(acknowledged).toBe(BATCHES)
      expect(lostAcknowledged).toBe(0)
    }), 180_000)

  it.live("appendfsync everysec: batches whole or absent, versions consistent; acknowledged losses counted", () =>
    Effect.gen(function*() {
      const { acknowledged } = yield* crashRun("everysec")
      expect(acknowledged).toBe(BATCHES)
    }), 180_000)
})
