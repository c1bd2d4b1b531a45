/**
 * Durability modes (docs/semantics.md §9): appends that wait for a replica (WAIT), a replica that
 * dies (ReplicationTimeout after the timeout, then a same-id retry leaves one copy), and
 * WAITAOF asked of a server that lacks it (ConfigurationError at start).
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Layer, Stream } from "effect"
import { EventStore } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { freePort, type RedisServer, startRedisServer, waitFor } from "../support/redisServer.js"
import { figures } from "../support/figures.js"
import { rawRedis } from "../support/redis.js"

const server = (args: ReadonlyArray<string> = [], port?: number) =>
  Effect.acquireRelease(Effect.promise(() => startRedisServer({ args, ...(port ? { port } : {}) })), (s) => Effect.promise(() => s.stop()))

const replicaOf = (primary: RedisServer, port?: number) => server(["--replicaof", "127.0.0.1", String(primary.port), "--repl-diskless-sync-delay", "0"], port)

/**
 * Waits until the replica has everything the primary has, as the primary sees it (the
 * replica online and its acknowledged offset at the primary's): only then does WAIT count
 * it. The replica's own view (link up, same offset) comes up to a second earlier, after a
 * full sync the primary waits for its first acknowledgement.
 */
const inSync = (primary: string, replica: string) =>
  Effect.promise(async () => {
    const p = new Redis(primary)
    const r = new Redis(replica)
    try {
      await waitFor("the replica to catch up", async () => {
        const [pi, ri] = await Promise.all([p.info("replication"), r.info("replication")])
        const offset = /master_repl_offset:(\d+)/.exec(pi)?.[1]
        const status = /master_link_status:(\w+)/.exec(ri)?.[1]
        const replOffset = /slave_repl_offset:(\d+)/.exec(ri)?.[1]
        const acked = /slave\d+:.*state=online,offset=(\d+)/.exec(pi)?.[1]
        return status === "up" && offset !== undefined && offset === replOffset && acked === offset
      }, 15_000)
    } finally {
      p.disconnect()
      r.disconnect()
    }
  })

/**
 * An append retried (bounded) while it fails with ReplicationTimeout, as a caller does: a
 * replica just back from a full sync acknowledges on its once-a-second beat, not always
 * within a short timeout. Any other failure fails the test.
 */
const untilConfirmed = <A, E extends { readonly _tag: string }>(append: Effect.Effect<A, E>) =>
  append.pipe(Effect.retry({ times: 5, while: (e) => e._tag === "ReplicationTimeout" }))

