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

const server = (args: ReadonlyArray<string> = [], port?: number) =>
  Effect.acquireRelease(Effect.promise(() => startRedisServer({ args, ...(port ? { port } : {}) })), (s) => Effect.promise(() => s.stop()))

const replicaOf = (primary: RedisServer, port?: number) => server(["--replicaof", "127.0.0.1", String(primary.port), "--repl-diskless-sync-delay", "0"], port)

/** Waits until the replica has everything the primary has. */
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
        return status === "up" && offset !== undefined && offset === replOffset
      }, 15_000)
    } finally {
      p.disconnect()
      r.disconnect()
    }
  })

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
      const retry = yield* store.append("dur-1", batch, { expectedVersion: 1 })
      expect([retry.lastVersion, retry.replayed]).toEqual([2, true])
      const read = Chunk.toReadonlyArray(yield* Stream.runCollect(store.read("dur-1")))
      expect(read.map((e) => (e.data as { n: number }).n)).toEqual([1, 2])
      const onReplica = new Redis(back.url)
      yield* Effect.addFinalizer(() => Effect.promise(() => onReplica.quit()))
      expect(yield* Effect.promise(() => onReplica.hget("dur:{dur:0}:ids:1", "v"))).toBe("2")
      figures(({ fault: "replica-down", replication_timeout_ms: waited }))
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
