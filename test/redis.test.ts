import { afterAll, describe, expect, it } from "@effect/vitest"
import { Cause, Chunk, ConfigError, ConfigProvider, Context, Deferred, Duration, Effect, Either, Fiber, Layer, Logger, Option, Redacted, Stream } from "effect"
import { ConsumerGroups, EventStore } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { EventStoreSuite } from "effect-chronicle/testing"
import { Redis } from "ioredis"
import { startProxy } from "./support/proxy.js"
import { callsOf, commandCount, rawRedis, redisStore, redisUrl, uniquePrefix } from "./support/redis.js"
import { freePort, startRedisServer } from "./support/redisServer.js"

const url = redisUrl()
const probe = new Redis(url)
afterAll(() => probe.quit())

EventStoreSuite.conformance("Redis", (config) => redisStore(url, { prefix: uniquePrefix("conf"), ...config }), {
  commandCount: commandCount(probe)
})

const event = (type: string, data: Record<string, unknown>, eventId: string = crypto.randomUUID()): EventStore.NewEvent => ({
  eventId,
  type,
  data
})

/** A redis-server of this test's own, for tests that change server-wide state. */
const privateServer = (args: ReadonlyArray<string> = []) =>
  Effect.acquireRelease(
    Effect.promise(() => startRedisServer({ args })),
    (server) => Effect.promise(() => server.stop())
  )

/** Builds a store Layer in the current scope and returns the service. */
const storeIn = <E>(layer: Layer.Layer<EventStore.EventStore, E>) =>
  Effect.map(Layer.build(layer), (ctx) => Context.get(ctx, EventStore.EventStore))

const collect = <A, E, R>(s: Stream.Stream<A, E, R>) => Effect.map(Stream.runCollect(s), Chunk.toReadonlyArray)

const scripts = (redis: Redis) => Effect.zipWith(callsOf(redis, "evalsha"), callsOf(redis, "eval"), (a, b) => a + b)

