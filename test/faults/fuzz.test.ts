/**
 * Stored-data fuzz: 1,000 entries written raw (corrupt JSON, unknown types, missing
 * fields, old versions, binary) give typed errors, never defects or throws; subscribers
 * dead-letter the bad ones and handle the rest; old versions upcast to the expected values.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Chunk, Effect, Exit, Fiber, Layer, Logger, LogLevel, Schema, Stream } from "effect"
import { Contract, DeadLetters, EventStore, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { startRedisServer } from "../support/redisServer.js"
import { figures } from "../support/figures.js"

const Fuzz = Contract.make("fuzz", {
  Measured: Contract.versioned({ celsius: Schema.Number, sensor: Schema.String }, {
    version: 2,
    upcasters: { 1: Contract.upcast(Schema.Struct({ fahrenheit: Schema.Number }), (v1) => ({ celsius: (v1.fahrenheit - 32) * 5 / 9, sensor: "legacy" })) }
  })
})

type Kind = "valid" | "old" | "corrupt" | "unknown" | "missing" | "binary" | "wrongShape"
const kinds: ReadonlyArray<Kind> = ["valid", "old", "corrupt", "unknown", "missing", "binary", "wrongShape"]

/** Seeded bytes, so a failure can be replayed. */
const bytes = (seed: number, n: number) => {
  let s = seed >>> 0
  return Buffer.from(Array.from({ length: n }, () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) & 0xff))
}

describe("faults: stored-data fuzz", () => {
  it.live("1,000 raw entries: typed errors only, bad ones dead-lettered, old versions upcast", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(Effect.promise(() => startRedisServer()), (s) => Effect.promise(() => s.stop()))
      const raw = new Redis(server.url)
      yield* Effect.addFinalizer(() => Effect.promise(() => raw.quit()))
      const ctx = yield* Layer.build(RedisChronicle.layer({ prefix: "fz", partitions: 1 }).pipe(Layer.provide(RedisClient.layer({ url: server.url }))))
      // register the category the way a first append does
      yield* Effect.promise(() => raw.set("fz:category:fuzz", "1").then(() => raw.sadd("fz:categories", "fuzz")))
      const counts: Record<Kind, number> = { valid: 0, old: 0, corrupt: 0, unknown: 0, missing: 0, binary: 0, wrongShape: 0 }
      for (let i = 0; i < 1000; i++) {
        const kind = kinds[i % kinds.length]!
        counts[kind]++
        const id = `s${i}`
        const fields: Array<string | Buffer> = (() => {
          const e = crypto.randomUUID()
          switch (kind) {
            case "valid":
              return ["e", e, "i", id, "v", "1", "t", "Measured", "d", JSON.stringify({ celsius: i, sensor: "a" }), "m", '{"ev":2}']
            case "old":
              return ["e", e, "i", id, "v", "1", "t", "Measured", "d", JSON.stringify({ fahrenheit: 212 }), "m", ""]
            case "corrupt":
              return ["e", e, "i", id, "v", "1", "t", "Measured", "d", '{"celsius": 1,', "m", '{"ev":2}']
            case "unknown":
              return ["e", e, "i", id, "v", "1", "t", "Exploded", "d", "{}", "m", ""]
            case "missing":
              return i % 2 === 0 ? ["e", e, "i", id, "v", "1", "d", "{}"] : ["i", id, "v", "1", "t", "Measured"]
            case "binary":
              return ["e", e, "i", id, "v", "1", "t", bytes(i, 12), "d", bytes(i * 7, 40), "m", bytes(i * 3, 5)]
            case "wrongShape":
              return ["e", e, "i", id, "v", "1", "t", "Measured", "d", JSON.stringify([1, 2, 3]), "m", '{"ev":2}']
          }
        })()
        const entryId = yield* Effect.promise(() => raw.xadd("fz:{fuzz:0}:log", "*", ...(fields as Array<string>)))
        yield* Effect.promise(() => raw.rpush(`fz:{fuzz:0}:s:${id}`, entryId!).then(() => raw.hset(`fz:{fuzz:0}:ids:${id}`, "v", "1")))
      }
      const store = yield* EventStore.forContract(Fuzz).pipe(Effect.provide(ctx))
      let typedErrors = 0
      let decoded = 0
      for (let i = 0; i < 1000; i++) {
        const exit = yield* Effect.exit(Stream.runCollect(store.read(`s${i}`)))
        if (Exit.isSuccess(exit)) {
          decoded++
          const [event] = Chunk.toReadonlyArray(exit.value)
          if (kinds[i % kinds.length] === "old") expect(event!.event).toEqual({ _tag: "Measured", celsius: 100, sensor: "legacy" })
        } else {
          expect(Cause.isDie(exit.cause), `entry ${i} died: ${Cause.pretty(exit.cause)}`).toBe(false)
          const error = Cause.failureOption(exit.cause)
          expect(error._tag).toBe("Some")
          if (error._tag === "Some") expect(["EventDecodeError", "UnknownEventType"]).toContain(error.value._tag)
          typedErrors++
        }
      }
      expect(decoded).toBe(counts.valid + counts.old)
      expect(typedErrors).toBe(1000 - decoded)
      // a subscriber handles the good ones and parks the rest
      const handled: Array<number> = []
      const sub = yield* Effect.fork(Subscriber.run(Fuzz, {
        group: "fuzzers",
        handlers: { Measured: (e) => Effect.sync(() => handled.push(e.celsius)) }
      }).pipe(Effect.provide(ctx), Logger.withMinimumLogLevel(LogLevel.Error)))
      yield* Subscriber.awaitIdle("fuzzers").pipe(Effect.provide(ctx), Effect.timeout("60 seconds"))
      const letters = yield* DeadLetters.list("fuzzers").pipe(Effect.provide(ctx))
      expect(handled.length).toBe(counts.valid + counts.old)
      expect(handled.filter((c) => c === 100).length).toBeGreaterThanOrEqual(counts.old)
      expect(letters.length).toBe(1000 - handled.length)
      expect(new Set(letters.map((l) => l.errorTag))).toEqual(new Set(["DecodeError", "UnknownEventType"]))
      figures(({ fault: "fuzz", entries: 1000, decoded, typed_errors: typedErrors, handled: handled.length, dead_letters: letters.length }))
      yield* Fiber.interrupt(sub)
    }).pipe(Effect.scoped), 60_000)
})
