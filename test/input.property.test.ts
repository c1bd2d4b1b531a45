/**
 * The store writes only what it can read back (docs/semantics.md §3): for arbitrary input
 * through the raw and the typed path, on both backends, an append either fails with a
 * typed error before any I/O, or what is read back equals the JSON round trip of what was
 * given. Never a throw, never a defect. Entity ids that are not well-formed Unicode are
 * refused the same way on both backends, and two distinct accepted ids never share a stream.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Cause, Chunk, Effect, Exit, FastCheck as fc, type Layer, Schema, Stream } from "effect"
import { Chronicle, Contract, EventStore } from "effect-chronicle"
import { Redis } from "ioredis"
import { afterAll } from "vitest"
import { figures } from "./support/figures.js"
import { commandCount, redisStore, redisUrl, uniquePrefix } from "./support/redis.js"

const url = redisUrl()
const probe = new Redis(url)
afterAll(() => probe.quit())

class Point {
  constructor(readonly x: number) {}
}

/** Values that JSON keeps, changes or cannot write, at any depth. */
const leaf: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(NaN, Infinity, -Infinity, -0, 0, undefined, null, true, false, "", "\uD800", "a\uDC00b", "\uD83D\uDE00"),
  fc.double(),
  fc.integer(),
  fc.string({ unit: "binary", maxLength: 12 }),
  fc.date({ noInvalidDate: false }),
  fc.string({ maxLength: 4 }).map((s) => new String(s)),
  fc.integer().map((n) => new Number(n)),
  fc.boolean().map((b) => new Boolean(b)),
  fc.oneof(fc.constant(undefined), fc.constant(null), fc.string({ maxLength: 4 }), fc.constant({ a: 1 }), fc.constant(NaN)).map((v) => ({ toJSON: () => v })),
  fc.bigInt(),
  fc.constant(Symbol("s")),
  fc.constant(() => 1),
  fc.constant(new Map([["k", 1]])),
  fc.constant(new Set([1])),
  fc.constant(new Point(1)),
  fc.constant(Object.assign(Object.create(null) as object, { bare: 1 })),
  fc.constant("x".repeat(70_000)),
  fc.constant("y".repeat(1_200_000))
)

const { value: anyValue } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof({ depthSize: "small", withCrossShrink: true }, leaf, fc.array(tie("value"), { maxLength: 4 }), fc.dictionary(fc.string({ unit: "binary", maxLength: 6 }), tie("value"), { maxKeys: 4 }))
}))

/** Data as given to a raw append: mostly objects, sometimes anything at all. */
const rawData = fc.oneof(
  { weight: 4, arbitrary: fc.dictionary(fc.string({ unit: "binary", maxLength: 6 }), anyValue, { maxKeys: 5 }) },
  { weight: 1, arbitrary: anyValue }
)

const Odd = Contract.make("odd", {
  Measured: {
    value: Schema.Number,
    label: Schema.String,
    extra: Schema.Unknown,
    at: Schema.optional(Schema.DateFromSelf),
    toJSON: Schema.optional(Schema.Unknown)
  }
})

const sometimes = <A>(arb: fc.Arbitrary<A>) => fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb })

const measured = fc.record({
  value: fc.oneof({ weight: 5, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) }, { weight: 1, arbitrary: fc.constantFrom(NaN, Infinity, -Infinity, -0) }),
  label: fc.string({ unit: "binary", maxLength: 12 }),
  extra: fc.oneof({ weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3 }) }, { weight: 1, arbitrary: anyValue }),
  at: sometimes(fc.date()),
  toJSON: sometimes(fc.oneof(fc.integer(), fc.constant(() => undefined)))
}, { requiredKeys: ["value", "label", "extra"] })

const entityId = fc.oneof(
  fc.string({ unit: "binary", minLength: 1, maxLength: 8 }),
  fc.constantFrom("\uD800", "\uD801", "\uDC00", "a\uD800", "\uD83D\uDE00", "\uFFFD", "\uFFFD\uFFFD")
)

/** Well-formed Unicode: no lone surrogate (as String.prototype.isWellFormed, Node 20). */
const wellFormed = (s: string) => (s as unknown as { isWellFormed: () => boolean }).isWellFormed()

const jsonRoundTrip = (u: unknown) => JSON.parse(JSON.stringify(u)) as unknown

const typedErrors = new Set(["InvalidEvent", "InvalidArgument", "EventTooLarge", "BatchTooLarge"])

/** Outcomes per backend and property, printed at the end: a property that only ever refuses proves little. */
const outcomes = new Map<string, { stored: number; refused: number }>()
const count = (key: string, stored: boolean) => {
  const o = outcomes.get(key) ?? { stored: 0, refused: 0 }
  if (stored) o.stored++
  else o.refused++
  outcomes.set(key, o)
}
afterAll(() => {
  figures({ property: "append-reads-back", outcomes: Object.fromEntries(outcomes) })
  for (const [key, o] of outcomes) {
    expect(o.stored, `${key}: some inputs are stored`).toBeGreaterThan(20)
    expect(o.refused, `${key}: some inputs are refused`).toBeGreaterThan(20)
  }
})