describe("faults: durability", () => {
  it.live("appends wait for a replica; a dead replica makes the next append fail with ReplicationTimeout; its retry leaves one copy", () =>
    Effect.gen(function*() {
      const primary = yield* server()
      const replicaPort = yield* Effect.promise(() => freePort())
      const replica = yield* replicaOf(primary, replicaPort)
      yield* inSync(primary.url, replica.url)
      const layer = RedisChronicle.layer({ prefix: "dur", partitions: 1, durability: { replicas: 1, timeout: "500 millis" } }).pipe(
        Layer.provide(RedisClient.layer({ url: primary.url, commandTimeout: "3 seconds" }))
      )
      const ctx = yield* Layer.build(layer)
      const store = Context.get(ctx, EventStore.EventStore)
      const ok = yield* store.append("dur-1", [{ eventId: crypto.randomUUID(), type: "Happened", data: { n: 1 } }])
      expect(ok.lastVersion).toBe(1)
      yield* Effect.promise(() => replica.stop())
      const batch = [{ eventId: crypto.randomUUID(), type: "Happened", data: { n: 2 } }]
      const started = Date.now()
      const error = yield* Effect.flip(store.append("dur-1", batch, { expectedVersion: 1 }))
      const waited = Date.now() - started
      expect(error._tag).toBe("ReplicationTimeout")
      if (error._tag === "ReplicationTimeout") expect([error.required, error.confirmed]).toEqual([1, 0])
      expect(waited).toBeGreaterThanOrEqual(450)
      expect(waited).toBeLessThan(500 + 1000)
      // the replica comes back; the same ids again: a replay, confirmed this time
      const back = yield* replicaOf(primary, replicaPort)
      yield* inSync(primary.url, back.url)
      const retry = yield* untilConfirmed(store.append("dur-1", batch, { expectedVersion: 1 }))
      expect([retry.lastVersion, retry.replayed]).toEqual([2, true])
      const read = Chunk.toReadonlyArray(yield* Stream.runCollect(store.read("dur-1")))
      expect(read.map((e) => (e.data as { n: number }).n)).toEqual([1, 2])
      const onReplica = new Redis(back.url)
      yield* Effect.addFinalizer(() => Effect.promise(() => onReplica.quit()))
      expect(yield* Effect.promise(() => onReplica.hget("dur:{dur:0}:ids:1", "v"))).toBe("2")
      figures(({ fault: "replica-down", replication_timeout_ms: waited }))
    }).pipe(Effect.scoped), 60_000)

  it.live("a replay is confirmed only when the original write is on the replica, also from another connection", () =>
    Effect.gen(function*() {
      const primary = yield* server()
      const replica = yield* replicaOf(primary)
      yield* inSync(primary.url, replica.url)
      const storeOn = (name: string) =>
        Effect.map(
          Layer.build(
            RedisChronicle.layer({ prefix: "rep", partitions: 1, durability: { replicas: 1, timeout: "300 millis" } }).pipe(
              Layer.provide(RedisClient.layer({ url: primary.url, commandTimeout: "3 seconds", connectionName: name }))
            )
          ),
          (ctx) => Context.get(ctx, EventStore.EventStore)
        )
      const first = yield* storeOn("first")
      const second = yield* storeOn("second")
      // each store's append connection has written, and the replica has it all
      yield* first.append("rep-0", [{ eventId: crypto.randomUUID(), type: "Happened", data: { n: 0 } }])
      yield* second.append("rep-0", [{ eventId: crypto.randomUUID(), type: "Happened", data: { n: 0 } }])
      yield* inSync(primary.url, replica.url)
      // a replica that is frozen is still connected: only what it has acknowledged counts
      replica.process.kill("SIGSTOP")
      yield* Effect.addFinalizer(() => Effect.sync(() => replica.process.kill("SIGCONT")))
      const batch = [{ eventId: crypto.randomUUID(), type: "Happened", data: { n: 1 } }]
      const error = yield* Effect.flip(first.append("rep-1", batch))
      expect(error._tag).toBe("ReplicationTimeout")
      // the same ids from a connection whose own writes are all on the replica: the
      // replay must not be confirmed by a replica that has not got the original write
      // (the replay writes, so WAIT covers it on any server; Redis 7.0 also counts a
      // script that did not write as reaching the primary's offset)
      const again = yield* Effect.flip(second.append("rep-1", batch))
      expect(again._tag).toBe("ReplicationTimeout")
      replica.process.kill("SIGCONT")
      yield* inSync(primary.url, replica.url)
      const third = yield* storeOn("third")
      const replay = yield* untilConfirmed(third.append("rep-1", batch))
      expect([replay.lastVersion, replay.replayed]).toEqual([1, true])
      const onReplica = yield* rawRedis(replica.url)
      expect(yield* Effect.promise(() => onReplica.hget("rep:{rep:0}:ids:1", "v"))).toBe("1")
    }).pipe(Effect.scoped), 60_000)

  it.live("durability aof on a server without WAITAOF (7.0) fails at start with ConfigurationError", () =>
    Effect.gen(function*() {
      const s = yield* server()
      const info = yield* Effect.promise(async () => {
        const r = new Redis(s.url)
        const text = await r.info("server")
        r.disconnect()
        return text
      })
      const [major, minor] = (/redis_version:(\d+)\.(\d+)/.exec(info) ?? ["", "0", "0"]).slice(1).map(Number) as [number, number]
      const layer = RedisChronicle.layer({ prefix: "aof", durability: { aof: true } }).pipe(Layer.provide(RedisClient.layer({ url: s.url })))
      const built = yield* Effect.either(Layer.build(layer))
      if (major < 7 || (major === 7 && minor < 2)) {
        expect(built._tag).toBe("Left")
        if (built._tag === "Left") {
          expect(built.left._tag).toBe("ConfigurationError")
          expect(built.left.message).toContain("7.2")
        }
      } else {
        expect(built._tag).toBe("Right")
      }
    }).pipe(Effect.scoped), 30_000)
})
