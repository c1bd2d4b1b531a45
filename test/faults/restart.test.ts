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
      figures(({ fault: "restart-under-subscribers", restarts: 2, events: TOTAL, handled: handled.size, redeliveries, append_unknown: counters.unknown, append_unavailable: counters.unavailable }))
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

import { startProxy } from "../support/proxy.js"
import { startRedisServer } from "../support/redisServer.js"
import { figures } from "../support/figures.js"

describe("faults: a read whose reply is lost", () => {
  it.live("entries delivered by a read whose reply never came are taken again and handled", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(Effect.promise(() => startRedisServer()), (s) => Effect.promise(() => s.stop()))
      const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy(server.port)), (p) => Effect.promise(() => p.close()))
      const layer = RedisChronicle.layer({ prefix: "lr" }).pipe(Layer.provide(RedisClient.layer({ url: proxy.url, commandTimeout: "1 second" })))
      const ctx = yield* Layer.build(layer)
      const handled: Array<number> = []
      const sub = yield* Effect.fork(Subscriber.run(Ticks, {
        group: "lost-read",
        heartbeat: "300 millis",
        leaseTtl: "5 seconds",
        handlers: { Ticked: (e) => Effect.sync(() => handled.push(e.n)), Tocked: () => Effect.void }
      }).pipe(Effect.provide(ctx), Logger.withMinimumLogLevel(LogLevel.Error)))
      yield* Subscriber.awaitIdle("lost-read").pipe(Effect.provide(ctx), Effect.timeout("10 seconds"))
      // the next read's reply is lost: its entries land in the member's pending list only
      const cut = proxy.cutAfterRequest((request) => request.toUpperCase().includes("XREADGROUP"))
      const counters = { unknown: 0, unavailable: 0 }
      yield* Effect.sleep("50 millis")
      for (let n = 0; n < 20; n++) {
        yield* appendSurely(`ticks-a${n % 3}`, [{ eventId: crypto.randomUUID(), type: "Ticked", data: { n } }], counters).pipe(Effect.provide(ctx))
      }
      yield* Effect.promise(() => cut)
      yield* Subscriber.awaitIdle("lost-read").pipe(Effect.provide(ctx), Effect.timeout("20 seconds"))
      expect(handled.slice().sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, n) => n))
      expect(proxy.cuts()).toBe(1)
      yield* Fiber.interrupt(sub)
    }).pipe(Effect.scoped), 60_000)
})