/** The append's outcome, checked: a success, or one typed failure with no I/O; never a defect. */
const checkedAppend = <E, R>(append: Effect.Effect<EventStore.AppendResult, E, R>, io: Effect.Effect<number> | undefined) =>
  Effect.gen(function*() {
    const before = io === undefined ? 0 : yield* io
    // the append is built inside the Effect: even a throw while making it would show as a defect here
    const exit = yield* Effect.exit(Effect.suspend(() => append))
    if (Exit.isSuccess(exit)) return exit.value
    expect(Cause.isDieType(exit.cause) || Cause.dieOption(exit.cause)._tag === "Some", `a defect: ${Cause.pretty(exit.cause)}`).toBe(false)
    const error = Cause.failureOption(exit.cause)
    expect(error._tag).toBe("Some")
    const tag = (error._tag === "Some" ? (error.value as { _tag: string })._tag : "none")
    expect(typedErrors.has(tag), `typed error ${tag}`).toBe(true)
    if (io !== undefined) expect((yield* io) - before, `commands sent by a refused append (${tag})`).toBe(0)
    return undefined
  })

const properties = (name: string, makeLayer: () => Layer.Layer<EventStore.EventStore, unknown>, io: Effect.Effect<number> | undefined) =>
  layer(makeLayer())(`append only what reads back: ${name}`, (it) => {
    let n = 0
    const fresh = (cat: string) => `${cat}-${(n++).toString(36)}`

    it.effect.prop("raw path: a typed error before I/O, or the read-back equals the data's JSON round trip", { data: rawData }, ({ data }) =>
      Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const stream = fresh("raw")
        const result = yield* checkedAppend(store.append(stream, [{ eventId: crypto.randomUUID(), type: "Any", data: data as object }]), io)
        count(`${name} raw`, result !== undefined)
        if (result === undefined) return
        const read = Chunk.toReadonlyArray(yield* Stream.runCollect(store.read(stream)))
        expect(read.length).toBe(1)
        expect(read[0]!.data).toStrictEqual(jsonRoundTrip(data))
      }), { fastCheck: { numRuns: 300 } })

    it.effect.prop("typed path: a typed error before I/O, or the typed read-back equals the event's JSON round trip", { fields: measured }, ({ fields }) =>
      Effect.gen(function*() {
        const odd = yield* EventStore.forContract(Odd)
        const id = (n++).toString(36)
        const result = yield* checkedAppend(Effect.suspend(() => odd.append(id, [Odd.make.Measured(fields as never)])), io)
        count(`${name} typed`, result !== undefined)
        if (result === undefined) return
        const read = Chunk.toReadonlyArray(yield* Stream.runCollect(odd.read(id)))
        expect(read.length).toBe(1)
        expect(read[0]!.event).toEqual(jsonRoundTrip({ _tag: "Measured", ...fields }))
      }), { fastCheck: { numRuns: 300 } })

    it.effect.prop("entity ids: refused (InvalidArgument, before I/O) unless well-formed; two distinct accepted ids are two streams", { a: entityId, b: entityId }, ({ a, b }) =>
      Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const cat = `ids${(n++).toString(36)}`
        const ra = yield* checkedAppend(store.append(`${cat}-${a}`, [{ eventId: crypto.randomUUID(), type: "A", data: { id: a } }], { expectedVersion: "no-stream" }), io)
        expect(ra === undefined, `${JSON.stringify(a)} accepted iff well-formed`).toBe(!wellFormed(a))
        count(`${name} ids`, ra !== undefined)
        if (a === b) return
        const rb = yield* checkedAppend(store.append(`${cat}-${b}`, [{ eventId: crypto.randomUUID(), type: "B", data: { id: b } }], { expectedVersion: "no-stream" }), io)
        expect(rb === undefined).toBe(!wellFormed(b))
        for (const [id, result, type] of [[a, ra, "A"], [b, rb, "B"]] as const) {
          if (result === undefined) continue
          const read = Chunk.toReadonlyArray(yield* Stream.runCollect(store.read(`${cat}-${id}`)))
          expect(read.map((e) => [e.stream, e.type, e.version])).toEqual([[`${cat}-${id}`, type, 1]])
        }
        const all = Chunk.toReadonlyArray(yield* Stream.runCollect(store.readCategory(cat)))
        expect(all.map((e) => e.stream).sort()).toEqual([ra, rb].flatMap((r, i) => (r === undefined ? [] : [`${cat}-${i === 0 ? a : b}`])).sort())
      }), { fastCheck: { numRuns: 200 } })
  })

describe("bad input never reaches the store", () => {
  properties("in memory", () => Chronicle.layerMemoryWith({ partitions: 4 }), undefined)
  properties("on Redis", () => redisStore(url, { prefix: uniquePrefix("prop"), partitions: 4 }), commandCount(probe))
})
