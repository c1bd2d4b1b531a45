/**
 * Failover on a Redis Cluster of 3 masters and 3 replicas: while writers append to 200
 * streams over 16 partitions and two consumers of a group handle them, one master is
 * killed with SIGKILL; its replica is promoted; the killed node is started again (it
 * comes back as a replica of the new master). Writers retry what they could not know
 * with the same ids. With `durability: { replicas: 1 }` every acknowledged append must be
 * there afterwards; without it, acknowledged appends the replica had not received are
 * lost: they are counted and printed, not hidden. Either way the consumers end with no
 * order violation, nothing of what is stored left unhandled, and empty pending lists.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Logger, LogLevel, Schema, Stream } from "effect"
import { Contract, EventStore, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { DeliveryChecker } from "effect-chronicle/testing"
import { figures } from "../support/figures.js"
import { type RedisCluster, startRedisCluster } from "../support/redisCluster.js"
import { type RedisServer, startRedisServer } from "../support/redisServer.js"

const Ticks = Contract.make("fo", { Ticked: { n: Schema.Int } })
const clusters: Array<RedisCluster> = []
afterAll(() => Promise.all(clusters.map((c) => c.stop())))

const ENTITIES = 200
const WRITERS = 16

const scenario = (durable: boolean) =>
  Effect.gen(function*() {
    const cluster = yield* Effect.promise(() => startRedisCluster({ masters: 3, replicas: 1, args: ["--appendonly", "no"] }))
    clusters.push(cluster)
    const layer = RedisChronicle.layer({ prefix: "fo", partitions: 16, ...(durable ? { durability: { replicas: 1, timeout: "500 millis" } } : {}) }).pipe(
      Layer.provide(RedisClient.layerCluster({ nodes: cluster.seeds, commandTimeout: "1 second", connectTimeout: "10 seconds" }))
    )
    const ctx = yield* Layer.build(layer)
    const history = DeliveryChecker.memory()
    const consumer = (name: string) =>
      Subscriber.run(Ticks, {
        group: "g",
        consumer: name,
        leaseTtl: "3 seconds",
        heartbeat: "500 millis",
        handlers: DeliveryChecker.recording(history, { Ticked: () => Effect.void })
      }).pipe(Effect.provide(ctx), Logger.withMinimumLogLevel(LogLevel.None))
    const consumers = [yield* Effect.fork(consumer("c1")), yield* Effect.fork(consumer("c2"))]

    // writers: one event per append, retried with the same id until it settles
    const acknowledged = new Map<string, string>() // eventId -> stream
    const counts = { attempts: 0, unknown: 0, unavailable: 0, replication: 0 }
    let writing = true
    let n = 0
    const writer = Effect.gen(function*() {
      const store = yield* EventStore.EventStore
      while (writing) {
        const i = n++
        const stream = `fo-e${i % ENTITIES}`
        const event = { eventId: crypto.randomUUID(), type: "Ticked", data: { n: i } }
        for (let attempt = 0; ; attempt++) {
          counts.attempts++
          const r = yield* Effect.either(store.append(stream, [event]))
          if (r._tag === "Right") {
            acknowledged.set(event.eventId, stream)
            break
          }
          const e = r.left
          if (e._tag === "AppendOutcomeUnknown") counts.unknown++
          else if (e._tag === "StoreUnavailable") counts.unavailable++
          else if (e._tag === "ReplicationTimeout") counts.replication++
          else return yield* Effect.die(e)
          if (attempt > 400) return yield* Effect.dieMessage(`${stream}: no settled outcome`)
          yield* Effect.sleep("25 millis")
        }
      }
    }).pipe(Effect.provide(ctx))
    const writers = yield* Effect.forEach(Array.from({ length: WRITERS }), () => Effect.fork(writer))

    // the fault: the master of the first partition's slot, killed; started again later
    yield* Effect.sleep("2 seconds")
    const masters = yield* Effect.promise(() => cluster.masters())
    const victim = cluster.nodes.find((node) => node.port === masters[0])!
    const ackedBefore = acknowledged.size
    victim.process.kill("SIGKILL")
    yield* Effect.sleep("4 seconds")
    const restarted: RedisServer = yield* Effect.promise(() =>
      startRedisServer({
        port: victim.port,
        dir: victim.dir,
        args: ["--cluster-enabled", "yes", "--cluster-config-file", `${victim.dir}/nodes.conf`, "--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0", "--appendonly", "no"]
      })
    )
    yield* Effect.addFinalizer(() => Effect.promise(() => restarted.stop()))
    yield* Effect.sleep("2 seconds")
    writing = false
    yield* Effect.forEach(writers, Fiber.join, { discard: true })
    const promoted = (yield* Effect.promise(() => cluster.masters())).filter((p) => p !== victim.port)

    // what is stored, per stream, and what of the acknowledged is not
    const store = yield* Effect.provide(EventStore.EventStore, ctx)
    const present = new Set<string>()
    const expected: Array<DeliveryChecker.Expected> = []
    yield* Effect.forEach(Array.from({ length: ENTITIES }, (_, e) => `fo-e${e}`), (stream) =>
      Effect.map(Stream.runCollect(store.read(stream)), (events) => {
        for (const r of Chunk.toReadonlyArray(events)) {
          present.add(r.eventId)
          expected.push({ stream, version: r.version })
        }
      }), { concurrency: 8, discard: true })
    const lost = Array.from(acknowledged.keys()).filter((id) => !present.has(id)).length

    yield* Subscriber.awaitIdle("g", { pollInterval: "100 millis" }).pipe(
      Effect.provide(ctx),
      Effect.timeout("60 seconds"),
      // a group that does not settle says where it is stuck
      Effect.tapError(() =>
        Subscriber.status("g").pipe(
          Effect.provide(ctx),
          Effect.flatMap((s) => Effect.sync(() => console.error(JSON.stringify({ stuck: s.partitionStatus.filter((p) => p.pending + p.lag > 0), members: s.members, local: s.local })))),
          Effect.ignore
        )
      )
    )
    const status = yield* Subscriber.status("g").pipe(Effect.provide(ctx))
    yield* Effect.forEach(consumers, Fiber.interrupt, { discard: true })
    const report = DeliveryChecker.check(history.invocations, { expected })
    const out = {
      fault: "cluster-failover",
      durability: durable ? "replicas: 1" : "none",
      acknowledged: acknowledged.size,
      acknowledged_before_kill: ackedBefore,
      found_after: acknowledged.size - lost,
      lost,
      stored: present.size,
      append_unknown: counts.unknown,
      append_unavailable: counts.unavailable,
      replication_timeouts: counts.replication,
      handled: report.handled,
      redeliveries: report.redeliveries,
      order_violations: report.orderViolations.length,
      unhandled: report.lost.length,
      late_starts: report.lateStarts.length,
      pending_end: status.partitionStatus.reduce((s, p) => s + p.pending + p.lag, 0),
      masters_after: promoted.length
    }
    figures(out)
    return { out, report }
  }).pipe(Effect.scoped)

describe("Redis Cluster: a master killed under appends and consumers", () => {
  it.live("with durability replicas: 1, every acknowledged append survives the failover; consumers keep order and finish", () =>
    Effect.gen(function*() {
      const { out, report } = yield* scenario(true)
      expect(out.masters_after).toBe(3)
      expect(out.acknowledged).toBeGreaterThan(500)
      expect(out.lost).toBe(0)
      expect(report.orderViolations.slice(0, 3)).toEqual([])
      expect([out.unhandled, out.late_starts, out.pending_end]).toEqual([0, 0, 0])
    }), 120_000)

  it.live("without durability, losses are counted and printed; consumers keep order and handle everything that is stored", () =>
    Effect.gen(function*() {
      const { out, report } = yield* scenario(false)
      expect(out.masters_after).toBe(3)
      expect(out.acknowledged).toBeGreaterThan(500)
      expect(out.found_after + out.lost).toBe(out.acknowledged)
      expect(report.orderViolations.slice(0, 3)).toEqual([])
      expect([out.unhandled, out.late_starts, out.pending_end]).toEqual([0, 0, 0])
    }), 120_000)
})