describe("Redis backend", () => {
  it.live("a malformed URL, another scheme or no host is a typed RedisConnectionError, never a defect", () =>
    Effect.gen(function*() {
      for (const [given, reason] of [["not a url", /not a URL/], ["http://127.0.0.1:1", /not a Redis URL scheme/], ["", /not a URL/]] as const) {
        const exit = yield* Effect.exit(Effect.scoped(Layer.build(RedisClient.layer({ url: given }))))
        expect(exit._tag).toBe("Failure")
        const failure = exit._tag === "Failure" ? Cause.failureOption(exit.cause) : Option.none()
        expect(Option.map(failure, (e) => e._tag)).toEqual(Option.some("RedisConnectionError"))
        expect(Option.map(failure, (e) => reason.test(e.message))).toEqual(Option.some(true))
      }
    }))

  it.live("a key of another type is a typed error, and no key is written or changed", () =>
    Effect.gen(function*() {
      const raw = yield* rawRedis(url)
      const prefix = uniquePrefix("types")
      const store = yield* storeIn(redisStore(url, { prefix, partitions: 1 }))
      const snapshot = async () => {
        const keys = (await raw.keys(`${prefix}:*`)).sort()
        const types = await Promise.all(keys.map((k) => raw.type(k)))
        // a set's DUMP follows its hash table's order, which lookups may rehash: compare members
        const dumps = await Promise.all(keys.map((k, i) =>
          types[i] === "set" ? raw.smembers(k).then((m) => m.sort().join(",")) : raw.dumpBuffer(k).then((b) => b.toString("hex"))
        ))
        return keys.map((k, i) => [k, types[i], dumps[i]])
      }
      // the registry entries are written at a category's first append; create them first
      for (const c of ["wa", "wb", "wc", "wd"]) {
        yield* Effect.promise(() => raw.set(`${prefix}:category:${c}`, "1").then(() => raw.sadd(`${prefix}:categories`, c)))
      }
      yield* Effect.promise(() => raw.set(`${prefix}:{wa:0}:s:x`, "not a list"))
      yield* Effect.promise(() => raw.rpush(`${prefix}:{wb:0}:ids:x`, "not a hash"))
      yield* Effect.promise(() => raw.set(`${prefix}:{wc:0}:log`, "not a stream"))
      yield* Effect.promise(() => raw.set(`${prefix}:{wd:0}:streams`, "not a set"))
      const before = yield* Effect.promise(snapshot)
      const cases = [
        ["wa-x", `${prefix}:{wa:0}:s:x`, "list"],
        ["wb-x", `${prefix}:{wb:0}:ids:x`, "hash"],
        ["wc-x", `${prefix}:{wc:0}:log`, "stream"],
        ["wd-x", `${prefix}:{wd:0}:streams`, "set"]
      ] as const
      for (const [stream, key, expected] of cases) {
        const error = yield* Effect.flip(store.append(stream, [event("Created", { n: 1 }), event("Created", { n: 2 })]))
        expect(error._tag, stream).toBe("WrongKeyType")
        if (error._tag === "WrongKeyType") {
          expect(error.key).toBe(key)
          expect(error.expected).toBe(expected)
        }
      }
      expect(yield* Effect.promise(snapshot)).toEqual(before)
    }).pipe(Effect.scoped))

  it.live("appendMany sends the batches of one partition in one script call, each checked on its own", () =>
    Effect.gen(function*() {
      const raw = yield* rawRedis(url)
      const prefix = uniquePrefix("many")
      const store = yield* storeIn(redisStore(url, { prefix, partitions: 1 }))
      yield* store.partitions("hm")
      yield* store.append("hm-c", [event("Created", { n: 0 })])
      const calls = yield* scripts(raw)
      const results = yield* store.appendMany(["a", "b", "c", "d"].map((id) => ({ stream: `hm-${id}`, events: [event("Created", { id })], expectedVersion: "no-stream" as const })))
      expect((yield* scripts(raw)) - calls, "script calls for 4 appends sent together").toBe(1)
      expect(results.map((r) => (Either.isRight(r) ? r.right.firstVersion : r.left._tag))).toEqual([1, 1, "WrongExpectedVersion", 1])
    }).pipe(Effect.scoped))

  it.live("batches coalesced into one script call are checked and applied each on its own: a failing batch writes nothing", () =>
    Effect.gen(function*() {
      const raw = yield* rawRedis(url)
      const prefix = uniquePrefix("coal")
      const store = yield* storeIn(redisStore(url, { prefix, partitions: 1 }))
      yield* store.partitions("hb")
      yield* store.append("hb-c", [event("Created", { n: 0 })])
      yield* Effect.promise(() => raw.set(`${prefix}:{hb:0}:s:b`, "blocker"))
      const calls = yield* scripts(raw)
      const three = (tag: string) => Array.from({ length: 3 }, (_, i) => event("Created", { tag, i }))
      const [a, b, c, d] = yield* Effect.all([
        Effect.either(store.append("hb-a", three("a"), { expectedVersion: "no-stream" })),
        Effect.either(store.append("hb-b", three("b"))),
        Effect.either(store.append("hb-c", three("c"), { expectedVersion: 0 })),
        Effect.either(store.append("hb-d", three("d"), { expectedVersion: "no-stream" }))
      ], { concurrency: "unbounded" })
      expect((yield* scripts(raw)) - calls, "script calls for 4 concurrent appends").toBe(1)
      expect(Either.isRight(a) && [a.right.firstVersion, a.right.lastVersion]).toEqual([1, 3])
      expect(Either.isLeft(b) && b.left._tag).toBe("WrongKeyType")
      expect(Either.isLeft(c) && c.left._tag).toBe("WrongExpectedVersion")
      expect(Either.isRight(d) && [d.right.firstVersion, d.right.lastVersion]).toEqual([1, 3])
      const log = yield* collect(store.readCategory("hb"))
      expect(log.map((e) => (e.data as { tag?: string }).tag ?? "-")).toEqual(["-", "a", "a", "a", "d", "d", "d"])
      expect(yield* Effect.promise(() => raw.exists(`${prefix}:{hb:0}:ids:b`))).toBe(0)
      expect(yield* Effect.promise(() => raw.hget(`${prefix}:{hb:0}:ids:c`, "v"))).toBe("1")
    }).pipe(Effect.scoped))

  it.live("one script call per append, and concurrent appends to one partition share calls; a batch over 512 events goes alone", () =>
    Effect.gen(function*() {
      const raw = yield* rawRedis(url)
      const store = yield* storeIn(redisStore(url, { prefix: uniquePrefix("rt"), partitions: 1 }))
      yield* store.partitions("rt")
      const c0 = yield* scripts(raw)
      for (let i = 0; i < 20; i++) yield* store.append("rt-seq", [event("Created", { i })], { expectedVersion: i })
      expect((yield* scripts(raw)) - c0, "script calls for 20 sequential appends").toBe(20)
      const c1 = yield* scripts(raw)
      const results = yield* Effect.all(
        Array.from({ length: 200 }, (_, i) => store.append(`rt-${i}`, [event("Created", { i })], { expectedVersion: "no-stream" })),
        { concurrency: "unbounded" }
      )
      const coalesced = (yield* scripts(raw)) - c1
      expect(results.every((r) => r.firstVersion === 1 && !r.replayed)).toBe(true)
      expect(coalesced).toBeGreaterThanOrEqual(1)
      expect(coalesced).toBeLessThan(20)
      const big = Array.from({ length: 600 }, (_, i) => event("Created", { i }))
      const [large, ...small] = yield* Effect.all([
        store.append("rt-big", big),
        ...Array.from({ length: 10 }, (_, i) => store.append(`rt-small${i}`, [event("Created", { i })]))
      ], { concurrency: "unbounded" })
      expect([large!.firstVersion, large!.lastVersion]).toEqual([1, 600])
      expect(small.every((r) => r.lastVersion === 1)).toBe(true)
      expect((yield* collect(store.read("rt-big"))).length).toBe(600)
    }).pipe(Effect.scoped))

  it.live("a category's partition count is fixed when first written: another count fails with PartitionCountMismatch", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("reg")
      const two = yield* storeIn(redisStore(url, { prefix, partitions: 2 }))
      yield* two.append("orders-1", [event("Created", {})])
      const three = yield* storeIn(redisStore(url, { prefix, partitions: { default: 3, byCategory: { other: 2 } } }))
      const error = yield* Effect.flip(three.append("orders-2", [event("Created", {})]))
      expect(error._tag).toBe("PartitionCountMismatch")
      if (error._tag === "PartitionCountMismatch") expect([error.category, error.recorded, error.configured]).toEqual(["orders", 2, 3])
      const readError = yield* Effect.flip(Stream.runDrain(three.readCategory("orders")))
      expect(readError._tag).toBe("PartitionCountMismatch")
      expect((yield* three.append("other-1", [event("Created", {})])).lastVersion).toBe(1)
      const agreeing = yield* storeIn(redisStore(url, { prefix, partitions: { default: 5, byCategory: { orders: 2 } } }))
      expect((yield* agreeing.append("orders-1", [event("Created", {})])).lastVersion).toBe(2)
    }).pipe(Effect.scoped))

  it.live("a live reader records the partition count it follows; a writer with another count fails, and a reader that finds another count fails at once", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("livereg")
      const two = yield* storeIn(redisStore(url, { prefix, partitions: 2 }))
      const four = yield* storeIn(redisStore(url, { prefix, partitions: 4 }))
      // the reader starts before anything is written: its count is recorded, not assumed
      const caughtUp = yield* Deferred.make<void>()
      const reader = yield* two.readCategory("lr", { live: true }).pipe(
        Stream.tap((x) => (EventStore.isCaughtUp(x) ? Deferred.succeed(caughtUp, undefined) : Effect.void)),
        Stream.filter((x) => !EventStore.isCaughtUp(x)),
        Stream.take(20),
        Stream.runCollect,
        Effect.fork
      )
      yield* Deferred.await(caughtUp)
      const refused = yield* Effect.flip(four.append("lr-1", [event("Created", {})]))
      expect(refused._tag).toBe("PartitionCountMismatch")
      for (let i = 0; i < 20; i++) yield* two.append(`lr-${i}`, [event("Created", { i })])
      expect(Chunk.size(yield* Fiber.join(reader))).toBe(20)
      // a live reader configured otherwise fails before it reads, for a category or one stream
      const mismatch = yield* Effect.flip(Stream.runDrain(four.readCategory("lr", { live: true })))
      expect(mismatch._tag).toBe("PartitionCountMismatch")
      const streamMismatch = yield* Effect.flip(Stream.runDrain(four.read("lr-1", { live: true })))
      expect(streamMismatch._tag).toBe("PartitionCountMismatch")
      // a live read of one stream of a new category records its count too
      const single = yield* two.read("ls-1", { live: true }).pipe(Stream.take(1), Stream.runCollect)
      expect(Chunk.toReadonlyArray(single).map(EventStore.isStreamCaughtUp)).toEqual([true])
      expect((yield* Effect.flip(four.append("ls-1", [event("Created", {})])))._tag).toBe("PartitionCountMismatch")
    }).pipe(Effect.scoped))

  it.live("options that cannot work are refused when the Layer is built: durability timeout 0, a negative or endless timeout, no replica without aof, a live block of 0", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [Partial<RedisChronicle.Options>, string]> = [
        [{ durability: { replicas: 1, timeout: 0 } }, "durability.timeout"],
        [{ durability: { replicas: 1, timeout: "0 millis" } }, "durability.timeout"],
        [{ durability: { replicas: 1, timeout: -5 } }, "durability.timeout"],
        [{ durability: { replicas: 1, timeout: Duration.infinity } }, "durability.timeout"],
        [{ durability: { replicas: 1, timeout: "soon" as Duration.DurationInput } }, "durability.timeout"],
        [{ durability: { replicas: 0, timeout: "1 second" } }, "durability.replicas"],
        [{ durability: { replicas: 1.5 } }, "durability.replicas"],
        [{ liveBlock: 0 }, "liveBlock"],
        [{ liveBlock: "a while" as Duration.DurationInput }, "liveBlock"]
      ]
      for (const [options, option] of cases) {
        const built = yield* Effect.either(Layer.build(redisStore(url, { prefix: uniquePrefix("opt"), ...options })))
        expect(built._tag, JSON.stringify(options)).toBe("Left")
        if (built._tag === "Left") {
          const e = built.left as { _tag: string; option?: string }
          expect([e._tag, e.option]).toEqual(["ConfigurationError", option])
        }
      }
    }).pipe(Effect.scoped))

  it.live("RedisChronicle.layerConfig reads its prefix and partition count from the environment; a bad count is a ConfigError; make builds the same services", () =>
    Effect.gen(function*() {
      const raw = yield* rawRedis(url)
      const prefix = uniquePrefix("cfg")
      const client = RedisClient.layer({ url })
      const fromEnv = (env: Record<string, string>) =>
        RedisChronicle.layerConfig().pipe(Layer.provide(client), Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))))
      const store = yield* storeIn(fromEnv({ CHRONICLE_PREFIX: prefix, CHRONICLE_PARTITIONS: "3" }))
      yield* store.append("orders-o1", [event("Placed", { n: 1 })])
      expect(yield* store.partitions("orders")).toBe(3)
      expect(yield* Effect.promise(() => raw.get(`${prefix}:category:orders`))).toBe("3")
      const bad = yield* Effect.exit(Effect.scoped(Layer.build(fromEnv({ CHRONICLE_PREFIX: prefix, CHRONICLE_PARTITIONS: "many" }))))
      expect(bad._tag === "Failure" && Cause.failureOption(bad.cause).pipe(Option.map((e) => ConfigError.isConfigError(e)), Option.getOrElse(() => false))).toBe(true)
      // make builds within the caller's scope, on a client the caller holds
      const held = yield* Layer.build(client)
      const services = yield* RedisChronicle.make({ prefix, partitions: 3 }).pipe(Effect.provide(held))
      const read = yield* collect(Context.get(services, EventStore.EventStore).read("orders-o1"))
      expect(read.map((r) => r.type)).toEqual(["Placed"])
    }).pipe(Effect.scoped))

  it.live("a live read of one stream sends nothing per event of other streams: its commands follow its own stream only", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const raw = yield* rawRedis(server.url)
      const writer = yield* storeIn(redisStore(server.url, { prefix: "quiet", partitions: 1 }))
      const reader = yield* storeIn(
        RedisChronicle.layer({ prefix: "quiet", partitions: 1, liveBlock: "1 minute" }).pipe(
          Layer.provide(RedisClient.layer({ url: server.url, connectionName: "reader" }))
        )
      )
      yield* writer.append("q-target", [event("Created", {})])
      const caughtUp = yield* Deferred.make<void>()
      const following = yield* reader.read("q-target", { live: true }).pipe(
        Stream.tap((x) => (EventStore.isStreamCaughtUp(x) ? Deferred.succeed(caughtUp, undefined) : Effect.void)),
        Stream.filter((x) => !EventStore.isStreamCaughtUp(x)),
        Stream.take(3),
        Stream.runCollect,
        Effect.fork
      )
      yield* Deferred.await(caughtUp)
      // every command the reader's connections send, seen by MONITOR
      const clients = yield* Effect.promise(() => raw.client("LIST") as Promise<string>)
      const readerAddrs = new Set(clients.split("\n").filter((l) => / name=reader:/.test(l)).map((l) => /addr=(\S+)/.exec(l)![1]!))
      expect(readerAddrs.size).toBeGreaterThanOrEqual(2)
      const monitor = yield* Effect.acquireRelease(Effect.promise(() => raw.monitor()), (m) => Effect.sync(() => m.disconnect()))
      const sent: Array<string> = []
      monitor.on("monitor", (_time: string, args: Array<string>, source: string) => {
        if (readerAddrs.has(source)) sent.push(String(args[0]).toLowerCase())
      })
      yield* Effect.sleep("50 millis")
      for (let i = 0; i < 500; i++) yield* writer.append(`q-other${i % 50}`, [event("Created", {})])
      yield* Effect.sleep("200 millis")
      expect(sent, "commands of the reader while only other streams were written").toEqual([])
      yield* writer.append("q-target", [event("Created", {}), event("Created", {})])
      const seen = Chunk.toReadonlyArray(yield* Fiber.join(following))
      expect(seen.map((e) => (e as EventStore.RecordedEvent).version)).toEqual([1, 2, 3])
      yield* Effect.sleep("100 millis")
      // the notice for the target's batch: one read of the stream; at the end, the subscription is dropped
      expect(sent).toEqual(["evalsha", "sunsubscribe"])
    }).pipe(Effect.scoped))

  it.live("a live read of one stream survives its subscription being dropped while appends go on: what was appended meanwhile arrives", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const raw = yield* rawRedis(server.url)
      // a recheck of a minute: only the reconnect can bring what the lost notices announced
      const store = yield* storeIn(redisStore(server.url, { prefix: "drop", partitions: 1, liveBlock: "1 minute" }))
      const total = 300
      const received: Array<number> = []
      const reader = yield* store.read("d-1", { live: true }).pipe(
        Stream.filter((x): x is EventStore.RecordedEvent => !EventStore.isStreamCaughtUp(x)),
        Stream.tap((e) => Effect.sync(() => received.push(e.version))),
        Stream.take(total),
        Stream.runDrain,
        Effect.fork
      )
      let kills = 0
      for (let i = 0; i < total; i++) {
        yield* store.append("d-1", [event("Created", { i })])
        // a backlog is being written while the subscriber is cut off, three times
        if (i === 50 || i === 150 || i === 250) {
          // the subscriber is back (subscribed again) from the last cut before the next one
          for (let n = 0; n < 200 && (yield* Effect.promise(() => raw.pubsub("SHARDNUMSUB", "drop:{d:0}:appended:1") as Promise<Array<unknown>>))[1] === 0; n++) {
            yield* Effect.sleep("10 millis")
          }
          kills += yield* Effect.promise(() => raw.client("KILL", "TYPE", "pubsub") as Promise<number>)
        }
        if (i % 10 === 0) yield* Effect.sleep("2 millis")
      }
      yield* Fiber.join(reader).pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error(`stuck after ${received.length} events`) }))
      expect(kills).toBeGreaterThanOrEqual(3)
      expect(received).toEqual(Array.from({ length: total }, (_, i) => i + 1))
    }).pipe(Effect.scoped), 60_000)

  it.live("a corrupt entry written raw is a typed error with its stream and version", () =>
    Effect.gen(function*() {
      const raw = yield* rawRedis(url)
      const prefix = uniquePrefix("corrupt")
      const store = yield* storeIn(redisStore(url, { prefix, partitions: 1 }))
      yield* store.append("cor-x", [event("Created", { ok: true })])
      const log = `${prefix}:{cor:0}:log`
      const id = yield* Effect.promise(() =>
        raw.xadd(log, "*", "e", crypto.randomUUID(), "i", "x", "v", "2", "t", "Created", "d", "{not json", "m", "")
      )
      yield* Effect.promise(() => raw.rpush(`${prefix}:{cor:0}:s:x`, id!))
      yield* Effect.promise(() => raw.hset(`${prefix}:{cor:0}:ids:x`, "v", "2"))
      const error = yield* Effect.flip(Stream.runDrain(store.read("cor-x")))
      expect(error._tag).toBe("EventDecodeError")
      if (error._tag === "EventDecodeError") {
        expect([error.stream, error.version, error.entryId]).toEqual(["cor-x", 2, id])
        expect(error.message).toContain("not JSON")
      }
      const first = yield* collect(store.read("cor-x", { limit: 1 }))
      expect(first.map((e) => e.data)).toEqual([{ ok: true }])
      const missing = yield* Effect.promise(() => raw.xadd(log, "*", "i", "y", "v", "1"))
      const categoryError = yield* Effect.flip(Stream.runDrain(store.readCategory("cor", { from: [id!] })))
      expect(categoryError._tag).toBe("EventDecodeError")
      if (categoryError._tag === "EventDecodeError") {
        expect([categoryError.stream, categoryError.version, categoryError.entryId]).toEqual(["cor-y", 1, missing])
      }
    }).pipe(Effect.scoped))

  it.live("the registry lists categories, their partition counts and each partition's streams without SCAN", () =>
    Effect.gen(function*() {
      const raw = yield* rawRedis(url)
      const prefix = uniquePrefix("list")
      const store = yield* storeIn(redisStore(url, { prefix, partitions: { default: 1, byCategory: { many: 3 } } }))
      for (const id of ["a", "b", "c", "d", "e", "f"]) {
        yield* store.append(`many-${id}`, [event("Created", {})])
        yield* store.append(`many-${id}`, [event("Created", {})])
      }
      yield* store.append("one-x", [event("Created", {})])
      expect((yield* Effect.promise(() => raw.smembers(`${prefix}:categories`))).sort()).toEqual(["many", "one"])
      expect(yield* Effect.promise(() => raw.get(`${prefix}:category:many`))).toBe("3")
      expect(yield* Effect.promise(() => raw.get(`${prefix}:category:one`))).toBe("1")
      const members = yield* Effect.promise(() => Promise.all([0, 1, 2].map((p) => raw.smembers(`${prefix}:{many:${p}}:streams`))))
      expect(members.flat().sort()).toEqual(["a", "b", "c", "d", "e", "f"])
      expect(members.filter((m) => m.length > 0).length).toBeGreaterThan(1)
      expect(yield* Effect.promise(() => raw.smembers(`${prefix}:{one:0}:streams`))).toEqual(["x"])
    }).pipe(Effect.scoped))

  it.live("after SCRIPT FLUSH the next append succeeds", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const raw = yield* rawRedis(server.url)
      const store = yield* storeIn(redisStore(server.url, { prefix: "flush", partitions: 1 }))
      yield* store.append("f-1", [event("Created", {})])
      yield* Effect.promise(() => raw.script("FLUSH"))
      const r = yield* store.append("f-1", [event("Created", {})], { expectedVersion: 1 })
      expect(r.lastVersion).toBe(2)
      expect(yield* callsOf(raw, "eval")).toBeGreaterThanOrEqual(1)
      const page = yield* collect(store.read("f-1"))
      expect(page.length).toBe(2)
      yield* Effect.promise(() => raw.script("FLUSH"))
      expect((yield* collect(store.read("f-1"))).length).toBe(2)
    }).pipe(Effect.scoped))

  it.live("an append refused for lack of memory is StoreUnavailable and writes nothing", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const raw = yield* rawRedis(server.url)
      const store = yield* storeIn(redisStore(server.url, { prefix: "oom", partitions: 1 }))
      yield* store.append("m-1", [event("Created", {})])
      yield* Effect.promise(() => raw.config("SET", "maxmemory", "1"))
      const error = yield* Effect.flip(store.append("m-1", Array.from({ length: 50 }, (_, i) => event("Created", { i }))))
      yield* Effect.promise(() => raw.config("SET", "maxmemory", "0"))
      expect(error._tag).toBe("StoreUnavailable")
      expect(error.message).toContain("OOM")
      expect(yield* Effect.promise(() => raw.xlen("oom:{m:0}:log"))).toBe(1)
      expect(yield* Effect.promise(() => raw.hget("oom:{m:0}:ids:1", "v"))).toBe("1")
    }).pipe(Effect.scoped))

  it.live("an append whose reply is lost fails with AppendOutcomeUnknown; its same-id retry leaves exactly one copy", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy(server.port)), (p) => Effect.promise(() => p.close()))
      const raw = yield* rawRedis(server.url)
      const store = yield* storeIn(redisStore(proxy.url, { prefix: "lost", partitions: 1 }))
      yield* store.append("l-1", [event("Created", { n: 0 })])
      const batch = [event("Created", { n: 1 }), event("Created", { n: 2 })]
      const cut = proxy.cutAfterRequest((request) => request.toUpperCase().includes("EVALSHA"))
      const error = yield* Effect.flip(store.append("l-1", batch, { expectedVersion: 1 }))
      yield* Effect.promise(() => cut)
      expect(error._tag).toBe("AppendOutcomeUnknown")
      if (error._tag === "AppendOutcomeUnknown") expect(error.eventIds).toEqual(batch.map((e) => e.eventId))
      // the server did run it: the reply was what got lost
      expect(yield* Effect.promise(() => raw.hget("lost:{l:0}:ids:1", "v"))).toBe("3")
      const retry = yield* store.append("l-1", batch, { expectedVersion: 1 })
      expect([retry.firstVersion, retry.lastVersion, retry.replayed]).toEqual([2, 3, true])
      const read = yield* collect(store.read("l-1"))
      expect(read.map((e) => (e.data as { n: number }).n)).toEqual([0, 1, 2])
      expect(yield* Effect.promise(() => raw.xlen("lost:{l:0}:log"))).toBe(3)
      expect(proxy.cuts()).toBe(1)
    }).pipe(Effect.scoped))

  it.live("an append with no reply within the command timeout fails with AppendOutcomeUnknown in time; its same-id retry leaves one copy", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const raw = yield* rawRedis(server.url)
      const client = RedisClient.layer({ url: server.url, commandTimeout: "300 millis" })
      const store = yield* storeIn(RedisChronicle.layer({ prefix: "slow" }).pipe(Layer.provide(client)))
      yield* store.append("t-1", [event("Created", { n: 0 })])
      yield* Effect.promise(() => raw.client("PAUSE", 1500, "WRITE"))
      const batch = [event("Created", { n: 1 })]
      const started = Date.now()
      const error = yield* Effect.flip(store.append("t-1", batch, { expectedVersion: 1 }))
      const elapsed = Date.now() - started
      expect(error._tag).toBe("AppendOutcomeUnknown")
      expect(elapsed).toBeGreaterThanOrEqual(290)
      expect(elapsed).toBeLessThan(300 + 1000)
      // the server runs the paused call once the pause ends: the retry finds it
      yield* Effect.promise(() => raw.client("UNPAUSE"))
      const retry = yield* store.append("t-1", batch, { expectedVersion: 1 })
      expect(retry.lastVersion).toBe(2)
      expect((yield* collect(store.read("t-1"))).length).toBe(2)
    }).pipe(Effect.scoped))

  it.live("an append while the server is down is StoreUnavailable: nothing was sent", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const clientCtx = yield* Layer.build(RedisClient.layer({ url: server.url, commandTimeout: "300 millis" }))
      const store = yield* storeIn(RedisChronicle.layer({ prefix: "down" }).pipe(Layer.provide(Layer.succeedContext(clientCtx))))
      yield* store.append("d-1", [event("Created", {})])
      yield* Effect.promise(() => server.stop())
      // the client has seen its connections close (on a busy machine that can come after
      // the server's exit): an append sent before that would be an unknown outcome
      const shared = Context.get(clientCtx, RedisClient.RedisClient).shared
      for (let i = 0; i < 200 && shared.status === "ready"; i++) yield* Effect.sleep("10 millis")
      expect(shared.status).not.toBe("ready")
      const error = yield* Effect.flip(store.append("d-1", [event("Created", {})]))
      expect(error._tag).toBe("StoreUnavailable")
    }).pipe(Effect.scoped))

  it.live("a wrong URL or password is a one-line RedisConnectionError that never shows the password", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(() => freePort())
      const refused = yield* Effect.flip(Layer.build(RedisClient.layer({ url: `redis://:hunter2secret@127.0.0.1:${port}`, connectTimeout: "1 second" })))
      expect(refused._tag).toBe("RedisConnectionError")
      expect(refused.message).not.toContain("hunter2secret")
      expect(refused.message.split("\n").length).toBe(1)
      const server = yield* privateServer(["--requirepass", "right-password"])
      const denied = yield* Effect.flip(Layer.build(RedisClient.layer({ url: server.url, password: Redacted.make("wrong-password-xyz") })))
      expect(denied._tag).toBe("RedisConnectionError")
      expect(denied.message).not.toContain("wrong-password-xyz")
      expect(denied.message).toMatch(/WRONGPASS|invalid/i)
      const ok = yield* Layer.build(RedisClient.layer({ url: server.url, password: Redacted.make("right-password") }))
      expect(yield* Effect.promise(() => Context.get(ok, RedisClient.RedisClient).shared.ping())).toBe("PONG")
    }).pipe(Effect.scoped))

  it.live("a connection dropped during the ready check is tried again within connectTimeout, not a failure to connect", () =>
    Effect.gen(function*() {
      const port = Number(new URL(url).port)
      const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy(port)), (p) => Effect.promise(() => p.close()))
      // the ready check (INFO) reaches the server, then the connection is cut before its reply
      const cut = proxy.cutAfterRequest((request) => /^\*1\r\n\$4\r\ninfo\r\n/i.test(request))
      const ctx = yield* Layer.build(RedisClient.layer({ url: proxy.url, connectTimeout: "5 seconds" }))
      yield* Effect.promise(() => cut)
      expect(proxy.cuts()).toBe(1)
      expect(yield* Effect.promise(() => Context.get(ctx, RedisClient.RedisClient).shared.ping())).toBe("PONG")
    }).pipe(Effect.scoped))

  it.live("warns loudly at start when maxmemory-policy is not noeviction", () =>
    Effect.gen(function*() {
      const server = yield* privateServer(["--maxmemory-policy", "allkeys-lru"])
      const messages: Array<string> = []
      const capture = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => {
        messages.push(Array.isArray(message) ? message.join(" ") : String(message))
      }))
      yield* storeIn(redisStore(server.url, { prefix: "evict" }).pipe(Layer.provide(capture)))
      expect(messages.some((m) => m.includes("allkeys-lru") && m.includes("EVICT"))).toBe(true)
      messages.length = 0
      yield* storeIn(redisStore(url, { prefix: "evict" }).pipe(Layer.provide(capture)))
      expect(messages).toEqual([])
    }).pipe(Effect.scoped))
})

