/**
 * Durability on a Redis Cluster (docs/semantics.md §9): the WAIT behind an append counts
 * the writes of the connection it is read on, so it must be read on the connection that
 * carried the append, to the master of the append's slot, and never be sent again
 * elsewhere. Here the replica of one master is frozen (SIGSTOP) while appends to several
 * partitions of that master wait for it; the connection they wait on is then killed
 * (CLIENT KILL). None of those appends may be acknowledged: their writes are on no
 * replica. A cluster client that retries the WAIT on another node (whose replica has that
 * node's own writes) would acknowledge them. After the replica resumes, appends to the
 * same partitions succeed again.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Schedule } from "effect"
import { EventStore } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { rawRedis } from "../support/redis.js"
import { type RedisCluster, startRedisCluster } from "../support/redisCluster.js"
import { waitFor } from "../support/redisServer.js"

const clusters: Array<RedisCluster> = []
afterAll(() => Promise.all(clusters.map((c) => c.stop())))

const CATEGORIES = 24

const node = (port: number) => rawRedis(`redis://127.0.0.1:${port}`)

describe("Redis Cluster: the confirmation of an append", () => {
  it.live("appends waiting on a frozen replica are not acknowledged when their connection is killed; after the replica resumes they are", () =>
    Effect.gen(function*() {
      const cluster = yield* Effect.promise(() => startRedisCluster({ masters: 3, replicas: 1, args: ["--appendonly", "no"] }))
      clusters.push(cluster)
      const any = yield* node(cluster.nodes[0]!.port)

      // which master holds each category's one partition, and the replica of each master
      const owner = new Map<string, number>()
      const slots = yield* Effect.promise(() => any.cluster("SLOTS"))
      for (let c = 0; c < CATEGORIES; c++) {
        const slot = Number(yield* Effect.promise(() => any.cluster("KEYSLOT", `cd:{c${c}:0}`)))
        owner.set(`c${c}`, slots.find(([from, to]) => slot >= from && slot <= to)![2]![1])
      }
      const byMaster = new Map<number, Array<string>>()
      for (const [category, port] of owner) byMaster.set(port, [...(byMaster.get(port) ?? []), category])
      const [victim, onVictim] = [...byMaster].sort((a, b) => b[1].length - a[1].length)[0]!
      expect(onVictim.length).toBeGreaterThanOrEqual(4)
      const lines = (String(yield* Effect.promise(() => any.cluster("NODES")))).trim().split("\n").map((l) => l.split(" "))
      const victimId = lines.find((l) => l[1]!.startsWith(`127.0.0.1:${victim}@`))![0]
      const replicaPort = Number(lines.find((l) => l[3] === victimId)![1]!.split(":")[1]!.split("@")[0])
      const replica = cluster.nodes.find((n) => n.port === replicaPort)!

      const ctx = yield* Layer.build(
        RedisChronicle.layer({ prefix: "cd", partitions: 1, durability: { replicas: 1, timeout: "5 seconds" } }).pipe(
          Layer.provide(RedisClient.layerCluster({ nodes: cluster.seeds, commandTimeout: "10 seconds", connectTimeout: "10 seconds" }))
        )
      )
      const store = Context.get(ctx, EventStore.EventStore)
      const event = (n: number) => ({ eventId: crypto.randomUUID(), type: "Happened", data: { n } })
      // every category written once, confirmed: every master's connection has written
      yield* Effect.forEach([...owner.keys()], (category) => store.append(`${category}-1`, [event(0)]), { concurrency: "unbounded", discard: true })

      replica.process.kill("SIGSTOP")
      yield* Effect.addFinalizer(() => Effect.sync(() => replica.process.kill("SIGCONT")))
      const appends = yield* Effect.forEach(onVictim, (category) => Effect.fork(Effect.either(store.append(`${category}-1`, [event(1)]))))
      // the dangerous moment: a confirmation blocked on the victim, the rest queued behind it
      const master = yield* node(victim)
      const waiting = yield* Effect.promise(async () => {
        let ids: Array<string> = []
        await waitFor("a WAIT blocked on the master", async () => {
          const list = String(await master.client("LIST"))
          ids = list.split("\n").filter((l) => /\bcmd=wait\b/.test(l) && /\bflags=\S*b/.test(l)).map((l) => /\bid=(\d+)/.exec(l)![1]!)
          return ids.length > 0
        }, 4_000)
        return ids
      })
      for (const id of waiting) yield* Effect.promise(() => master.client("KILL", "ID", id))
      const outcomes = yield* Effect.forEach(appends, Fiber.join)
      const acknowledged = outcomes.filter((o) => o._tag === "Right").length
      const tags = outcomes.map((o) => (o._tag === "Left" ? o.left._tag : "acknowledged"))
      expect(acknowledged, tags.join(",")).toBe(0)
      for (const tag of tags) expect(["ReplicationTimeout", "AppendOutcomeUnknown", "StoreUnavailable"]).toContain(tag)

      // the replica resumes: the same partitions take appends again, confirmed
      replica.process.kill("SIGCONT")
      for (const category of onVictim) {
        const done = yield* store.append(`${category}-2`, [event(2)]).pipe(
          Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 50, while: (e) => ["ReplicationTimeout", "AppendOutcomeUnknown", "StoreUnavailable"].includes(e._tag) })
        )
        expect(done.lastVersion).toBe(1)
      }
    }).pipe(Effect.scoped), 120_000)
})
