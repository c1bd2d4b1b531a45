/**
 * Server restart under subscribers: a consumer group runs while redis-server (AOF,
 * appendfsync always) is killed and started again. The consumers reconnect and go on;
 * nothing is lost; redeliveries (at least once) are counted and printed; the scripts are
 * loaded again after the restart emptied the server's script cache (NOSCRIPT). And a
 * group's figures after the server reloads an AOF that was rewritten while the group
 * read: Redis's own lag counter is wrong then (the reads after the rewrite are not
 * counted), yet a group that has read everything is idle, and one that has not is not.
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

describe("faults: a group's figures after the server reloads its AOF", () => {
  it.live("a group that had read everything reports no lag after the reload of a rewritten AOF; entries appended since are lag until handled", () =>
    Effect.gen(function*() {
      const server = yield* restartableServer(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
      const layer = RedisChronicle.layer({ prefix: "rl", partitions: 2 }).pipe(
        Layer.provide(RedisClient.layer({ url: server.url, commandTimeout: "1 second", connectTimeout: "1 second" }))
      )
      const ctx = yield* Layer.build(layer)
      const handled = new Set<number>()
      const consumer = Subscriber.run(Ticks, {
        group: "reload",
        handlers: { Ticked: (e) => Effect.sync(() => handled.add(e.n)), Tocked: () => Effect.void }
      }).pipe(Effect.provide(ctx), Logger.withMinimumLogLevel(LogLevel.Error))
      const counters = { unknown: 0, unavailable: 0 }
      const append = (n: number) =>
        appendSurely(`ticks-r${n % 8}`, [{ eventId: crypto.randomUUID(), type: "Ticked", data: { n } }], counters).pipe(Effect.provide(ctx))
      const first = yield* Effect.fork(consumer)
      for (let n = 0; n < 40; n++) yield* append(n)
      yield* Subscriber.awaitIdle("reload").pipe(Effect.provide(ctx), Effect.timeout("20 seconds"))
      // the rewritten AOF records the group's read count now; the reads after it are
      // logged as claims that move the group's last id but not that count
      yield* Effect.promise(async () => {
        const { Redis } = await import("ioredis")
        const r = new Redis(server.url)
        await r.bgrewriteaof()
        for (let i = 0; i < 200 && /aof_rewrite_in_progress:1|aof_rewrite_scheduled:1/.test(await r.info("persistence")); i++) {
          await new Promise((resolve) => setTimeout(resolve, 25))
        }
        r.disconnect()
      })
      for (let n = 40; n < 80; n++) yield* append(n)
      yield* Subscriber.awaitIdle("reload").pipe(Effect.provide(ctx), Effect.timeout("20 seconds"))
      yield* Fiber.interrupt(first)
      expect(handled.size).toBe(80)

      yield* Effect.promise(() => server.crash())
      yield* Effect.promise(() => server.start())
      // nothing is left to read: idle at once, though the server lost its lag counters
      yield* Subscriber.awaitIdle("reload").pipe(Effect.provide(ctx), Effect.timeout("10 seconds"))

      for (let n = 80; n < 83; n++) yield* append(n)
      const status = yield* Subscriber.status("reload").pipe(Effect.provide(ctx))
      expect(status.partitionStatus.reduce((n, p) => n + p.lag, 0)).toBeGreaterThanOrEqual(1)
      const early = yield* Subscriber.awaitIdle("reload").pipe(Effect.provide(ctx), Effect.timeout("1 second"), Effect.option)
      expect(early._tag).toBe("None")

      const second = yield* Effect.fork(consumer)
      yield* Subscriber.awaitIdle("reload").pipe(Effect.provide(ctx), Effect.timeout("20 seconds"))
      expect(handled.size).toBe(83)
      yield* Fiber.interrupt(second)
    }).pipe(Effect.scoped), 60_000)
})
