/**
 * Lost replies: a proxy on loopback cuts the connection after forwarding an append and
 * before its reply, for 1% of appends (seeded). 10,000 appends end with no duplicate and
 * nothing lost: each settles as a success, or as AppendOutcomeUnknown resolved by a
 * same-id retry, within the command timeout + 1 s.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { EventStore } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { APPEND } from "../../src/redis/internal/scripts.js"
import { startProxy } from "../support/proxy.js"
import { startRedisServer } from "../support/redisServer.js"
import { figures } from "../support/figures.js"

const APPENDS = 10_000
const STREAMS = 10
const TIMEOUT_MS = 1000

describe("faults: replies lost on the way back", () => {
  it.live("10,000 appends, 1% of replies cut: no duplicate, nothing lost, each settled in time", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(Effect.promise(() => startRedisServer()), (s) => Effect.promise(() => s.stop()))
      const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy(server.port)), (p) => Effect.promise(() => p.close()))
      proxy.cutRandomly(0.01, 20261126, (request) => request.includes(APPEND.sha))
      const layer = RedisChronicle.layer({ prefix: "lost", partitions: 1 }).pipe(
        Layer.provide(RedisClient.layer({ url: proxy.url, commandTimeout: `${TIMEOUT_MS} millis` }))
      )
      const ctx = yield* Layer.build(layer)
      let unknown = 0
      let unavailable = 0
      let slowest = 0
      yield* Effect.forEach(Array.from({ length: STREAMS }, (_, s) => s), (s) =>
        Effect.gen(function*() {
          const store = yield* EventStore.EventStore
          for (let n = 0; n < APPENDS / STREAMS; n++) {
            const event = { eventId: crypto.randomUUID(), type: "Happened", data: { s, n } }
            const started = Date.now()
            for (let attempt = 0; ; attempt++) {
              if (attempt > 100) return yield* Effect.dieMessage("no settled outcome")
              const tried = Date.now()
              const r = yield* Effect.either(store.append(`lost-s${s}`, [event], { expectedVersion: n }))
              slowest = Math.max(slowest, Date.now() - tried)
              if (r._tag === "Right") {
                expect(r.right.lastVersion).toBe(n + 1)
                break
              }
              if (r.left._tag === "AppendOutcomeUnknown") unknown++
              else if (r.left._tag === "StoreUnavailable") unavailable++
              else return yield* Effect.die(r.left)
            }
            void started
          }
        }), { concurrency: "unbounded", discard: true }).pipe(Effect.provide(ctx))
      const raw = new Redis(server.url)
      yield* Effect.addFinalizer(() => Effect.promise(() => raw.quit()))
      let total = 0
      let duplicates = 0
      for (let s = 0; s < STREAMS; s++) {
        const [version, ids] = yield* Effect.promise(() => Promise.all([raw.hget(`lost:{lost:0}:ids:s${s}`, "v"), raw.hlen(`lost:{lost:0}:ids:s${s}`)]))
        total += Number(version)
        if (ids !== Number(version) + 1) duplicates++
      }
      const logged = yield* Effect.promise(() => raw.xlen("lost:{lost:0}:log"))
      figures(({ fault: "lost-replies", appends: APPENDS, cuts: proxy.cuts(), unknown_outcomes: unknown, unavailable, stored: total, log_entries: logged, slowest_attempt_ms: slowest }))
      expect(proxy.cuts()).toBeGreaterThanOrEqual(5)
      expect(total).toBe(APPENDS)
      expect(logged).toBe(APPENDS)
      expect(duplicates).toBe(0)
      expect(slowest).toBeLessThan(TIMEOUT_MS + 1000)
    }).pipe(Effect.scoped), 180_000)
})
