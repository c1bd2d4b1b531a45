/**
 * The event store conformance suite: one set of tests, run against every backend.
 * It checks the rules of docs/semantics.md §1–4 through the public `EventStore` service.
 *
 * @since 0.1.0
 */
import { describe, expect, layer } from "@effect/vitest"
import { Chunk, Deferred, Effect, Either, Fiber, type Layer, Schema, Stream } from "effect"
import * as Contract from "../Contract.js"
import * as Envelope from "../Envelope.js"
import { partitionOf } from "../internal/ids.js"
import {
  type AppendResult,
  type CaughtUp,
  EventStore,
  isCaughtUp,
  isStreamCaughtUp,
  type Limits,
  type NewEvent,
  type PartitionsConfig,
  type RecordedEvent,
  forContract
} from "../EventStore.js"

/**
 * How the suite builds the backend under test.
 *
 * @since 0.1.0
 * @category models
 */
export interface BackendConfig {
  /** Partition counts; the backend's default when absent. */
  readonly partitions?: PartitionsConfig | undefined
  readonly limits?: Partial<Limits> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface SuiteOptions {
  /**
   * The number of commands the backend's server has run so far, not counting the probe's
   * own. Limits are checked before any I/O: when given, the suite asserts that a rejected
   * append leaves it unchanged. In-memory backends have no I/O and pass nothing.
   */
  readonly commandCount?: Effect.Effect<number, unknown> | undefined
}

const uid = () => Math.random().toString(36).slice(2, 10)
const category = (name: string) => `${name}_${uid()}`

const event = (type: string, data: Record<string, unknown>, eventId: string = crypto.randomUUID()): NewEvent => ({ eventId, type, data })

const collect = <A, E, R>(s: Stream.Stream<A, E, R>) => Effect.map(Stream.runCollect(s), Chunk.toReadonlyArray)

/**
 * The contract the suite appends and decodes with.
 *
 * @since 0.1.0
 * @category fixtures
 */
export const Widgets = Contract.make("widgets", {
  Created: { name: Schema.String, size: Schema.Int },
  Renamed: { name: Schema.NonEmptyString },
  Resized: Contract.versioned({ width: Schema.Int, height: Schema.Int }, {
    version: 2,
    upcasters: { 1: Contract.upcast(Schema.Struct({ size: Schema.Int }), (v1) => ({ width: v1.size, height: v1.size })) }
  })
})

/**
 * `read(stream, { live: true })` while writers race on that stream and on others of its
 * category: the reader gets the stream's versions 1..n exactly once, in order, nothing of
 * another stream, and `CaughtUp` once, after everything written before it started.
 */
const liveStreamRace = (prefix: string) =>
  Effect.gen(function*() {
    const store = yield* EventStore
    const cat = category(prefix)
    const target = `${cat}-target`
    const before = 30
    const during = 120
    const noise = 240
    for (let i = 0; i < before; i++) yield* store.append(target, [event("Renamed", { name: `t${i + 1}` })])
    const caughtUp = yield* Deferred.make<void>()
    const reader = yield* store.read(target, { live: true }).pipe(
      Stream.tap((x) => (isStreamCaughtUp(x) ? Deferred.succeed(caughtUp, undefined) : Effect.void)),
      Stream.take(before + during + 1),
      Stream.runCollect,
      Effect.map(Chunk.toReadonlyArray),
      Effect.fork
    )
    // writers race the switch: on the target, and on 12 other streams of the category
    const onTarget = Effect.forEach(Array.from({ length: during }, (_, i) => before + i + 1), (v) =>
      store.append(target, [event("Renamed", { name: `t${v}` })]), { discard: true })
    const elsewhere = Effect.forEach(Array.from({ length: noise }, (_, i) => i), (i) =>
      store.append(`${cat}-other${i % 12}`, [event("Renamed", { name: `o${i}` })]), { concurrency: 4, discard: true })
    yield* Effect.all([onTarget, elsewhere, Deferred.await(caughtUp)], { concurrency: "unbounded", discard: true })
    const seen = yield* Fiber.join(reader)
    const markers = seen.filter(isStreamCaughtUp)
    expect(markers.length).toBe(1)
    const marker = seen.findIndex(isStreamCaughtUp)
    expect(marker, "everything written before the read started comes before CaughtUp").toBeGreaterThanOrEqual(before)
    expect(markers[0]!.version).toBe(marker)
    const events = seen.filter((x): x is RecordedEvent => !isStreamCaughtUp(x))
    expect(events.map((e) => e.stream).filter((s) => s !== target), "events of other streams").toEqual([])
    expect(events.map((e) => e.version)).toEqual(Array.from({ length: before + during }, (_, i) => i + 1))
    expect(events.map((e) => (e.data as { name: string }).name)).toEqual(Array.from({ length: before + during }, (_, i) => `t${i + 1}`))
  })

/**
 * Runs the event store conformance suite against a backend.
 *
 * @example
 * ```ts
 * import { EventStoreSuite } from "effect-chronicle/testing"
 * import { Chronicle } from "effect-chronicle"
 *
 * EventStoreSuite.conformance("memory", (config) => Chronicle.layerMemoryWith(config))
 * ```
 *
 * @since 0.1.0
 * @category suites
 */
export const conformance = (
  name: string,
  makeLayer: (config: BackendConfig) => Layer.Layer<EventStore, unknown>,
  options: SuiteOptions = {}
): void => {
  const noCommandsSent = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.gen(function*() {
      if (options.commandCount === undefined) return yield* effect
      const before = yield* Effect.orDie(options.commandCount)
      const result = yield* effect
      const after = yield* Effect.orDie(options.commandCount)
      expect(after - before, "commands sent by a rejected append").toBe(0)
      return result
    })

  describe(`EventStore conformance: ${name}`, () => {
    layer(makeLayer({ partitions: 1 }))("one partition", (it) => {
      // -------------------------------------------------------------------
      // §1 versions and expected version
      // -------------------------------------------------------------------
      describe("expected version", () => {
        const cases: ReadonlyArray<{
          readonly title: string
          readonly existing: number
          readonly expected: (n: number) => "any" | "no-stream" | "exists" | number
          readonly ok: boolean
        }> = [
          { title: "no-stream on a missing stream", existing: 0, expected: () => "no-stream", ok: true },
          { title: "no-stream on an existing stream", existing: 3, expected: () => "no-stream", ok: false },
          { title: "exact 0 on a missing stream", existing: 0, expected: () => 0, ok: true },
          { title: "exact 0 on an existing stream", existing: 3, expected: () => 0, ok: false },
          { title: "exists on a missing stream", existing: 0, expected: () => "exists", ok: false },
          { title: "exists on an existing stream", existing: 3, expected: () => "exists", ok: true },
          { title: "exact n-1", existing: 3, expected: (n) => n - 1, ok: false },
          { title: "exact n", existing: 3, expected: (n) => n, ok: true },
          { title: "exact n+1", existing: 3, expected: (n) => n + 1, ok: false },
          { title: "any on a missing stream", existing: 0, expected: () => "any", ok: true },
          { title: "any on an existing stream", existing: 3, expected: () => "any", ok: true }
        ]
        for (const c of cases) {
          it.effect(c.title, () =>
            Effect.gen(function*() {
              const store = yield* EventStore
              const stream = `${category("ev")}-1`
              if (c.existing > 0) {
                yield* store.append(stream, Array.from({ length: c.existing }, () => event("Created", { name: "w", size: 1 })))
              }
              const expected = c.expected(c.existing)
              const result = yield* Effect.either(store.append(stream, [event("Created", { name: "x", size: 2 })], { expectedVersion: expected }))
              const stored = yield* collect(store.read(stream))
              if (c.ok) {
                const r = Either.getOrThrow(result)
                expect(r.firstVersion).toBe(c.existing + 1)
                expect(r.lastVersion).toBe(c.existing + 1)
                expect(r.replayed).toBe(false)
                expect(stored.map((e) => e.version)).toEqual(Array.from({ length: c.existing + 1 }, (_, i) => i + 1))
              } else {
                const error = Either.getLeft(result).pipe((o) => (o._tag === "Some" ? o.value : undefined))
                expect(error?._tag).toBe("WrongExpectedVersion")
                if (error?._tag === "WrongExpectedVersion") {
                  expect(error.stream).toBe(stream)
                  expect(error.expected).toEqual(expected)
                  expect(error.actual).toBe(c.existing)
                }
                expect(stored.length).toBe(c.existing)
              }
            }))
        }

        it.effect("an empty batch is rejected before any I/O", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const stream = `${category("ev")}-1`
            const error = yield* noCommandsSent(Effect.flip(store.append(stream, [], { expectedVersion: "any" })))
            expect(error._tag).toBe("EmptyBatch")
            expect(yield* collect(store.read(stream))).toEqual([])
          }))

        it.effect("a missing stream reads as empty at version 0", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const stream = `${category("ev")}-none`
            expect(yield* collect(store.read(stream))).toEqual([])
            const error = yield* Effect.flip(store.append(stream, [event("Created", { name: "a", size: 1 })], { expectedVersion: 5 }))
            expect(error._tag === "WrongExpectedVersion" && error.actual).toBe(0)
          }))

        it.effect("versions continue across batches and positions match what is read", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const stream = `${category("ev")}-1`
            const a = yield* store.append(stream, [event("Created", { name: "a", size: 1 }), event("Renamed", { name: "b" })], { expectedVersion: "no-stream" })
            const b = yield* store.append(stream, [event("Renamed", { name: "c" })], { expectedVersion: 2 })
            expect([a.firstVersion, a.lastVersion, b.firstVersion, b.lastVersion]).toEqual([1, 2, 3, 3])
            const read = yield* collect(store.read(stream))
            expect(read.map((e) => e.position)).toEqual([...a.positions, ...b.positions])
            expect(read.map((e) => e.type)).toEqual(["Created", "Renamed", "Renamed"])
            expect(read.map((e) => e.data)).toEqual([{ name: "a", size: 1 }, { name: "b" }, { name: "c" }])
            expect(read.every((e) => e.stream === stream && e.eventVersion === 1)).toBe(true)
          }))
      })

      // -------------------------------------------------------------------
      // §2 idempotency
      // -------------------------------------------------------------------
      describe("idempotency", () => {
        const setup = Effect.gen(function*() {
          const store = yield* EventStore
          const cat = category("idem")
          const stream = `${cat}-1`
          yield* store.append(stream, [event("Created", { name: "first", size: 1 })])
          const batch = [event("Renamed", { name: "a" }), event("Renamed", { name: "b" }), event("Renamed", { name: "c" })]
          const original = yield* store.append(stream, batch, { expectedVersion: 1 })
          yield* store.append(stream, [event("Renamed", { name: "after" })])
          const log = yield* collect(store.readCategory(cat))
          return { store, cat, stream, batch, original, log }
        })

        const unchanged = (s: Effect.Effect.Success<typeof setup>) =>
          Effect.gen(function*() {
            const read = yield* collect(s.store.read(s.stream))
            expect(read.length).toBe(5)
            const log = yield* collect(s.store.readCategory(s.cat))
            expect(log.map((e) => e.eventId)).toEqual(s.log.map((e) => e.eventId))
          })

        it.effect("the same batch at the same versions succeeds with the original versions and positions, writing nothing", () =>
          Effect.gen(function*() {
            const s = yield* setup
            const replay = yield* s.store.append(s.stream, s.batch, { expectedVersion: 1 })
            expect(replay).toEqual({ ...s.original, replayed: true })
            expect(s.original.replayed).toBe(false)
            yield* unchanged(s)
          }))

        it.effect("a replay succeeds with expected version any, and with a now-stale expected version", () =>
          Effect.gen(function*() {
            const s = yield* setup
            const withAny = yield* s.store.append(s.stream, s.batch, { expectedVersion: "any" })
            const withStale = yield* s.store.append(s.stream, s.batch, { expectedVersion: "no-stream" })
            expect(withAny).toEqual({ ...s.original, replayed: true })
            expect(withStale).toEqual({ ...s.original, replayed: true })
            yield* unchanged(s)
          }))

        it.effect("a replay of a part of an earlier batch returns that part's versions", () =>
          Effect.gen(function*() {
            const s = yield* setup
            const tail = yield* s.store.append(s.stream, s.batch.slice(1), { expectedVersion: 1 })
            expect(tail.firstVersion).toBe(3)
            expect(tail.lastVersion).toBe(4)
            expect(tail.positions).toEqual(s.original.positions.slice(1))
            expect(tail.replayed).toBe(true)
            yield* unchanged(s)
          }))

        it.effect("a replay of events written by separate appends returns each one's own position", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const cat = category("idem_apart")
            const partitions = yield* store.partitions(cat)
            // a stream of the same partition, appended to in between: the replayed events' positions do not follow each other
            let other = 2
            while (other < 10_000 && partitionOf(String(other), partitions) !== partitionOf("1", partitions)) other++
            expect(partitionOf(String(other), partitions)).toBe(partitionOf("1", partitions))
            const a = event("Created", { name: "a", size: 1 })
            const b = event("Renamed", { name: "b" })
            const first = yield* store.append(`${cat}-1`, [a])
            yield* store.append(`${cat}-${other}`, [event("Created", { name: "between", size: 2 })])
            const second = yield* store.append(`${cat}-1`, [b], { expectedVersion: 1 })
            const replay = yield* store.append(`${cat}-1`, [a, b], { expectedVersion: "no-stream" })
            expect(replay).toEqual({ stream: `${cat}-1`, firstVersion: 1, lastVersion: 2, positions: [first.positions[0], second.positions[0]], replayed: true })
          }))

        it.effect("a batch whose first id differs is checked against the expected version: WrongExpectedVersion", () =>
          Effect.gen(function*() {
            const s = yield* setup
            const other = s.batch.map((e) => ({ ...e, eventId: crypto.randomUUID() }))
            const error = yield* Effect.flip(s.store.append(s.stream, other, { expectedVersion: 1 }))
            expect(error._tag).toBe("WrongExpectedVersion")
            if (error._tag === "WrongExpectedVersion") expect(error.actual).toBe(5)
            yield* unchanged(s)
          }))

        it.effect("a later id that differs is an IdempotencyMismatch and nothing is written", () =>
          Effect.gen(function*() {
            const s = yield* setup
            const changed = [s.batch[0]!, s.batch[1]!, event("Renamed", { name: "other" })]
            const error = yield* Effect.flip(s.store.append(s.stream, changed, { expectedVersion: 1 }))
            expect(error._tag).toBe("IdempotencyMismatch")
            if (error._tag === "IdempotencyMismatch") expect(error.eventId).toBe(changed[2]!.eventId)
            yield* unchanged(s)
          }))

        it.effect("a replay with another type at the same index is an IdempotencyMismatch", () =>
          Effect.gen(function*() {
            const s = yield* setup
            const retyped = [s.batch[0]!, { ...s.batch[1]!, type: "Created" }, s.batch[2]!]
            const error = yield* Effect.flip(s.store.append(s.stream, retyped, { expectedVersion: 1 }))
            expect(error._tag).toBe("IdempotencyMismatch")
            yield* unchanged(s)
          }))

        it.effect("an id repeated within a batch is an IdempotencyMismatch before any I/O", () =>
          Effect.gen(function*() {
            const s = yield* setup
            const id = crypto.randomUUID()
            const error = yield* noCommandsSent(
              Effect.flip(s.store.append(s.stream, [event("Renamed", { name: "x" }, id), event("Renamed", { name: "y" }, id)]))
            )
            expect(error._tag).toBe("IdempotencyMismatch")
            yield* unchanged(s)
          }))

        it.effect("an unknown first id followed by a known one is an IdempotencyMismatch", () =>
          Effect.gen(function*() {
            const s = yield* setup
            const error = yield* Effect.flip(
              s.store.append(s.stream, [event("Renamed", { name: "new" }), s.batch[0]!], { expectedVersion: "any" })
            )
            expect(error._tag).toBe("IdempotencyMismatch")
            if (error._tag === "IdempotencyMismatch") expect(error.eventId).toBe(s.batch[0]!.eventId)
            yield* unchanged(s)
          }))

        it.effect("ids are per stream: the same id may start another stream", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const cat = category("idem")
            const e = event("Created", { name: "a", size: 1 })
            const a = yield* store.append(`${cat}-a`, [e])
            const b = yield* store.append(`${cat}-b`, [e])
            expect([a.replayed, b.replayed]).toEqual([false, false])
            expect((yield* collect(store.readCategory(cat))).length).toBe(2)
          }))
      })

      // -------------------------------------------------------------------
      // Several appends sent together
      // -------------------------------------------------------------------
      describe("appendMany", () => {
        it.effect("each append checked and applied on its own, its outcome in its place; one stream's appends in the order given", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const cat = category("many")
            yield* store.append(`${cat}-b`, [event("Created", { name: "b0", size: 0 })])
            const replayed = event("Created", { name: "r", size: 1 })
            yield* store.append(`${cat}-r`, [replayed])
            const results = yield* store.appendMany([
              { stream: `${cat}-a`, events: [event("Created", { name: "a1", size: 1 })], expectedVersion: "no-stream" },
              { stream: `${cat}-b`, events: [event("Renamed", { name: "b1" })], expectedVersion: 0 },
              { stream: `${cat}-a`, events: [event("Renamed", { name: "a2" }), event("Renamed", { name: "a3" })], expectedVersion: 1 },
              { stream: "no category", events: [event("Created", { name: "x", size: 1 })] },
              { stream: `${cat}-c`, events: [] },
              { stream: `${cat}-r`, events: [replayed], expectedVersion: "no-stream" },
              { stream: `${cat}-a`, events: [event("Renamed", { name: "a4" })], expectedVersion: 3 }
            ])
            expect(results.map((r) => (Either.isRight(r) ? [r.right.stream, r.right.firstVersion, r.right.lastVersion, r.right.replayed] : r.left._tag))).toEqual([
              [`${cat}-a`, 1, 1, false],
              "WrongExpectedVersion",
              [`${cat}-a`, 2, 3, false],
              "InvalidArgument",
              "EmptyBatch",
              [`${cat}-r`, 1, 1, true],
              [`${cat}-a`, 4, 4, false]
            ])
            const a = yield* collect(store.read(`${cat}-a`))
            expect(a.map((e) => (e.data as { name: string }).name)).toEqual(["a1", "a2", "a3", "a4"])
            // what each returned is where its events are
            const positions = results.flatMap((r) => (Either.isRight(r) && !r.right.replayed && r.right.stream === `${cat}-a` ? r.right.positions : []))
            expect(positions).toEqual(a.map((e) => e.position))
            expect((yield* collect(store.read(`${cat}-b`))).length).toBe(1)
            expect(yield* collect(store.read(`${cat}-c`))).toEqual([])
            expect((yield* collect(store.readCategory(cat))).length).toBe(6)
          }))

        it.effect("many streams in one call: every append applied once, each stream contiguous; a list that is not one is refused", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const cat = category("manyx")
            const appends = Array.from({ length: 600 }, (_, i) => ({ stream: `${cat}-${i % 150}`, events: [event("Renamed", { name: `n${i}` })] }))
            const results = yield* store.appendMany(appends)
            expect(results.filter(Either.isLeft)).toEqual([])
            for (let s = 0; s < 150; s += 37) {
              const read = yield* collect(store.read(`${cat}-${s}`))
              expect(read.map((e) => (e.data as { name: string }).name)).toEqual([0, 1, 2, 3].map((k) => `n${s + 150 * k}`))
            }
            expect((yield* collect(store.readCategory(cat))).length).toBe(600)
            expect(yield* store.appendMany([])).toEqual([])
            const refused = yield* Effect.flip(store.appendMany("not a list" as never))
            expect(refused._tag).toBe("InvalidArgument")
          }))
      })

      // -------------------------------------------------------------------
      // Concurrency
      // -------------------------------------------------------------------
      it.effect("16 concurrent writers x 250 appends to one stream end at version 4000, contiguous, and in the same order in the category log", () =>
        Effect.gen(function*() {
          const store = yield* EventStore
          const cat = category("race")
          const stream = `${cat}-1`
          const writer = (w: number) =>
            Effect.gen(function*() {
              let known = 0
              let written = 0
              let attempts = 0
              let next = event("Renamed", { name: `w${w}-0` })
              while (written < 250) {
                if (++attempts > 250_000) return yield* Effect.dieMessage(`writer ${w} made no progress`)
                const r = yield* Effect.either(store.append(stream, [next], { expectedVersion: known }))
                if (Either.isRight(r)) {
                  known = r.right.lastVersion
                  written++
                  next = event("Renamed", { name: `w${w}-${written}` })
                } else if (r.left._tag === "WrongExpectedVersion") {
                  known = r.left.actual
                } else {
                  return yield* Effect.die(r.left)
                }
              }
            })
          yield* Effect.all(Array.from({ length: 16 }, (_, w) => writer(w)), { concurrency: "unbounded", discard: true })
          const read = yield* collect(store.read(stream))
          expect(read.length).toBe(4000)
          expect(read.every((e, i) => e.version === i + 1)).toBe(true)
          expect(new Set(read.map((e) => e.eventId)).size).toBe(4000)
          const perWriter = new Map<string, Array<number>>()
          for (const e of read) {
            const [w, n] = String((e.data as { name: string }).name).split("-")
            perWriter.set(w!, [...(perWriter.get(w!) ?? []), Number(n)])
          }
          expect(perWriter.size).toBe(16)
          for (const ns of perWriter.values()) expect(ns).toEqual(Array.from({ length: 250 }, (_, i) => i))
          const log = yield* collect(store.readCategory(cat))
          expect(log.map((e) => e.eventId)).toEqual(read.map((e) => e.eventId))
        }), 120_000)

      // -------------------------------------------------------------------
      // Reading a stream
      // -------------------------------------------------------------------
      describe("read", () => {
        const setup = Effect.gen(function*() {
          const store = yield* EventStore
          const stream = `${category("read")}-1`
          // 600 events: more than two pages of 256
          for (let i = 0; i < 6; i++) {
            yield* store.append(stream, Array.from({ length: 100 }, (_, j) => event("Renamed", { name: `n${i * 100 + j + 1}` })), {
              expectedVersion: i * 100
            })
          }
          return { store, stream }
        })
        const versions = (xs: ReadonlyArray<RecordedEvent>) => xs.map((e) => e.version)
        const range = (from: number, to: number) =>
          from <= to ? Array.from({ length: to - from + 1 }, (_, i) => from + i) : Array.from({ length: from - to + 1 }, (_, i) => from - i)

        it.effect("forward, backward, from a version, with a limit", () =>
          Effect.gen(function*() {
            const { store, stream } = yield* setup
            expect(versions(yield* collect(store.read(stream)))).toEqual(range(1, 600))
            expect(versions(yield* collect(store.read(stream, { direction: "backward" })))).toEqual(range(600, 1))
            expect(versions(yield* collect(store.read(stream, { from: 300 })))).toEqual(range(300, 600))
            expect(versions(yield* collect(store.read(stream, { from: 300, direction: "backward" })))).toEqual(range(300, 1))
            expect(versions(yield* collect(store.read(stream, { from: 10, limit: 3 })))).toEqual([10, 11, 12])
            expect(versions(yield* collect(store.read(stream, { direction: "backward", limit: 300 })))).toEqual(range(600, 301))
            expect(versions(yield* collect(store.read(stream, { from: 601 })))).toEqual([])
            expect(versions(yield* collect(store.read(stream, { from: 900, direction: "backward", limit: 2 })))).toEqual([600, 599])
            expect(versions(yield* collect(store.read(stream, { limit: 0 })))).toEqual([])
            const data = (yield* collect(store.read(stream, { from: 257, limit: 1 })))[0]?.data
            expect(data).toEqual({ name: "n257" })
          }))

        it.effect("reads are lazy: taking 5 events of a long stream stops early", () =>
          Effect.gen(function*() {
            const { store, stream } = yield* setup
            expect(versions(yield* collect(store.read(stream).pipe(Stream.take(5))))).toEqual([1, 2, 3, 4, 5])
          }))

        it.effect("bad read options are typed errors", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const bad = [
              store.read("no_dash"),
              store.read("bad category-1"),
              store.read("ok-1", { from: 0 }),
              store.read("ok-1", { limit: -1 }),
              store.read("ok-1", { direction: "sideways" as "forward" }),
              store.read("ok-1", { live: true, direction: "backward" } as { live: true }),
              store.read("ok-1", { live: true, limit: 3 })
            ]
            for (const s of bad) expect((yield* Effect.flip(Stream.runDrain(s)))._tag).toBe("InvalidArgument")
          }))
      })

      describe("live read of one stream", () => {
        it.effect("catches up, emits CaughtUp once, then follows the stream while others are written: none missing, none twice, none foreign", () =>
          liveStreamRace("lives"))

        it.effect("a stream not yet written: CaughtUp at version 0, then its first events; `from` skips what comes before it", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const stream = `${category("livenew")}-1`
            const caughtUp = yield* Deferred.make<number>()
            const reader = yield* store.read(stream, { live: true }).pipe(
              Stream.tap((x) => (isStreamCaughtUp(x) ? Deferred.succeed(caughtUp, x.version) : Effect.void)),
              Stream.take(4),
              Stream.runCollect,
              Effect.map(Chunk.toReadonlyArray),
              Effect.fork
            )
            expect(yield* Deferred.await(caughtUp)).toBe(0)
            yield* store.append(stream, [event("Renamed", { name: "a" }), event("Renamed", { name: "b" })])
            yield* store.append(stream, [event("Renamed", { name: "c" })])
            const seen = yield* Fiber.join(reader)
            expect(seen.map((x) => (isStreamCaughtUp(x) ? "CaughtUp" : x.version))).toEqual(["CaughtUp", 1, 2, 3])
            const fromTwo = yield* store.read(stream, { live: true, from: 2 }).pipe(Stream.take(3), Stream.runCollect, Effect.map(Chunk.toReadonlyArray))
            expect(fromTwo.map((x) => (isStreamCaughtUp(x) ? `CaughtUp@${x.version}` : x.version))).toEqual([2, 3, "CaughtUp@3"])
          }))
      })

      // -------------------------------------------------------------------
      // §3 limits and bad input
      // -------------------------------------------------------------------
      describe("limits and bad input", () => {
        it.effect("a batch over maxBatchEvents is rejected before any I/O; exactly 1,000 events succeed", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            expect(store.limits.maxBatchEvents).toBe(1000)
            const stream = `${category("limit")}-1`
            const over = Array.from({ length: 1001 }, () => event("Renamed", { name: "x" }))
            const error = yield* noCommandsSent(Effect.flip(store.append(stream, over)))
            expect(error._tag).toBe("BatchTooLarge")
            expect(yield* collect(store.read(stream))).toEqual([])
            const exact = yield* store.append(stream, over.slice(0, 1000), { expectedVersion: "no-stream" })
            expect([exact.firstVersion, exact.lastVersion, exact.positions.length]).toEqual([1, 1000, 1000])
            expect((yield* collect(store.read(stream))).length).toBe(1000)
          }))

        it.effect("an event over maxEventBytes is rejected before any I/O; one exactly at the limit is accepted", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const limit = store.limits.maxEventBytes
            const stream = `${category("limit")}-1`
            // {"name":"…"} is 11 bytes around the string; "é" is 2 bytes in UTF-8
            const at = event("Renamed", { name: "é" + "a".repeat(limit - 13) })
            const over = event("Renamed", { name: "é" + "a".repeat(limit - 12) })
            const error = yield* noCommandsSent(Effect.flip(store.append(stream, [over])))
            expect(error._tag).toBe("EventTooLarge")
            if (error._tag === "EventTooLarge") expect([error.bytes, error.limit]).toEqual([limit + 1, limit])
            expect(yield* collect(store.read(stream))).toEqual([])
            const ok = yield* store.append(stream, [at])
            expect(ok.lastVersion).toBe(1)
            const read = yield* collect(store.read(stream))
            expect(read[0]!.data).toEqual(at.data)
          }))

        it.effect("a batch over maxBatchBytes is rejected before any I/O", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const stream = `${category("limit")}-1`
            const per = Math.floor(store.limits.maxEventBytes / 2)
            const count = Math.floor(store.limits.maxBatchBytes / per) + 1
            const batch = Array.from({ length: count }, () => event("Renamed", { name: "a".repeat(per - 11) }))
            const error = yield* noCommandsSent(Effect.flip(store.append(stream, batch)))
            expect(error._tag).toBe("BatchTooLarge")
            expect(yield* collect(store.read(stream))).toEqual([])
          }))

        it.effect("an event whose fields fail its schema is rejected before I/O with an error naming the field", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const widgets = yield* forContract(Widgets)
            const id = uid()
            const error = yield* noCommandsSent(
              Effect.flip(widgets.append(id, [Widgets.make.Created({ name: "ok", size: 1.5 })]))
            )
            expect(error._tag).toBe("InvalidEvent")
            if (error._tag === "InvalidEvent") {
              expect(error.path).toBe("size")
              expect(error.type).toBe("Created")
              expect(error.message).toContain("size")
            }
            const empty = yield* noCommandsSent(Effect.flip(widgets.append(id, [Widgets.make.Renamed({ name: "" })])))
            expect(empty._tag === "InvalidEvent" && empty.path).toBe("name")
            expect(yield* collect(store.read(`widgets-${id}`))).toEqual([])
          }))

        it.effect("typed appendMany: each append encoded and checked on its own, its outcome in its place; an entity's appends in the order given", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const widgets = yield* forContract(Widgets)
            const a = uid()
            const b = uid()
            const unreadable = {
              get entityId(): string {
                throw new Error("no id")
              },
              events: []
            }
            const results = yield* widgets.appendMany([
              { entityId: a, events: [Widgets.make.Created({ name: "a", size: 1 })], expectedVersion: "no-stream" },
              { entityId: b, events: [Widgets.make.Created({ name: "b", size: 1.5 })] },
              null as never,
              unreadable as never,
              { entityId: a, events: [Widgets.make.Renamed({ name: "a2" })], expectedVersion: 1 },
              { entityId: a, events: [Widgets.make.Renamed({ name: "a3" })], expectedVersion: 1 },
              { entityId: b, events: [Widgets.make.Renamed({ name: "b1" })], correlationId: "corr-b" }
            ])
            expect(results.map((r) => (Either.isRight(r) ? [r.right.firstVersion, r.right.lastVersion] : r.left._tag))).toEqual([
              [1, 1],
              "InvalidEvent",
              "InvalidArgument",
              "InvalidArgument",
              [2, 2],
              "WrongExpectedVersion",
              [1, 1]
            ])
            const unread = results[3]!
            expect(Either.isLeft(unread) && unread.left.message).toContain("no id")
            expect((yield* collect(widgets.read(a))).map((r) => (r.event as { name: string }).name)).toEqual(["a", "a2"])
            const readB = yield* collect(widgets.read(b))
            expect(readB.map((r) => r.event._tag)).toEqual(["Renamed"])
            expect(readB[0]!.correlationId).toBe("corr-b")
            expect((yield* collect(store.read(`widgets-${b}`))).length).toBe(1)
            const refused = yield* Effect.flip(widgets.appendMany({} as never))
            expect(refused._tag).toBe("InvalidArgument")
          }))

        it.effect("malformed raw input is a typed error before any I/O", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const ok = event("Renamed", { name: "x" })
            const cases: ReadonlyArray<readonly [string, ReadonlyArray<NewEvent>, unknown, string]> = [
              ["nodash", [ok], "any", "InvalidArgument"],
              ["b d-1", [ok], "any", "InvalidArgument"],
              [`${category("bad")}-`, [ok], "any", "InvalidArgument"],
              [`${category("bad")}-1`, [ok], -1, "InvalidArgument"],
              [`${category("bad")}-1`, [ok], 1.5, "InvalidArgument"],
              [`${category("bad")}-1`, [ok], "latest", "InvalidArgument"],
              [`${category("bad")}-1`, [{ ...ok, eventId: "not-a-uuid" }], "any", "InvalidEvent"],
              [`${category("bad")}-1`, [{ ...ok, type: "" }], "any", "InvalidEvent"],
              [`${category("bad")}-1`, [{ ...ok, data: [1, 2] }], "any", "InvalidEvent"],
              [`${category("bad")}-1`, [{ ...ok, data: { big: 1n } }], "any", "InvalidEvent"],
              [`${category("bad")}-1`, [{ ...ok, eventVersion: 0 }], "any", "InvalidEvent"],
              [`${category("bad")}-1`, [null as unknown as NewEvent], "any", "InvalidEvent"]
            ]
            for (const [stream, events, expectedVersion, tag] of cases) {
              const error = yield* noCommandsSent(
                Effect.flip(store.append(stream, events, { expectedVersion: expectedVersion as "any" }))
              )
              expect(error._tag, `${stream} ${JSON.stringify(expectedVersion)}`).toBe(tag)
            }
          }))
      })

      // -------------------------------------------------------------------
      // Typed reads, upcasting and decode failures
      // -------------------------------------------------------------------
      describe("typed reads", () => {
        it.effect("events round-trip through a contract, with their metadata", () =>
          Effect.gen(function*() {
            const widgets = yield* forContract(Widgets)
            const id = uid()
            const eventIds = [crypto.randomUUID(), crypto.randomUUID()]
            yield* widgets.append(id, [Widgets.make.Created({ name: "w", size: 3 }), Widgets.make.Resized({ width: 4, height: 5 })], {
              expectedVersion: "no-stream",
              eventIds,
              correlationId: "corr-1",
              causationId: "cause-1",
              traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            })
            const read = yield* collect(widgets.read(id))
            expect(read.map((r) => r.event)).toEqual([
              { _tag: "Created", name: "w", size: 3 },
              { _tag: "Resized", width: 4, height: 5 }
            ])
            expect(read.map((r) => r.eventId)).toEqual(eventIds)
            expect(read.map((r) => r.eventVersion)).toEqual([1, 2])
            expect(read.every((r) => r.correlationId === "corr-1" && r.causationId === "cause-1")).toBe(true)
            expect(read[0]!.traceparent).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            expect(read[0]!.stream).toBe(`widgets-${id}`)
            const envelope = Schema.decodeUnknownSync(Envelope.Envelope)(Schema.encodeSync(Envelope.Envelope)(read[0]!))
            expect(envelope.eventId).toBe(eventIds[0])
          }))

        it.effect("a stored older version is upcast to today's shape", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const widgets = yield* forContract(Widgets)
            const id = uid()
            yield* store.append(`widgets-${id}`, [{ eventId: crypto.randomUUID(), type: "Resized", data: { size: 7 }, eventVersion: 1 }])
            const read = yield* collect(widgets.read(id))
            expect(read.map((r) => r.event)).toEqual([{ _tag: "Resized", width: 7, height: 7 }])
            expect(read[0]!.eventVersion).toBe(1)
          }))

        it.effect("a stored event that fails to decode is a typed error with its stream and version", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const widgets = yield* forContract(Widgets)
            const id = uid()
            const stream = `widgets-${id}`
            yield* store.append(stream, [
              { eventId: crypto.randomUUID(), type: "Created", data: { name: "ok", size: 1 } },
              { eventId: crypto.randomUUID(), type: "Created", data: { name: "bad", size: "large" } }
            ])
            const error = yield* Effect.flip(Stream.runDrain(widgets.read(id)))
            expect(error._tag).toBe("EventDecodeError")
            if (error._tag === "EventDecodeError") {
              expect(error.stream).toBe(stream)
              expect(error.version).toBe(2)
              expect(error.type).toBe("Created")
              expect(error.message).toContain("size")
            }
            yield* store.append(stream, [{ eventId: crypto.randomUUID(), type: "Exploded", data: {} }])
            const unknown = yield* Effect.flip(Stream.runDrain(widgets.read(id, { from: 3 })))
            expect(unknown._tag).toBe("UnknownEventType")
            if (unknown._tag === "UnknownEventType") expect([unknown.stream, unknown.version, unknown.type]).toEqual([stream, 3, "Exploded"])
          }))

        it.effect("an invalid contract is a typed error", () =>
          Effect.gen(function*() {
            const Bad = Contract.make("bad name" as "bad", { Ok: { a: Schema.String } })
            const error = yield* Effect.flip(forContract(Bad))
            expect(error._tag).toBe("InvalidContract")
          }))
      })

      // -------------------------------------------------------------------
      // §4 the category log
      // -------------------------------------------------------------------
      describe("category", () => {
        it.effect("readCategory returns every event in commit order and resumes after a cursor", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const cat = category("cat")
            expect(yield* store.partitions(cat)).toBe(1)
            const appended: Array<AppendResult> = []
            for (let i = 0; i < 30; i++) {
              appended.push(yield* store.append(`${cat}-${i % 4}`, [event("Renamed", { name: `e${i}` })]))
            }
            const all = yield* collect(store.readCategory(cat, { pageSize: 7 }))
            expect(all.map((e) => (e.data as { name: string }).name)).toEqual(Array.from({ length: 30 }, (_, i) => `e${i}`))
            expect(all.map((e) => e.position)).toEqual(appended.map((a) => a.positions[0]))
            let cursor = Envelope.startCursor(1)
            for (const e of all.slice(0, 12)) cursor = Envelope.advance(cursor, e.position)
            const rest = yield* collect(store.readCategory(cat, { from: cursor, pageSize: 5 }))
            expect(rest.map((e) => e.eventId)).toEqual(all.slice(12).map((e) => e.eventId))
            expect(yield* collect(store.readCategory(cat, { from: "end" }))).toEqual([])
            const badCursor = yield* Effect.flip(Stream.runDrain(store.readCategory(cat, { from: ["0-0", "0-0"] })))
            expect(badCursor._tag).toBe("InvalidArgument")
          }))

        it.effect("live: catches up, signals CaughtUp once, then follows with no gap and no duplicate", () =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const cat = category("live")
            const appendN = (from: number, n: number) =>
              Effect.forEach(Array.from({ length: n }, (_, i) => from + i), (i) =>
                store.append(`${cat}-${i % 5}`, [event("Renamed", { name: `e${i}` })]), { concurrency: 4, discard: true })
            yield* appendN(0, 50)
            const caughtUp = yield* Deferred.make<CaughtUp>()
            const reader = yield* store.readCategory(cat, { live: true, pageSize: 16 }).pipe(
              Stream.tap((x) => (isCaughtUp(x) ? Deferred.succeed(caughtUp, x) : Effect.void)),
              Stream.take(151),
              Stream.runCollect,
              Effect.map(Chunk.toReadonlyArray),
              Effect.fork
            )
            // racing the switch: these may land before or after CaughtUp
            yield* appendN(50, 50)
            yield* Deferred.await(caughtUp)
            yield* appendN(100, 50)
            const seen = yield* Fiber.join(reader)
            const markers = seen.filter(isCaughtUp)
            expect(markers.length).toBe(1)
            const events = seen.filter((x): x is RecordedEvent => !isCaughtUp(x))
            const names = events.map((e) => (e.data as { name: string }).name)
            expect(new Set(names).size).toBe(150)
            expect(names.slice().sort()).toEqual(Array.from({ length: 150 }, (_, i) => `e${i}`).sort())
            const markerIndex = seen.findIndex(isCaughtUp)
            expect(markerIndex).toBeGreaterThanOrEqual(50)
            const before = new Set(seen.slice(0, markerIndex).map((e) => (e as RecordedEvent).eventId))
            for (let i = 0; i < 50; i++) expect(before.has(events.find((e) => (e.data as { name: string }).name === `e${i}`)!.eventId)).toBe(true)
            const order = events.map((e) => e.position.entryId)
            expect(order).toEqual(order.slice().sort(compareIds))
          }))
      })
    })

    layer(makeLayer({ partitions: 4 }))("four partitions", (it) => {
      it.effect("readCategory merges 4 partitions: every event once, per-partition and per-stream order, resumable from a cursor", () =>
        Effect.gen(function*() {
          const store = yield* EventStore
          const cat = category("p4")
          expect(yield* store.partitions(cat)).toBe(4)
          const results: Array<AppendResult> = []
          for (let i = 0; i < 120; i++) {
            results.push(yield* store.append(`${cat}-s${i % 12}`, [event("Renamed", { name: `e${i}` })]))
          }
          const used = new Set(results.map((r) => r.positions[0]!.partition))
          expect(used.size).toBeGreaterThan(1)
          const all = yield* collect(store.readCategory(cat, { pageSize: 8 }))
          expect(all.length).toBe(120)
          expect(new Set(all.map((e) => e.eventId)).size).toBe(120)
          for (let p = 0; p < 4; p++) {
            const ids = all.filter((e) => e.position.partition === p).map((e) => e.position.entryId)
            expect(ids).toEqual(ids.slice().sort(compareIds))
          }
          for (let s = 0; s < 12; s++) {
            const vs = all.filter((e) => e.stream === `${cat}-s${s}`).map((e) => e.version)
            expect(vs).toEqual(Array.from({ length: 10 }, (_, i) => i + 1))
          }
          // one stream always lives in one partition
          for (let s = 0; s < 12; s++) {
            expect(new Set(all.filter((e) => e.stream === `${cat}-s${s}`).map((e) => e.position.partition)).size).toBe(1)
          }
          let cursor = Envelope.startCursor(4)
          for (const e of all.slice(0, 50)) cursor = Envelope.advance(cursor, e.position)
          const rest = yield* collect(store.readCategory(cat, { from: cursor, pageSize: 3 }))
          const expected = all.filter((e) => Envelope.advance(cursor, e.position) !== cursor)
          expect(rest.map((e) => e.eventId).sort()).toEqual(expected.map((e) => e.eventId).sort())
          expect(rest.length + 50).toBe(120)
        }))

      it.effect("a live read of one stream over 4 partitions, racing writers of other streams: none missing, none twice, none foreign", () =>
        liveStreamRace("lives4"))

      it.effect("end() is the category's end when called: a live read from it gets exactly what is appended after, from: \"end\" the end when the read starts", () =>
        Effect.gen(function*() {
          const store = yield* EventStore
          const cat = category("end")
          for (let i = 0; i < 20; i++) yield* store.append(`${cat}-${i % 6}`, [event("Renamed", { name: `old${i}` })])
          const end = yield* store.end(cat)
          expect(end.length).toBe(4)
          // appended after end() and before the read is even built: the read must get them
          for (let i = 0; i < 8; i++) yield* store.append(`${cat}-${i % 6}`, [event("Renamed", { name: `new${i}` })])
          const names = (xs: ReadonlyArray<RecordedEvent | CaughtUp>) =>
            xs.filter((x): x is RecordedEvent => !isCaughtUp(x)).map((e) => (e.data as { name: string }).name).sort()
          const fromEnd = yield* collect(store.readCategory(cat, { from: end, live: true }).pipe(Stream.take(9)))
          expect(names(fromEnd)).toEqual(Array.from({ length: 8 }, (_, i) => `new${i}`).sort())
          expect(fromEnd.filter(isCaughtUp).length).toBe(1)
          // "end": what is there when the read starts is skipped; what comes after CaughtUp is seen
          const caughtUp = yield* Deferred.make<void>()
          const reader = yield* store.readCategory(cat, { from: "end", live: true }).pipe(
            Stream.tap((x) => (isCaughtUp(x) ? Deferred.succeed(caughtUp, undefined) : Effect.void)),
            Stream.take(4),
            Stream.runCollect,
            Effect.map(Chunk.toReadonlyArray),
            Effect.fork
          )
          yield* Deferred.await(caughtUp)
          for (let i = 0; i < 3; i++) yield* store.append(`${cat}-${i}`, [event("Renamed", { name: `later${i}` })])
          const later = yield* Fiber.join(reader)
          expect(isCaughtUp(later[0])).toBe(true)
          expect(names(later)).toEqual(["later0", "later1", "later2"])
          const bad = yield* Effect.flip(store.end("no such-category"))
          expect(bad._tag).toBe("InvalidArgument")
        }))

      it.effect("live over 4 partitions: nothing missing, nothing twice", () =>
        Effect.gen(function*() {
          const store = yield* EventStore
          const cat = category("p4live")
          for (let i = 0; i < 40; i++) yield* store.append(`${cat}-${i % 9}`, [event("Renamed", { name: `e${i}` })])
          const caughtUp = yield* Deferred.make<void>()
          const reader = yield* store.readCategory(cat, { live: true }).pipe(
            Stream.tap((x) => (isCaughtUp(x) ? Deferred.succeed(caughtUp, undefined) : Effect.void)),
            Stream.filter((x): x is RecordedEvent => !isCaughtUp(x)),
            Stream.take(80),
            Stream.runCollect,
            Effect.fork
          )
          yield* Deferred.await(caughtUp)
          yield* Effect.forEach(Array.from({ length: 40 }, (_, i) => i + 40), (i) =>
            store.append(`${cat}-${i % 9}`, [event("Renamed", { name: `e${i}` })]), { concurrency: 8, discard: true })
          const seen = Chunk.toReadonlyArray(yield* Fiber.join(reader))
          expect(new Set(seen.map((e) => (e.data as { name: string }).name)).size).toBe(80)
          for (let s = 0; s < 9; s++) {
            const vs = seen.filter((e) => e.stream === `${cat}-${s}`).map((e) => e.version)
            expect(vs).toEqual(vs.slice().sort((a, b) => a - b))
          }
        }))
    })
  })
}

const compareIds = (a: string, b: string) => {
  const [am, as] = a.split("-").map(Number) as [number, number]
  const [bm, bs] = b.split("-").map(Number) as [number, number]
  return am !== bm ? am - bm : as - bs
}
