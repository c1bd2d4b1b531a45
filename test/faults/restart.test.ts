/**
 * Server restart under subscribers: a consumer group runs while redis-server (AOF,
 * appendfsync always) is killed and started again. The consumers reconnect and go on;
 * nothing is lost; redeliveries (at least once) are counted and printed; the scripts are
 * loaded again after the restart emptied the server's script cache (NOSCRIPT).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Logger, LogLevel, Schema } from "effect"
import { Contract, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { appendSurely, restartableServer } from "./support.js"

const Ticks = Contract.make("ticks", { Ticked: { n: Schema.Int }, Tocked: { n: Schema.Int } })

describe("faults: server restart under subscribers", () => {
  it.live("consumers reconnect and continue; nothing lost; redeliveries counted", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
      const layer = RedisChronicle.layer({ prefix: "rs", partitions: 2 }).pipe(
        Layer.provide(RedisClient.layer({ url: server.url, commandTimeout: "1 second", connectTimeout: "1 second" }))
      )
      const ctx = yield* Layer.build(layer)
      const handled = new Map<number, number>()
      const consumer = (name: string) =>
        Subscriber.run(Ticks, {
          group: "tickers",
          consumer: name,
          leaseTtl: "3 seconds",
          heartbeat: "500 millis",
          handlers: {
            Ticked: (e) => Effect.sync(() => handled.set(e.n, (handled.get(e.n) ?? 0) + 1)),
            Tocked: () => Effect.void
          }
        }).pipe(Effect.provide(ctx), Logger.withMinimumLogLevel(LogLevel.Error))
      const fibers = [yield* Effect.fork(consumer("c1")), yield* Effect.fork(consumer("c2"))]
      const counters = { unknown: 0, unavailable: 0 }
      const TOTAL = 1500
      const producing = yield* Effect.fork(Effect.gen(function*() {
        for (let n = 0; n < TOTAL; n++) {
          yield* appendSurely(`ticks-k${n % 30}`, [{ eventId: `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`, type: "Ticked", data: { n } }], counters)
          if (n % 10 === 0) yield* Effect.sleep("5 millis")
        }
      }).pipe(Effect.provide(ctx)))
      yield* Effect.sleep("400 millis")
      yield* Effect.promise(() => server.crash())
      yield* Effect.sleep("300 millis")
      yield* Effect.promise(() => server.start())
      yield* Effect.sleep("600 millis")
      yield* Effect.promise(() => server.crash())
      yield* Effect.promise(() => server.start())
      yield* Fiber.join(producing)
      yield* Subscriber.awaitIdle("tickers").pipe(Effect.provide(ctx), Effect.timeout("60 seconds"))
      const missing = Array.from({ length: TOTAL }, (_, n) => n).filter((n) => !handled.has(n))
      const redeliveries = Array.from(handled.values()).reduce((a, b) => a + b, 0) - handled.size
      console.log(JSON.stringify({ fault: "restart-under-subscribers", restarts: 2, events: TOTAL, handled: handled.size, redeliveries, append_unknown: counters.unknown, append_unavailable: counters.unavailable }))
      expect(missing).toEqual([])
      // the restarts emptied the script cache: the scripts were sent again (EVAL after NOSCRIPT)
      const evals = yield* Effect.promise(async () => {
        const { Redis } = await import("ioredis")
        const r = new Redis(server.url)
        const info = await r.info("commandstats")
        r.disconnect()
        return Number(/cmdstat_eval:calls=(\d+)/.exec(info)?.[1] ?? 0)
      })
      expect(evals).toBeGreaterThan(0)
      yield* Effect.forEach(fibers, Fiber.interrupt, { discard: true })
    }).pipe(Effect.scoped), 120_000)
})
