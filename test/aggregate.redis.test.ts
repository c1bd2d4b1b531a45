import { AggregateSuite } from "effect-chronicle/testing"
import { redisStore, redisUrl, uniquePrefix } from "./support/redis.js"

const url = redisUrl()

AggregateSuite.conformance("Redis", (config) => redisStore(url, { prefix: uniquePrefix("agg"), ...config }))

import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Schema } from "effect"
import { Aggregate, Contract, Snapshots } from "effect-chronicle"
import { APPEND } from "../src/redis/internal/scripts.js"
import { startProxy } from "./support/proxy.js"
import { startRedisServer } from "./support/redisServer.js"

describe("Aggregate on Redis", () => {
  it.live("no snapshot is taken when the append's outcome is unknown", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(Effect.promise(() => startRedisServer()), (s) => Effect.promise(() => s.stop()))
      const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy(server.port)), (p) => Effect.promise(() => p.close()))
      const Counters = Contract.make("counter", { Added: { n: Schema.Int } })
      const Counter = Aggregate.make({
        contract: Counters,
        command: Schema.Struct({ add: Schema.Int }),
        initialState: 0,
        evolve: (total: number, e: { readonly n: number }) => total + e.n,
        decide: (command: { readonly add: number }) => Effect.succeed(Array.from({ length: command.add }, () => Counters.make.Added({ n: 1 }))),
        snapshotEvery: 10,
        stateSchema: Schema.Int
      })
      const ctx = yield* Layer.build(redisStore(proxy.url, { prefix: "unknown" }))
      yield* Effect.gen(function*() {
        yield* Aggregate.handle(Counter, "c", { add: 8 })
        const cut = proxy.cutAfterRequest((request) => request.includes(APPEND.sha))
        const error = yield* Effect.flip(Aggregate.handle(Counter, "c", { add: 5 }))
        yield* Effect.promise(() => cut)
        expect(error._tag).toBe("AppendOutcomeUnknown")
        const snapshots = yield* Snapshots.SnapshotStore
        // the events were written (the reply was lost), but no snapshot was taken for them
        expect(Option.isNone(yield* snapshots.load("counter-c"))).toBe(true)
        const loaded = yield* Aggregate.load(Counter, "c")
        expect([loaded.state, loaded.version]).toEqual([13, 13])
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped))
})
