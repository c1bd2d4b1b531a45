/**
 * The conformance suite of aggregates, snapshots and projections (docs/semantics.md §2, §7, §8),
 * run against every backend.
 *
 * @since 0.1.0
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Option, Random, Schedule, Schema, Stream } from "effect"
import * as Aggregate from "../Aggregate.js"
import type { ConsumerGroups } from "../ConsumerGroups.js"
import * as Contract from "../Contract.js"
import { EventStore } from "../EventStore.js"
import * as Producer from "../Producer.js"
import * as Projection from "../Projection.js"
import { SnapshotStore } from "../Snapshots.js"
import type { BackendConfig } from "./EventStoreSuite.js"

type Services = EventStore | ConsumerGroups | SnapshotStore | Projection.ProjectionStore

const uid = () => Math.random().toString(36).slice(2, 8)

const counterContract = () => Contract.make(`agg_${uid()}`, { Added: { n: Schema.Int }, Huge: { blob: Schema.String } })

const State = Schema.Struct({ total: Schema.Int, count: Schema.Int, last: Schema.Int })
type State = typeof State.Type

const Command = Schema.Union(
  Schema.TaggedStruct("Add", { values: Schema.Array(Schema.Int) }),
  Schema.TaggedStruct("Explode", { bytes: Schema.Int })
)

const counter = (contract: ReturnType<typeof counterContract>, stateVersion = 1) =>
  Aggregate.make({
    contract,
    command: Command,
    initialState: { total: 0, count: 0, last: 0 } as State,
    evolve: (s: State, e: Contract.Event<typeof contract>): State =>
      e._tag === "Added" ? { total: s.total + e.n, count: s.count + 1, last: e.n } : s,
    decide: (command: typeof Command.Type) =>
      Effect.succeed(
        command._tag === "Add"
          ? command.values.map((n) => contract.make.Added({ n }))
          : [contract.make.Added({ n: 1 }), contract.make.Huge({ blob: "x".repeat(command.bytes) })]
      ),
    snapshotEvery: 100,
    stateSchema: State,
    stateVersion
  })

/**
 * Runs the aggregate, snapshot and projection conformance suite against a backend.
 *
 * @since 0.1.0
 * @category suites
 */
