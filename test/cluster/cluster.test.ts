/**
 * The conformance suites on a Redis Cluster of 3 masters and 3 replicas (test/support/
 * redisCluster.ts), the same as on one server: event store, subscribers, aggregates and
 * projections. Every command of every script must keep its keys in one slot: at the end,
 * no node has answered CROSSSLOT once.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Cause, ConfigProvider, Context, Effect, Layer, Option } from "effect"
import { EventStore } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { AggregateSuite, EventStoreSuite, SubscriberSuite } from "effect-chronicle/testing"
import { Redis } from "ioredis"
import { allScripts } from "../../src/redis/internal/scripts.js"
import { clusterCommandCount, clusterStore, overNodes, sharedCluster } from "../support/cluster.js"
import { uniquePrefix } from "../support/redis.js"

const cluster = await sharedCluster()
afterAll(() => cluster.stop())
// creating the cluster leaves errors of its own in the counters: only what follows counts
const crossSlotBefore = await Effect.runPromise(overNodes(cluster, "errorstats", /^errorstat_CROSSSLOT:count=(\d+)/))

EventStoreSuite.conformance("Redis Cluster", (config) => clusterStore(cluster, { prefix: uniquePrefix("cconf"), ...config }), {
  commandCount: clusterCommandCount(cluster)
})
SubscriberSuite.conformance("Redis Cluster", (config) => clusterStore(cluster, { prefix: uniquePrefix("csub"), ...config }))
AggregateSuite.conformance("Redis Cluster", (config) => clusterStore(cluster, { prefix: uniquePrefix("cagg"), ...config }))

describe("Redis Cluster: the client", () => {
  it.live("no nodes, or a node that is not host:port, is a typed RedisConnectionError before any connection", () =>
    Effect.gen(function*() {
      for (const [nodes, reason] of [[[], /no nodes given/], [["not a node"], /is not host:port/], [["127.0.0.1:99999"], /is not host:port/]] as const) {
        const exit = yield* Effect.exit(Effect.scoped(Layer.build(RedisClient.layerCluster({ nodes }))))
        const failure = exit._tag === "Failure" ? Cause.failureOption(exit.cause) : Option.none()
        expect(Option.isSome(failure) && failure.value._tag === "RedisConnectionError" && reason.test(failure.value.reason)).toBe(true)
      }
    }))

  it.live("layerClusterConfig reads the nodes from REDIS_CLUSTER_NODES; any one node is enough to find the others", () =>
    Effect.gen(function*() {
      const nodes = `127.0.0.1:${cluster.seeds[0]!.port}`
      const client = RedisClient.layerClusterConfig().pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["REDIS_CLUSTER_NODES", nodes]])))))
      const ctx = yield* Layer.build(RedisChronicle.layer({ prefix: uniquePrefix("ccfg"), partitions: 16 }).pipe(Layer.provide(client)))
      const store = Context.get(ctx, EventStore.EventStore)
      // 16 partitions over 3 masters: every master takes some of these streams
      for (let i = 0; i < 48; i++) yield* store.append(`orders-o${i}`, [{ eventId: crypto.randomUUID(), type: "Placed", data: { i } }])
      const end = yield* store.end("orders")
      expect(end.filter((id) => id !== "0-0").length).toBeGreaterThan(8)
    }).pipe(Effect.scoped))
})

describe("Redis Cluster: keys", () => {
  // (a script touching an undeclared key of another node fails its own test above)
  it.live("every script of the backend ran on the cluster, and no command of the suites above had keys in two slots", () =>
    Effect.gen(function*() {
      const crossSlot = yield* overNodes(cluster, "errorstats", /^errorstat_CROSSSLOT:count=(\d+)/)
      expect(crossSlot - crossSlotBefore).toBe(0)
      // a script that ran is in some master's script cache (EVALSHA falls back to EVAL there)
      const masters = yield* Effect.promise(() => cluster.masters())
      const cached = new Set<string>()
      for (const port of masters) {
        const r = new Redis({ host: "127.0.0.1", port })
        const shas = allScripts().filter((s) => !s.singleServer).map((s) => s.sha)
        const exists = (yield* Effect.promise(() => r.script("EXISTS", ...shas))) as Array<number>
        exists.forEach((e, i) => e === 1 && cached.add(shas[i]!))
        r.disconnect()
      }
      expect(allScripts().length).toBeGreaterThanOrEqual(15)
      expect(allScripts().filter((s) => !s.singleServer && !cached.has(s.sha)).map((s) => s.name)).toEqual([])
      // the one-server scripts are those whose keys span partitions, and only those
      expect(allScripts().filter((s) => s.singleServer).map((s) => s.name)).toEqual(["read-waited", "wake"])
    }))
})