describe("Redis consumer groups: scripts under retries", () => {
  it.live("a dead-letter call sent twice (its first reply lost) parks the entry once", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("dl2")
      const ctx = yield* Layer.build(redisStore(url, { prefix, partitions: 1 }))
      const groups = Context.get(ctx, ConsumerGroups.ConsumerGroups)
      const store = Context.get(ctx, EventStore.EventStore)
      yield* store.append("dl2-a", [event("Created", {})])
      const info = yield* groups.ensureGroup("g", "dl2", "start")
      const lease = (yield* groups.acquire(info, 0, "m:1", 5000))!
      const [delivery] = (yield* groups.read(lease, "m:1", 10)).deliveries
      const reason = { errorTag: "Boom", message: "boom", attempts: 1 }
      yield* groups.deadLetter(lease, delivery!, reason)
      yield* groups.deadLetter(lease, delivery!, reason)
      expect((yield* groups.deadLetters("g")).length).toBe(1)
      const status = yield* groups.status("g")
      expect(status.partitionStatus[0]!.pending).toBe(0)
    }).pipe(Effect.scoped))

  it.live("a wait whose lease lapsed while it blocked takes nothing when an entry wakes it: its queued read is refused, the new owner gets the entry", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("wlost")
      const ctx = yield* Layer.build(redisStore(url, { prefix, partitions: 1 }))
      const groups = Context.get(ctx, ConsumerGroups.ConsumerGroups)
      const store = Context.get(ctx, EventStore.EventStore)
      yield* store.append("wlost-a", [event("Created", {})])
      const info = yield* groups.ensureGroup("g", "wlost", "start")
      const old = (yield* groups.acquire(info, 0, "m:old", 300))!
      const first = yield* groups.read(old, "m:old", 10)
      expect(first.deliveries.length).toBe(1)
      expect(first.tail).toBeDefined()
      yield* groups.ack(old, first.deliveries)
      // the old owner waits (its fenced read queued behind the blocking read) past its lease
      const waiting = yield* Effect.fork(groups.wait("m:old", [{ lease: old, tail: first.tail! }], { blockMillis: 5000, count: 10, until: Effect.never }))
      yield* Effect.sleep("500 millis")
      const fresh = (yield* groups.acquire(info, 0, "m:new", 5000))!
      expect(fresh.token).not.toBe(old.token)
      // an entry arrives: the old owner's wait wakes on the server and its read runs there
      yield* store.append("wlost-a", [event("Updated", {})])
      const waited = yield* Fiber.join(waiting).pipe(Effect.timeout("5 seconds"))
      expect(waited.length).toBe(1)
      expect(waited[0]!.result).toBeInstanceOf(ConsumerGroups.LeaseLost)
      const raw = yield* rawRedis(url)
      const log = `${prefix}:{wlost:0}:log`
      const pendingOld = (yield* Effect.promise(() => raw.xpending(log, "g", "-", "+", 10, "m:old"))) as Array<unknown>
      expect(pendingOld).toEqual([])
      const taken = yield* groups.read(fresh, "m:new", 10)
      expect(taken.deliveries.map((d) => (d.event as EventStore.RecordedEvent).type)).toEqual(["Updated"])
    }).pipe(Effect.scoped))

  it.live("a wait cut short returns what its reads took; a wait that runs out of time returns nothing and takes nothing", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("wcut")
      const ctx = yield* Layer.build(redisStore(url, { prefix, partitions: 2 }))
      const groups = Context.get(ctx, ConsumerGroups.ConsumerGroups)
      const store = Context.get(ctx, EventStore.EventStore)
      const info = yield* groups.ensureGroup("g", "wcut", "start")
      const leases = [(yield* groups.acquire(info, 0, "m:1", 5000))!, (yield* groups.acquire(info, 1, "m:1", 5000))!]
      const tails = yield* Effect.forEach(leases, (l) => Effect.map(groups.read(l, "m:1", 10), (r) => r.tail!))
      const watches = leases.map((lease, i) => ({ lease, tail: tails[i]! }))
      // nothing arrives: the time runs out, nothing is returned
      const idle = yield* groups.wait("m:1", watches, { blockMillis: 100, count: 10, until: Effect.never })
      expect(idle).toEqual([])
      // cut short by `until` at once: nothing new yet, nothing returned, and quickly
      const started = Date.now()
      const cut = yield* groups.wait("m:1", watches, { blockMillis: 10_000, count: 10, until: Effect.void })
      expect(cut).toEqual([])
      expect(Date.now() - started).toBeLessThan(5000)
      // entries present when a wait is cut short are taken by its reads and returned
      const latch = yield* Deferred.make<void>()
      const waiting = yield* Effect.fork(groups.wait("m:1", watches, { blockMillis: 10_000, count: 10, until: Deferred.await(latch) }))
      const streams = Array.from({ length: 20 }, (_, i) => `wcut-s${i}`)
      yield* Effect.forEach(streams, (s) => store.append(s, [event("Created", {})]), { discard: true })
      yield* Deferred.succeed(latch, undefined)
      const got = yield* Fiber.join(waiting).pipe(Effect.timeout("5 seconds"))
      const again = yield* Effect.forEach(leases, (l) => groups.read(l, "m:1", 100))
      const total = got.reduce((n, w) => n + ((w.result as ConsumerGroups.ReadResult).deliveries?.length ?? 0), 0) +
        again.reduce((n, r) => n + r.deliveries.length, 0)
      // each entry delivered once: by the wait's reads or by the reads after it
      expect(total).toBe(20)
      expect(got.length).toBeGreaterThan(0)
    }).pipe(Effect.scoped))

  it.live("a wait's reads: the tail is where each source ended (the next wait starts there), and the member's pending count rides on a wait at most once a second", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("wtail")
      const ctx = yield* Layer.build(redisStore(url, { prefix, partitions: 1 }))
      const groups = Context.get(ctx, ConsumerGroups.ConsumerGroups)
      const store = Context.get(ctx, EventStore.EventStore)
      const raw = yield* rawRedis(url)
      const log = `${prefix}:{wtail:0}:log`
      const info = yield* groups.ensureGroup("g", "wtail", "start")
      const lease = (yield* groups.acquire(info, 0, "m:1", 5000))!
      const first = yield* groups.read(lease, "m:1", 10)
      expect(first.pending).toBe(0)
      // a wait with entries arriving while it blocks, and one whose entries were there already
      const waitOnce = (tail: ConsumerGroups.Tail) =>
        Effect.gen(function*() {
          const waiting = yield* Effect.fork(groups.wait("m:1", [{ lease, tail }], { blockMillis: 5000, count: 10, until: Effect.never }))
          yield* Effect.forEach(["a", "b", "c"], (s) => store.append(`wtail-${s}`, [event("Created", {})]), { discard: true })
          const got = yield* Fiber.join(waiting).pipe(Effect.timeout("5 seconds"))
          expect(got.length).toBe(1)
          return got[0]!.result as ConsumerGroups.ReadResult
        })
      const one = yield* waitOnce(first.tail!)
      const ids = ((yield* Effect.promise(() => raw.xrange(log, "-", "+"))) as Array<[string, Array<string>]>).map(([id]) => id)
      expect(one.deliveries.map((d) => d.id)).toEqual(ids.slice(0, one.deliveries.length))
      // the wait ends at the first append; whatever it took, its tail is the last entry it read
      expect(one.tail?.log).toBe(one.deliveries[one.deliveries.length - 1]!.id)
      expect(one.tail?.redelivery).toBe(first.tail!.redelivery)
      // the first wait of the member counted what is pending for it: what it just took
      expect(one.pending).toBe(one.deliveries.length)
      // the next wait, right after, starts at that tail, takes exactly the rest, and does not count
      const rest = yield* Effect.gen(function*() {
        const out: Array<string> = []
        let tail = one.tail!
        let counted = false
        while (out.length < ids.length - one.deliveries.length) {
          const waited = yield* groups.wait("m:1", [{ lease, tail }], { blockMillis: 1000, count: 10, until: Effect.never })
          const r = waited[0]!.result as ConsumerGroups.ReadResult
          out.push(...r.deliveries.map((d) => d.id))
          counted ||= r.pending !== undefined
          tail = r.tail!
        }
        return { out, counted }
      }).pipe(Effect.timeout("5 seconds"))
      expect([...one.deliveries.map((d) => d.id), ...rest.out]).toEqual(ids.slice(0, 3))
      expect(rest.counted).toBe(false)
      // past a second, a wait counts again
      yield* Effect.sleep("1100 millis")
      const later = yield* waitOnce((yield* groups.read(lease, "m:1", 10)).tail!)
      expect(later.pending).toBe(3 + later.deliveries.length)
    }).pipe(Effect.scoped))

  it.live("a wait given up on (its request held on the way past the timeout) takes nothing when it reaches the server after the partition was claimed again", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy(server.port)), (p) => Effect.promise(() => p.close()))
      const ctx = yield* Layer.build(RedisChronicle.layer({ prefix: "whold", partitions: 1 }).pipe(Layer.provide(RedisClient.layer({ url: proxy.url, commandTimeout: "300 millis" }))))
      const groups = Context.get(ctx, ConsumerGroups.ConsumerGroups)
      const store = Context.get(ctx, EventStore.EventStore)
      const info = yield* groups.ensureGroup("g", "whold", "start")
      const lease = (yield* groups.acquire(info, 0, "m:1", 30_000))!
      yield* groups.claim(lease, "m:1", ConsumerGroups.claimStart, 100)
      const { tail } = yield* groups.read(lease, "m:1", 10)
      proxy.holdRequest((request) => request.includes("XREAD"), 1500)
      const waited = yield* Effect.either(groups.wait("m:1", [{ lease, tail: tail! }], { blockMillis: 100, count: 10, until: Effect.never }))
      expect(waited._tag).toBe("Left")
      // what a subscriber does then: it takes the partition's pending list again
      let cursor: ConsumerGroups.ClaimCursor | undefined = ConsumerGroups.claimStart
      while (cursor !== undefined) cursor = (yield* groups.claim(lease, "m:1", cursor, 100)).next
      // an entry arrives, then the held wait reaches the server and its reads run there
      yield* store.append("whold-a", [event("Created", {})])
      const raw = yield* rawRedis(server.url)
      const log = "whold:{whold:0}:log"
      yield* Effect.sleep("2 seconds")
      const xread = ((yield* Effect.promise(() => raw.info("commandstats"))).match(/cmdstat_xread:calls=(\d+)/) ?? [])[1]
      expect(Number(xread)).toBeGreaterThan(0)
      expect(yield* Effect.promise(() => raw.xpending(log, "g", "-", "+", 10))).toEqual([])
      const next = yield* groups.read(lease, "m:1", 10)
      expect(next.deliveries.length).toBe(1)
    }).pipe(Effect.scoped))

  it.live("a wait is cut short for a user without admin commands (-@dangerous), and a member's first calls at once open one pair of connections", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const raw = yield* rawRedis(server.url)
      yield* Effect.promise(() => raw.call("ACL", "SETUSER", "app", "on", ">app-secret", "~*", "&*", "+@all", "-@dangerous"))
      const url = server.url.replace("redis://", "redis://app:app-secret@")
      const ctx = yield* Layer.build(RedisChronicle.layer({ prefix: "wacl", partitions: 8 }).pipe(
        Layer.provide(RedisClient.layer({ url, connectionName: "wacl", readyCheck: false }))
      ))
      const groups = Context.get(ctx, ConsumerGroups.ConsumerGroups)
      const info = yield* groups.ensureGroup("g", "wacl", "start")
      const leases = yield* Effect.forEach(Array.from({ length: 8 }, (_, p) => p), (p) => Effect.map(groups.acquire(info, p, "m:1", 30_000), (l) => l!))
      yield* Effect.forEach(leases, (l) => groups.claim(l, "m:1", ConsumerGroups.claimStart, 10), { concurrency: "unbounded" })
      const names = (yield* Effect.promise(() => raw.client("LIST") as Promise<string>)).split("\n").map((l) => /name=(\S*)/.exec(l)?.[1] ?? "")
      expect(names.filter((n) => n === "wacl:data:m:1").length).toBe(1)
      expect(names.filter((n) => n === "wacl:wait:m:1").length).toBe(1)
      const tails = yield* Effect.forEach(leases, (l) => Effect.map(groups.read(l, "m:1", 10), (r) => r.tail!))
      const started = Date.now()
      const cut = yield* groups.wait("m:1", leases.map((lease, i) => ({ lease, tail: tails[i]! })), { blockMillis: 5000, count: 10, until: Effect.sleep("50 millis") })
      expect(cut).toEqual([])
      expect(Date.now() - started).toBeLessThan(2500)
      yield* groups.leave("g", "m:1")
      const after = (yield* Effect.promise(() => raw.client("LIST") as Promise<string>)).split("\n").map((l) => /name=(\S*)/.exec(l)?.[1] ?? "")
      expect(after.filter((n) => n.startsWith("wacl:data:") || n.startsWith("wacl:wait:"))).toEqual([])
    }).pipe(Effect.scoped))

  it.live("a wait after the server lost its scripts (SCRIPT FLUSH) still takes what arrived", () =>
    Effect.gen(function*() {
      const server = yield* privateServer()
      const ctx = yield* Layer.build(redisStore(server.url, { prefix: "wflush", partitions: 1 }))
      const groups = Context.get(ctx, ConsumerGroups.ConsumerGroups)
      const store = Context.get(ctx, EventStore.EventStore)
      const info = yield* groups.ensureGroup("g", "wflush", "start")
      const lease = (yield* groups.acquire(info, 0, "m:1", 5000))!
      const { tail } = yield* groups.read(lease, "m:1", 10)
      const raw = yield* rawRedis(server.url)
      yield* Effect.promise(() => raw.script("FLUSH"))
      const waiting = yield* Effect.fork(groups.wait("m:1", [{ lease, tail: tail! }], { blockMillis: 5000, count: 10, until: Effect.never }))
      yield* Effect.sleep("100 millis")
      yield* store.append("wflush-a", [event("Created", {})])
      const waited = yield* Fiber.join(waiting).pipe(Effect.timeout("5 seconds"))
      expect(waited.map((w) => (w.result as ConsumerGroups.ReadResult).deliveries.length)).toEqual([1])
    }).pipe(Effect.scoped))

  it.live("limits the append script cannot carry are refused when the store is built", () =>
    Effect.gen(function*() {
      const built = yield* Effect.either(Layer.build(redisStore(url, { prefix: uniquePrefix("lim"), limits: { maxBatchEvents: 5000 } })))
      expect(built._tag === "Left" && (built.left as { _tag: string })._tag).toBe("InvalidArgument")
    }).pipe(Effect.scoped))
})
