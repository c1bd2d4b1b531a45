/**
 * A slow consumer: a producer at 2,000 events/s (a rate a busy 2-core machine sustains) and a consumer (a process of its own, as
 * in a deployment) at about 500/s for 20 s.
 * Appends do not slow down (p99 within 2 x + 1 ms of a control phase without the
 * consumer, measured in the same run); the consumer holds at most 2 x readCount events in
 * flight (no unbounded buffering); the lag it leaves behind is visible in
 * Subscriber.status.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import { EventStore, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { startRedisServer } from "../support/redisServer.js"
import { figures } from "../support/figures.js"

const script = fileURLToPath(new URL("../support/consumerProcess.ts", import.meta.url))

const waitUntilOwned = (group: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 600; i++) {
      const s = yield* Subscriber.status(group).pipe(Effect.orElseSucceed(() => undefined))
      if (s !== undefined && s.partitionStatus.every((p) => p.owner !== undefined)) return
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage(`group ${group} never got an owner`)
  })

const RATE = 2000
/** test/support/consumerProcess.ts reads 50 at a time */
const READ_COUNT = 50

const percentile = (xs: ReadonlyArray<number>, p: number) => {
  const s = xs.slice().sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!
}

/** Appends at RATE events/s for `seconds`, one event per append; returns each append's latency (ms). */
const produce = (seconds: number) =>
  Effect.gen(function*() {
    const store = yield* EventStore.EventStore
    const latencies: Array<number> = []
    const start = performance.now()
    let sent = 0
    while (performance.now() - start < seconds * 1000) {
      const due = Math.floor(((performance.now() - start) / 1000) * RATE)
      const burst = Array.from({ length: Math.max(0, due - sent) }, (_, i) => sent + i)
      sent += burst.length
      yield* Effect.forEach(burst, (n) =>
        Effect.gen(function*() {
          const t = performance.now()
          yield* store.append(`slowc-r${n % 200}`, [{ eventId: crypto.randomUUID(), type: "Happened", data: { n } }])
          latencies.push(performance.now() - t)
        }), { concurrency: "unbounded", discard: true })
      yield* Effect.sleep("5 millis")
    }
    return { latencies, sent }
  })

describe("faults: a slow consumer", () => {
  it.live("append p99 holds, in-flight stays within 2 x readCount, lag is visible", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(Effect.promise(() => startRedisServer()), (s) => Effect.promise(() => s.stop()))
      const ctx = yield* Layer.build(RedisChronicle.layer({ prefix: "slow" }).pipe(Layer.provide(RedisClient.layer({ url: server.url }))))
      yield* Effect.gen(function*() {
        const control = yield* produce(8)
        const child = spawn(process.execPath, ["--import", "tsx", script, server.url, "slow", "slowc", "slowpoke", "consumer", "8", "normal"], {
          env: { ...process.env, HEARTBEAT_MS: "250", LEASE_TTL_MS: "3000" },
          stdio: "ignore"
        })
        yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
        yield* waitUntilOwned("slowpoke")
        const samples: Array<{ inFlight: number; lag: number }> = []
        const sampler = yield* Effect.fork(Effect.forever(Effect.gen(function*() {
          const s = yield* Subscriber.status("slowpoke").pipe(Effect.orElseSucceed(() => undefined))
          if (s !== undefined) {
            samples.push({
              inFlight: s.partitionStatus.reduce((n, p) => n + p.inFlight, 0),
              lag: s.partitionStatus.reduce((n, p) => n + p.lag, 0)
            })
          }
          yield* Effect.sleep("250 millis")
        })))
        const loaded = yield* produce(20)
        yield* Fiber.interrupt(sampler)
        const handled = yield* Effect.promise(async () => {
          const r = new Redis(server.url)
          const n = await r.llen("slow:handled")
          r.disconnect()
          return n
        })
        const p99Control = percentile(control.latencies, 0.99)
        const p99Loaded = percentile(loaded.latencies, 0.99)
        const maxInFlight = Math.max(...samples.map((s) => s.inFlight))
        const lastLag = samples.at(-1)?.lag ?? 0
        figures(({
          fault: "slow-consumer",
          produced_per_sec: Math.round(loaded.sent / 20),
          consumed_per_sec: Math.round(handled / 20),
          p99_control_ms: +p99Control.toFixed(2),
          p99_with_consumer_ms: +p99Loaded.toFixed(2),
          max_in_flight: maxInFlight,
          read_count: READ_COUNT,
          final_lag: lastLag
        }))
        expect(loaded.sent).toBeGreaterThan(RATE * 20 * 0.9)
        expect(p99Loaded).toBeLessThanOrEqual(2 * p99Control + 1)
        expect(maxInFlight).toBeGreaterThan(0)
        expect(maxInFlight).toBeLessThanOrEqual(2 * READ_COUNT)
        expect(lastLag).toBeGreaterThan(loaded.sent / 2)
        expect(handled).toBeLessThan(loaded.sent)
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 120_000)
})
