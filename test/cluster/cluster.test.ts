/**
 * The conformance suites on a Redis Cluster of 3 masters and 3 replicas (test/support/
 * redisCluster.ts), the same as on one server: event store, subscribers, aggregates and
 * projections. Every command of every script must keep its keys in one slot: at the end,
 * no node has answered CROSSSLOT once.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { AggregateSuite, EventStoreSuite, SubscriberSuite } from "effect-chronicle/testing"
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

describe("Redis Cluster: keys", () => {
  // (a script touching an undeclared key of another node fails its own test above)
  it.live("no command of the suites above had keys in two slots", () =>
    Effect.gen(function*() {
      const crossSlot = yield* overNodes(cluster, "errorstats", /^errorstat_CROSSSLOT:count=(\d+)/)
      expect(crossSlot - crossSlotBefore).toBe(0)
    }))
})