export const conformance = (name: string, makeLayer: (config: BackendConfig) => Layer.Layer<Services, unknown>): void => {
  const withBackend = <A, E>(partitions: number, f: Effect.Effect<A, E, Services>) =>
    Effect.scoped(Effect.flatMap(Layer.build(makeLayer({ partitions })), (ctx) => Effect.provide(f, ctx as Context.Context<Services>)))

  describe(`Aggregate conformance: ${name}`, () => {
    it.live("snapshots across batches of 1 to 7 events: load equals a full replay, and no snapshot passes the stream", () =>
      withBackend(1, Effect.gen(function*() {
        const contract = counterContract()
        const agg = counter(contract)
        const replayOnly = { ...agg, snapshotEvery: undefined }
        const snapshots = yield* SnapshotStore
        const stream = `${contract.name}-c1`
        let version = 0
        let usedSnapshot = false
        while (version < 1000) {
          const size = yield* Random.nextIntBetween(1, 8)
          const values = yield* Effect.forEach(Array.from({ length: size }), () => Random.nextIntBetween(-50, 50))
          const handled = yield* Aggregate.handle(agg, "c1", { _tag: "Add", values })
          expect(handled.version).toBe(version + size)
          version = handled.version
          const loaded = yield* Aggregate.load(agg, "c1")
          const replayed = yield* Aggregate.load(replayOnly, "c1")
          expect(loaded.state).toEqual(replayed.state)
          expect(loaded.version).toBe(version)
          if (loaded.fromSnapshot > 0) usedSnapshot = true
          const snapshot = yield* snapshots.load(stream)
          if (Option.isSome(snapshot)) {
            expect(snapshot.value.version).toBeLessThanOrEqual(version)
            expect(Math.floor(version / 100) * 100).toBeLessThanOrEqual(snapshot.value.version + 7)
          } else {
            expect(version).toBeLessThan(100)
          }
        }
        expect(usedSnapshot).toBe(true)
        // a failed append takes no snapshot, even when it would cross a boundary
        const before = Option.getOrThrow(yield* snapshots.load(stream))
        const toBoundary = 100 - (version % 100) - 1
        if (toBoundary > 0) yield* Aggregate.handle(agg, "c1", { _tag: "Add", values: Array.from({ length: toBoundary }, () => 1) })
        const edge = (yield* Aggregate.load(agg, "c1")).version
        const failed = yield* Effect.flip(Aggregate.handle(agg, "c1", { _tag: "Explode", bytes: 300 * 1024 }))
        expect(failed._tag).toBe("EventTooLarge")
        const after = Option.getOrThrow(yield* snapshots.load(stream))
        expect(after.version).toBeLessThanOrEqual(edge)
        expect(after.version).toBeGreaterThanOrEqual(before.version)
      })), 120_000)

    it.live("a corrupt snapshot, or one of an older stateVersion, is ignored", () =>
      withBackend(2, Effect.gen(function*() {
        const contract = counterContract()
        const agg = counter(contract)
        const snapshots = yield* SnapshotStore
        for (let i = 0; i < 30; i++) yield* Aggregate.handle(agg, "s", { _tag: "Add", values: [1, 2, 3, 4, 5] })
        const loaded = yield* Aggregate.load(agg, "s")
        expect(loaded.fromSnapshot).toBe(100)
        expect(loaded.state).toEqual({ total: 450, count: 150, last: 5 })
        const stream = `${contract.name}-s`
        yield* snapshots.remove(stream)
        expect(yield* snapshots.save(stream, { version: 150, stateVersion: 1, state: { total: "garbage" } })).toBe(true)
        const corrupt = yield* Aggregate.load(agg, "s")
        expect([corrupt.fromSnapshot, corrupt.state]).toEqual([0, { total: 450, count: 150, last: 5 }])
        yield* snapshots.remove(stream)
        yield* snapshots.save(stream, { version: 150, stateVersion: 1, state: { total: 1, count: 1, last: 1 } })
        const newer = counter(contract, 2)
        const ignored = yield* Aggregate.load(newer, "s")
        expect([ignored.fromSnapshot, ignored.state]).toEqual([0, { total: 450, count: 150, last: 5 }])
        // a snapshot is never written over a newer one
        expect(yield* snapshots.save(stream, { version: 120, stateVersion: 1, state: { total: 0, count: 0, last: 0 } })).toBe(false)
        // and one that names a version beyond the stream is not trusted
        yield* snapshots.remove(stream)
        yield* snapshots.save(stream, { version: 9999, stateVersion: 1, state: { total: 7, count: 7, last: 7 } })
        const beyond = yield* Aggregate.load(agg, "s")
        expect([beyond.fromSnapshot, beyond.state, beyond.version]).toEqual([0, { total: 450, count: 150, last: 5 }, 150])
      })), 60_000)

    it.live("8 fibers at once on one aggregate, each retrying up to 7 times: all succeed, versions add up, state equals replay; a repeated commandId writes once", () =>
      withBackend(1, Effect.gen(function*() {
        const contract = counterContract()
        const agg = counter(contract)
        const results = yield* Effect.all(
          Array.from({ length: 8 }, (_, i) => Aggregate.handle(agg, "hot", { _tag: "Add", values: Array.from({ length: 1 + (i % 3) }, () => i) }, { retry: Schedule.recurs(7) })),
          { concurrency: "unbounded" }
        )
        const events = results.reduce((n, r) => n + r.events.length, 0)
        const loaded = yield* Aggregate.load({ ...agg, snapshotEvery: undefined }, "hot")
        expect(loaded.version).toBe(events)
        expect(loaded.state.count).toBe(events)
        expect(loaded.state.total).toBe(results.reduce((n, r) => n + r.events.reduce((m, e) => m + (e._tag === "Added" ? e.n : 0), 0), 0))
        const commandId = crypto.randomUUID()
        const first = yield* Aggregate.handle(agg, "once", { _tag: "Add", values: [5, 6] }, { commandId })
        const second = yield* Aggregate.handle(agg, "once", { _tag: "Add", values: [5, 6] }, { commandId })
        expect([first.replayed, second.replayed]).toEqual([false, true])
        const store = yield* EventStore
        const written = yield* Stream.runCollect(store.read(`${contract.name}-once`))
        expect(written.length).toBe(2)
        const invalid = yield* Effect.flip(Aggregate.handle(agg, "once", { _tag: "Add", values: ["not a number"] } as never))
        expect(invalid._tag).toBe("InvalidCommand")
      })), 60_000)

    it.live("a projection over 10,000 events equals a plain fold; interrupted and restarted, it resumes from its checkpoint", () =>
      withBackend(4, Effect.gen(function*() {
        const contract = counterContract()
        const producer = yield* Producer.make(contract)
        const expected = new Map<string, number>()
        for (let i = 0; i < 10_000; i++) {
          const stream = `${contract.name}-e${i % 50}`
          expected.set(stream, (expected.get(stream) ?? 0) + i)
        }
        yield* Effect.forEach(Array.from({ length: 50 }, (_, e) => e), (e) =>
          Effect.forEach(Array.from({ length: 200 }, (_, k) => k * 50 + e), (i) => producer.Added({ n: i }, { entityId: `e${e}` }), { discard: true }), {
          concurrency: 8,
          discard: true
        })
        const model = { totals: new Map<string, number>(), seen: new Set<string>(), applied: 0, resets: 0 }
        const projection = Projection.make({
          name: `p_${uid()}`,
          contract,
          leaseTtl: 2000,
          handlers: {
            Added: (event, ctx) =>
              Effect.sync(() => {
                model.applied++
                if (model.seen.has(ctx.idempotencyKey)) return
                model.seen.add(ctx.idempotencyKey)
                model.totals.set(ctx.envelope.stream, (model.totals.get(ctx.envelope.stream) ?? 0) + event.n)
              })
          },
          reset: Effect.sync(() => {
            model.totals.clear()
            model.seen.clear()
            model.resets++
          })
        })
        const first = yield* Effect.fork(Projection.run(projection))
        while (model.applied < 5000) yield* Effect.sleep("5 millis")
        yield* Fiber.interrupt(first)
        const appliedBefore = model.applied
        const second = yield* Effect.fork(Projection.run(projection))
        yield* Projection.awaitCaughtUp(projection).pipe(Effect.timeout("60 seconds"))
        expect(model.totals).toEqual(expected)
        // it resumed: what the second runner applied is about what was left, not everything again
        expect(model.applied - appliedBefore).toBeLessThan(10_000 - 5000 + 1000)
        expect(model.resets).toBe(0)
        yield* Fiber.interrupt(second)
      })), 120_000)

    it.live("two runners at once: only one applies events; a rebuild while live resets and gives the same read model", () =>
      withBackend(2, Effect.gen(function*() {
        const contract = counterContract()
        const producer = yield* Producer.make(contract)
        for (let i = 0; i < 500; i++) yield* producer.Added({ n: i }, { entityId: `e${i % 7}` })
        const appliedBy = new Set<string>()
        const totals = new Map<string, number>()
        let resets = 0
        const makeRunner = (runner: string) =>
          Projection.make({
            name: "shared",
            contract,
            leaseTtl: 2000,
            handlers: {
              Added: (event, ctx) =>
                Effect.sync(() => {
                  appliedBy.add(runner)
                  totals.set(ctx.envelope.stream, (totals.get(ctx.envelope.stream) ?? 0) + event.n)
                })
            },
            reset: Effect.sync(() => {
              totals.clear()
              resets++
            })
          })
        const name = `shared_${uid()}`
        const a = yield* Effect.fork(Projection.run({ ...makeRunner("a"), name }))
        const b = yield* Effect.fork(Projection.run({ ...makeRunner("b"), name }))
        yield* Projection.awaitCaughtUp({ name, contract }).pipe(Effect.timeout("60 seconds"))
        expect(appliedBy.size).toBe(1)
        const expected = new Map(totals)
        expect(Array.from(expected.values()).reduce((x, y) => x + y, 0)).toBe((499 * 500) / 2)
        const generation = yield* Projection.rebuild({ name })
        expect(generation).toBe(1)
        yield* Effect.sleep("100 millis")
        yield* Projection.awaitCaughtUp({ name, contract }).pipe(Effect.timeout("60 seconds"))
        expect(resets).toBe(1)
        expect(totals).toEqual(expected)
        yield* Fiber.interrupt(a)
        yield* Fiber.interrupt(b)
      })), 60_000)
  })
}
