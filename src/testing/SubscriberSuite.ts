/**
 * The subscriber conformance suite: consumer groups, partition ownership, rebalancing,
 * retries, dead letters and follow-up events, run against every backend with the live
 * clock (docs/semantics.md §5–6).
 *
 * @since 0.1.0
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Fiber, Layer, Schedule, Schema, Stream } from "effect"
import { ConsumerGroups, type GroupStatus } from "../ConsumerGroups.js"
import * as Contract from "../Contract.js"
import * as DeadLetters from "../DeadLetters.js"
import { EventStore, forContract } from "../EventStore.js"
import { partitionOf } from "../internal/ids.js"
import * as Producer from "../Producer.js"
import * as Subscriber from "../Subscriber.js"
import * as DeliveryChecker from "./DeliveryChecker.js"
import type { BackendConfig } from "./EventStoreSuite.js"

type Services = EventStore | ConsumerGroups

const uid = () => Math.random().toString(36).slice(2, 8)

/** A contract whose name (its category) is fresh, so tests never share a log. */
const freshContract = () =>
  Contract.make(`sub_${uid()}`, {
    Happened: { n: Schema.Int },
    Followed: { n: Schema.Int }
  })
type Fresh = ReturnType<typeof freshContract>

interface Handled {
  readonly group: string
  readonly consumer: string
  readonly stream: string
  readonly version: number
  readonly eventId: string
  readonly redelivered: boolean
}

/**
 * True when every entity's first handlings are in version order: no version was handled
 * before the one before it (at-least-once redeliveries of earlier versions are allowed).
 *
 * @since 0.1.0
 * @category checks
 */
export const inOrderPerEntity = (handled: ReadonlyArray<{ readonly stream: string; readonly version: number }>): boolean => {
  const max = new Map<string, number>()
  for (const h of handled) {
    const seen = max.get(h.stream) ?? 0
    if (h.version > seen + 1) return false
    if (h.version > seen) max.set(h.stream, h.version)
  }
  return true
}

/**
 * Polls `check` (every 20 ms, real time) until it holds; dies after `timeoutMillis`.
 *
 * @since 0.1.0
 * @category checks
 */
export const waitUntil = <E, R>(what: string, check: Effect.Effect<boolean, E, R>, timeoutMillis = 30_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMillis
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

/** Whether the group's status satisfies `f` (false while the group does not exist yet). */
const statusIs = (group: string, f: (status: GroupStatus) => boolean) =>
  Subscriber.status(group).pipe(Effect.map(f), Effect.orElseSucceed(() => false))

/** Every partition owned, by as many owners as there are members, their shares differing by one at most (the assignment a group converges to, not a step on the way). */
const settled = (status: GroupStatus, members: number) => {
  if (status.members.length !== members || !status.partitionStatus.every((p) => p.owner !== undefined)) return false
  const counts = new Map<string, number>()
  for (const p of status.partitionStatus) counts.set(p.owner!, (counts.get(p.owner!) ?? 0) + 1)
  return counts.size === Math.min(members, status.partitions) && Math.max(...counts.values()) - Math.min(...counts.values()) <= 1
}

/**
 * Runs the subscriber conformance suite against a backend.
 *
 * @since 0.1.0
 * @category suites
 */
export const conformance = (name: string, makeLayer: (config: BackendConfig) => Layer.Layer<Services, unknown>): void => {
  const withBackend = <A, E>(partitions: number | undefined, f: (ctx: Context.Context<Services>) => Effect.Effect<A, E, Services>) =>
    Effect.scoped(Effect.flatMap(Layer.build(makeLayer({ partitions })), (ctx) => Effect.provide(f(ctx), ctx)))

  /** A history per test: every handler invocation, checked by the delivery checker. */
  type History = ReturnType<typeof DeliveryChecker.memory>

  const consumer = (
    contract: Fresh,
    group: string,
    consumerName: string,
    handled: Array<Handled>,
    options: {
      readonly delay?: number
      readonly concurrency?: number
      readonly history?: History
      readonly revokeTimeout?: Subscriber.Options<unknown>["revokeTimeout"]
      readonly shutdownTimeout?: Subscriber.Options<unknown>["shutdownTimeout"]
      readonly hangOn?: (stream: string) => boolean
      readonly stallOn?: (n: number) => number
    } = {}
  ) =>
    Subscriber.run(contract, {
      group,
      consumer: consumerName,
      leaseTtl: "2 seconds",
      heartbeat: "200 millis",
      readCount: 100,
      concurrency: options.concurrency ?? 8,
      revokeTimeout: options.revokeTimeout,
      shutdownTimeout: options.shutdownTimeout,
      handlers: DeliveryChecker.recording(options.history ?? DeliveryChecker.memory(), {
        Happened: (event: { readonly n: number }, ctx: Subscriber.HandlerContext) =>
          Effect.gen(function*() {
            if (options.hangOn?.(ctx.envelope.stream)) return yield* Effect.never
            const stall = options.stallOn?.(event.n) ?? 0
            if (stall > 0) {
              // a stalled process: the whole event loop stops, heartbeats included
              const until = Date.now() + stall
              while (Date.now() < until) {
                // busy
              }
            }
            handled.push({
              group,
              consumer: consumerName,
              stream: ctx.envelope.stream,
              version: ctx.envelope.version,
              eventId: ctx.envelope.eventId,
              redelivered: ctx.redelivered
            })
            if (options.delay) yield* Effect.sleep(options.delay)
          }),
        Followed: () => Effect.void
      })
    })

  /** Appends `total` events over `entities` entities (`e0`, `e1`, …); returns what the group must handle. */
  const produce = (contract: Fresh, entities: number, total: number, key = (e: number) => `e${e}`) =>
    Effect.gen(function*() {
      const producer = yield* Producer.make(contract)
      const expected: Array<DeliveryChecker.Expected> = []
      const versions = new Map<number, number>()
      yield* Effect.forEach(
        Array.from({ length: entities }, (_, e) => e),
        (e) =>
          Effect.forEach(
            Array.from({ length: Math.ceil(total / entities) }, (_, i) => i * entities + e).filter((n) => n < total),
            (n, i) =>
              Effect.gen(function*() {
                yield* producer.Happened({ n }, { entityId: key(e) })
                versions.set(e, (versions.get(e) ?? 0) + 1)
                expected.push({ stream: `${contract.name}-${key(e)}`, version: versions.get(e)! })
                // a producer that never waits (an in-memory store answers at once) would keep
                // timers, heartbeats included, from running for seconds: let them run
                if (i % 25 === 24) yield* Effect.sleep("1 millis")
              }),
            { discard: true }
          ),
        { concurrency: 16, discard: true }
      )
      return expected
    })

  /** The delivery checker's verdict on a history, with what it found when it is not clean. */
  const verified = (history: History, expected: ReadonlyArray<DeliveryChecker.Expected>) => {
    const report = DeliveryChecker.check(history.invocations, { expected })
    expect(report.orderViolations.slice(0, 3).map((v) => `${v.invocation.stream} v${v.invocation.version}: ${v.reason}`), "order violations").toEqual([])
    expect(report.lost.slice(0, 3), "lost events").toEqual([])
    expect(report.lateStarts.slice(0, 3).map((i) => `${i.stream} v${i.version} by ${i.member} @${i.epoch}`), "late starts").toEqual([])
    return report
  }

  describe(`Subscriber conformance: ${name}`, () => {
    it.live("2 groups x 3 consumers over 8 partitions: every event handled by each group, in order per entity, no late start, shared by all", () =>
      withBackend(8, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const handled: Array<Handled> = []
          const groups = [`a_${uid()}`, `b_${uid()}`]
          const histories = new Map(groups.map((g) => [g, DeliveryChecker.memory()]))
          const fibers = yield* Effect.forEach(
            groups.flatMap((g) => ["c1", "c2", "c3"].map((c) => [g, c] as const)),
            ([g, c]) => Effect.fork(consumer(contract, g, c, handled, { history: histories.get(g)! }))
          )
          for (const g of groups) {
            yield* waitUntil(`group ${g} to settle`, statusIs(g, (s) => settled(s, 3)))
          }
          const expected = yield* produce(contract, 100, 5000)
          for (const g of groups) yield* Subscriber.awaitIdle(g).pipe(Effect.timeout("60 seconds"))
          yield* Effect.forEach(fibers, Fiber.interrupt, { discard: true })
          for (const g of groups) {
            const mine = handled.filter((h) => h.group === g)
            // at least once (a consumer that loses a lease under load hands events over again)
            expect(new Set(mine.map((h) => h.eventId)).size).toBe(5000)
            expect(inOrderPerEntity(mine)).toBe(true)
            verified(histories.get(g)!, expected)
            for (const c of ["c1", "c2", "c3"]) {
              expect(mine.filter((h) => h.consumer === c).length, `share of ${g}/${c}`).toBeGreaterThan(500)
            }
          }
        })
      ), 120_000)

    it.live("rebalance: a consumer joins at 25% and one leaves at 50%; order holds, nothing is lost, partitions end spread", () =>
      withBackend(8, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const handled: Array<Handled> = []
          const group = `r_${uid()}`
          // one entity at a time per consumer, 1 ms each: the run lasts long enough for the
          // joining consumer to be given partitions and the leaving one to hand its back
          const total = 4000
          const history = DeliveryChecker.memory()
          const first = yield* Effect.forEach(["c1", "c2", "c3"], (c) => Effect.fork(consumer(contract, group, c, handled, { delay: 1, concurrency: 1, history })))
          yield* waitUntil("the group to settle", statusIs(group, (s) => settled(s, 3)))
          const expected = yield* produce(contract, 60, total)
          yield* waitUntil("25% handled", Effect.sync(() => new Set(handled.map((h) => h.eventId)).size >= total / 4))
          const fourth = yield* Effect.fork(consumer(contract, group, "c4", handled, { delay: 1, concurrency: 1, history }))
          yield* waitUntil("50% handled", Effect.sync(() => new Set(handled.map((h) => h.eventId)).size >= total / 2))
          yield* Fiber.interrupt(first[0]!)
          yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("60 seconds"))
          yield* waitUntil("partitions to spread over the live consumers", statusIs(group, (s) => settled(s, 3)))
          const status = yield* Subscriber.status(group)
          const owners = status.partitionStatus.map((p) => p.owner!.split(":")[0])
          expect(owners.includes("c1")).toBe(false)
          for (const c of ["c2", "c3", "c4"]) expect(owners.filter((o) => o === c).length).toBeGreaterThanOrEqual(2)
          expect(new Set(handled.map((h) => h.eventId)).size).toBe(total)
          expect(inOrderPerEntity(handled)).toBe(true)
          verified(history, expected)
          expect(handled.some((h) => h.consumer === "c4")).toBe(true)
          yield* Effect.forEach([...first.slice(1), fourth], Fiber.interrupt, { discard: true })
        })
      ), 120_000)

    it.live("an interrupted owner's partitions move within lease + heartbeat + 1 s; its unhandled events come first; nothing lost", () =>
      withBackend(4, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const handled: Array<Handled> = []
          const group = `f_${uid()}`
          const history = DeliveryChecker.memory()
          const a = yield* Effect.fork(consumer(contract, group, "a", handled, { delay: 2, history }))
          yield* waitUntil("a to own every partition", statusIs(group, (s) => settled(s, 1)))
          const b = yield* Effect.fork(consumer(contract, group, "b", handled, { delay: 2, history }))
          yield* waitUntil("the group to settle", statusIs(group, (s) => settled(s, 2)))
          const expected = yield* produce(contract, 20, 600)
          yield* waitUntil("some events handled", Effect.sync(() => handled.length >= 100))
          const stopped = Date.now()
          yield* Fiber.interrupt(a)
          yield* waitUntil("b to own every partition", statusIs(group, (s) => s.partitionStatus.every((p) => p.owner?.startsWith("b:"))), 2000 + 200 + 1000)
          expect(Date.now() - stopped).toBeLessThan(2000 + 200 + 1000)
          yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("60 seconds"))
          expect(new Set(handled.map((h) => h.eventId)).size).toBe(600)
          expect(inOrderPerEntity(handled)).toBe(true)
          verified(history, expected)
          const status = yield* Subscriber.status(group)
          expect(status.partitionStatus.every((p) => p.pending === 0)).toBe(true)
          yield* Fiber.interrupt(b)
        })
      ), 60_000)

    it.live("poison: a failing handler and an undecodable event are dead-lettered with their counts; the rest is handled; replay after a fix", () =>
      withBackend(2, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const group = `p_${uid()}`
          const store = yield* EventStore
          const typed = yield* forContract(contract)
          let fixed = false
          let poisonCalls = 0
          const handled: Array<Handled> = []
          const sub = yield* Effect.fork(Subscriber.run(contract, {
            group,
            retry: Schedule.recurs(3),
            heartbeat: "200 millis",
            leaseTtl: "2 seconds",
            handlers: {
              Happened: (event, ctx) =>
                Effect.gen(function*() {
                  if (event.n === 500) {
                    poisonCalls++
                    if (!fixed) return yield* Effect.fail(new PoisonError({ n: event.n }))
                  }
                  handled.push({ group, consumer: "c", stream: ctx.envelope.stream, version: ctx.envelope.version, eventId: ctx.envelope.eventId, redelivered: ctx.redelivered })
                }),
              Followed: () => Effect.void
            }
          }))
          const producer = yield* Producer.make(contract)
          let poisonId = ""
          for (let n = 0; n < 1000; n++) {
            if (n === 700) {
              const bad = yield* store.append(`${contract.name}-x${n % 10}`, [{ eventId: crypto.randomUUID(), type: "Happened", data: { n: "not a number" } }])
              expect(bad.lastVersion).toBeGreaterThan(0)
            } else {
              const position = yield* producer.Happened({ n }, { entityId: `x${n % 10}` })
              if (n === 500) poisonId = position.entryId
            }
          }
          yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("60 seconds"))
          expect(handled.length).toBe(998)
          expect(poisonCalls).toBe(4)
          const letters = yield* DeadLetters.list(group)
          expect(letters.length).toBe(2)
          const poison = letters.find((l) => l.errorTag === "PoisonError")!
          expect([poison.attempts, poison.deliveries, poison.entryId]).toEqual([4, 1, poisonId])
          expect(poison.message).toContain("500")
          const undecodable = letters.find((l) => l.errorTag === "DecodeError")!
          expect([undecodable.attempts, undecodable.deliveries]).toEqual([0, 1])
          expect(undecodable.message).not.toContain("not a number")
          const all = Chunk.toReadonlyArray(yield* Stream.runCollect(typed.readCategory().pipe(Stream.catchAll(() => Stream.empty))))
          expect(all.some((r) => r.eventId === poison.eventId)).toBe(true)
          fixed = true
          expect(yield* DeadLetters.replay(group, [poison.id])).toBe(1)
          yield* waitUntil("the replayed event to be handled", Effect.sync(() => handled.some((h) => h.eventId === poison.eventId)))
          yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("30 seconds"))
          expect(handled.find((h) => h.eventId === poison.eventId)?.redelivered).toBe(true)
          expect(poisonCalls).toBe(5)
          const left = yield* DeadLetters.list(group)
          expect(left.map((l) => l.errorTag)).toEqual(["DecodeError"])
          expect(yield* DeadLetters.purge(group)).toBe(1)
          expect(yield* DeadLetters.list(group)).toEqual([])
          yield* Fiber.interrupt(sub)
        })
      ), 60_000)

    it.live("a handler that produces a follow-up and then fails runs again: the log holds exactly one follow-up", () =>
      withBackend(1, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const group = `u_${uid()}`
          let calls = 0
          const sub = yield* Effect.fork(Subscriber.run(contract, {
            group,
            retry: Schedule.recurs(2),
            handlers: {
              Happened: (event, ctx) =>
                Effect.gen(function*() {
                  calls++
                  yield* ctx.produce(contract).Followed({ n: event.n }, { entityId: "follow" })
                  yield* ctx.produce(contract).Followed({ n: event.n + 1 }, { entityId: "follow" })
                  if (calls === 1) return yield* Effect.fail("crashed before the ack")
                }),
              Followed: () => Effect.void
            }
          }))
          const producer = yield* Producer.make(contract)
          const cause = yield* producer.Happened({ n: 1 }, { entityId: "cause" })
          yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("30 seconds"))
          expect(calls).toBe(2)
          const typed = yield* forContract(contract)
          const follow = Chunk.toReadonlyArray(yield* Stream.runCollect(typed.read("follow")))
          expect(follow.map((r) => r.event)).toEqual([{ _tag: "Followed", n: 1 }, { _tag: "Followed", n: 2 }])
          const causeEvent = Chunk.toReadonlyArray(yield* Stream.runCollect(typed.read("cause")))[0]!
          expect(causeEvent.position).toEqual(cause)
          expect(follow.every((r) => r.causationId === causeEvent.eventId && r.correlationId === causeEvent.eventId)).toBe(true)
          yield* Fiber.interrupt(sub)
        })
      ), 30_000)

    it.live("unknown event types are dead-lettered by default, or skipped when asked", () =>
      withBackend(1, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const store = yield* EventStore
          yield* store.append(`${contract.name}-1`, [
            { eventId: crypto.randomUUID(), type: "FromTheFuture", data: {} },
            { eventId: crypto.randomUUID(), type: "Happened", data: { n: 1 } }
          ])
          const seen: Array<number> = []
          const handlers = { Happened: (e: { n: number }) => Effect.sync(() => seen.push(e.n)), Followed: () => Effect.void }
          const groupA = `k_${uid()}`
          const a = yield* Effect.fork(Subscriber.run(contract, { group: groupA, handlers }))
          const groupB = `s_${uid()}`
          const b = yield* Effect.fork(Subscriber.run(contract, { group: groupB, handlers, onUnknownType: "skip" }))
          yield* Subscriber.awaitIdle(groupA).pipe(Effect.timeout("30 seconds"))
          yield* Subscriber.awaitIdle(groupB).pipe(Effect.timeout("30 seconds"))
          expect(seen).toEqual([1, 1])
          expect((yield* DeadLetters.list(groupA)).map((l) => l.errorTag)).toEqual(["UnknownEventType"])
          expect(yield* DeadLetters.list(groupB)).toEqual([])
          yield* Fiber.interrupt(a)
          yield* Fiber.interrupt(b)
        })
      ), 30_000)

    it.live("startFrom end skips what was there; a group name is bound to one category", () =>
      withBackend(2, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const producer = yield* Producer.make(contract)
          yield* producer.Happened({ n: 1 }, { entityId: "a" })
          const seen: Array<number> = []
          const group = `e_${uid()}`
          const handlers = { Happened: (e: { n: number }) => Effect.sync(() => seen.push(e.n)), Followed: () => Effect.void }
          const sub = yield* Effect.fork(Subscriber.run(contract, { group, handlers, startFrom: "end" }))
          // "end" is where the group is created on each partition: wait until it owns them all
          // (the group's record is written a step before its partitions' consumer groups)
          yield* waitUntil("the group", statusIs(group, (s) => settled(s, 1)))
          yield* producer.Happened({ n: 2 }, { entityId: "a" })
          yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("30 seconds"))
          expect(seen).toEqual([2])
          const other = freshContract()
          const conflict = yield* Effect.flip(Subscriber.run(other, { group, handlers }))
          expect(conflict._tag).toBe("GroupConflict")
          const bad = yield* Effect.flip(Subscriber.run(other, { group: "bad group!", handlers }))
          expect(bad._tag).toBe("InvalidArgument")
          yield* Fiber.interrupt(sub)
        })
      ), 30_000)

    it.live("three consumers with default settings each handle a share (the default partition count lets a group share its work)", () =>
      withBackend(undefined, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const group = `d_${uid()}`
          const counts = new Map<string, number>()
          const run = (name: string) =>
            Subscriber.run(contract, {
              group,
              consumer: name,
              handlers: {
                Happened: () => Effect.sync(() => counts.set(name, (counts.get(name) ?? 0) + 1)),
                Followed: () => Effect.void
              }
            })
          const fibers = yield* Effect.forEach(["x", "y", "z"], (c) => Effect.fork(run(c)))
          yield* waitUntil("the group to settle", statusIs(group, (s) => settled(s, 3)), 60_000)
          const status = yield* Subscriber.status(group)
          expect(status.partitions).toBeGreaterThanOrEqual(3)
          yield* produce(contract, 100, 3000)
          yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("60 seconds"))
          for (const c of ["x", "y", "z"]) expect(counts.get(c) ?? 0, `share of ${c}`).toBeGreaterThan(300)
          yield* Effect.forEach(fibers, Fiber.interrupt, { discard: true })
        })
      ), 120_000)

    it.live("3 → 4 consumers over 8 partitions moves at most 2 partitions; the newcomer takes only its share", () =>
      withBackend(8, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const group = `j_${uid()}`
          const handled: Array<Handled> = []
          const three = yield* Effect.forEach(["c1", "c2", "c3"], (c) => Effect.fork(consumer(contract, group, c, handled)))
          yield* waitUntil("three to settle", statusIs(group, (s) => settled(s, 3)))
          const before = (yield* Subscriber.status(group)).partitionStatus.map((p) => p.owner)
          const fourth = yield* Effect.fork(consumer(contract, group, "c4", handled))
          yield* waitUntil("four to settle", statusIs(group, (s) => settled(s, 4)))
          const after = (yield* Subscriber.status(group)).partitionStatus.map((p) => p.owner)
          const moved = after.filter((o, p) => o !== before[p])
          expect(moved.length).toBeLessThanOrEqual(2)
          expect(moved.every((o) => o?.startsWith("c4:"))).toBe(true)
          yield* Effect.forEach([...three, fourth], Fiber.interrupt, { discard: true })
        })
      ), 60_000)

    it.live("a handler that hangs does not hold a partition: on a join it moves within revokeTimeout + lease + heartbeat, and its events are handled by the new owner, in order", () =>
      withBackend(4, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const group = `h_${uid()}`
          const handled: Array<Handled> = []
          const history = DeliveryChecker.memory()
          // one entity per partition whose first event hangs on consumer a, forever
          const hung = Array.from({ length: 4 }, (_, p) => {
            for (let k = 0;; k++) if (partitionOf(`hang${k}`, 4) === p) return `hang${k}`
          })
          const a = yield* Effect.fork(consumer(contract, group, "a", handled, {
            history,
            revokeTimeout: "500 millis",
            shutdownTimeout: "500 millis",
            hangOn: (stream) => hung.some((h) => stream === `${contract.name}-${h}`)
          }))
          yield* waitUntil("a to own every partition", statusIs(group, (s) => settled(s, 1)))
          const expected = yield* produce(contract, 4, 40, (e) => hung[e]!)
          yield* waitUntil("a to hang on every partition", Effect.sync(() => history.invocations.filter((i) => i.outcome === "running").length === 4))
          const joined = Date.now()
          const b = yield* Effect.fork(consumer(contract, group, "b", handled, { history }))
          yield* waitUntil("two to settle", statusIs(group, (s) => settled(s, 2)), 2000 + 500 + 200 + 3000)
          expect(Date.now() - joined).toBeLessThan(500 + 2000 + 200 + 2000)
          const status = yield* Subscriber.status(group)
          const moved = status.partitionStatus.filter((p) => p.owner?.startsWith("b:")).map((p) => p.partition)
          expect(moved.length).toBe(2)
          // the moved partitions' entities are handled whole by b, from their first event
          const movedStreams = moved.map((p) => `${contract.name}-${hung[p]}`)
          yield* waitUntil("b to handle the moved entities", Effect.sync(() =>
            movedStreams.every((s) => handled.filter((h) => h.consumer === "b" && h.stream === s).length === 10)))
          const report = DeliveryChecker.check(history.invocations, { expected: expected.filter((e) => movedStreams.includes(e.stream)) })
          expect(report.orderViolations).toEqual([])
          expect(report.lost).toEqual([])
          expect(report.lateStarts).toEqual([])
          yield* Effect.forEach([a, b], Fiber.interrupt, { discard: true })
        })
      ), 60_000)

    it.live("a stalled owner (its whole process stops past the lease, a backlog in hand) starts nothing late when it resumes; order holds, nothing is lost", () =>
      withBackend(4, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const group = `t_${uid()}`
          const handled: Array<Handled> = []
          const history = DeliveryChecker.memory()
          let stalled = false
          let seenByA = 0
          const a = yield* Effect.fork(consumer(contract, group, "a", handled, {
            history,
            delay: 1,
            concurrency: 2,
            // at a's 100th event, once, everything stops for longer than the lease (a long
            // GC pause, a frozen VM), with a backlog read and waiting in a's hands
            stallOn: () => {
              if (++seenByA !== 100 || stalled) return 0
              stalled = true
              return 2600
            }
          }))
          yield* waitUntil("a to own every partition", statusIs(group, (s) => settled(s, 1)))
          const b = yield* Effect.fork(consumer(contract, group, "b", handled, { history, delay: 1, concurrency: 2 }))
          yield* waitUntil("two to settle", statusIs(group, (s) => settled(s, 2)))
          const expected = yield* produce(contract, 20, 1000)
          yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("60 seconds"))
          expect(stalled).toBe(true)
          const report = verified(history, expected)
          expect(report.handled).toBe(1000)
          const status = yield* Subscriber.status(group)
          expect(status.partitionStatus.every((p) => p.pending === 0 && p.lag === 0)).toBe(true)
          yield* Effect.forEach([a, b], Fiber.interrupt, { discard: true })
        })
      ), 90_000)

    it.live("follow-ups of causes with the same event id in two streams are two events (the cause is named by stream and id)", () =>
      withBackend(1, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const group = `w_${uid()}`
          const store = yield* EventStore
          const sameId = crypto.randomUUID()
          yield* store.append(`${contract.name}-one`, [{ eventId: sameId, type: "Happened", data: { n: 1 } }])
          yield* store.append(`${contract.name}-two`, [{ eventId: sameId, type: "Happened", data: { n: 2 } }])
          const sub = yield* Effect.fork(Subscriber.run(contract, {
            group,
            handlers: {
              Happened: (event, ctx) => ctx.produce(contract).Followed({ n: event.n }, { entityId: "target" }),
              Followed: () => Effect.void
            }
          }))
          yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("30 seconds"))
          const typed = yield* forContract(contract)
          const target = Chunk.toReadonlyArray(yield* Stream.runCollect(typed.read("target")))
          expect(target.map((r) => r.event).sort((x, y) => (x as { n: number }).n - (y as { n: number }).n)).toEqual([
            { _tag: "Followed", n: 1 },
            { _tag: "Followed", n: 2 }
          ])
          yield* Fiber.interrupt(sub)
        })
      ), 30_000)

    it.live("Subscriber.stream hands deliveries over with explicit acks", () =>
      withBackend(1, () =>
        Effect.gen(function*() {
          const contract = freshContract()
          const producer = yield* Producer.make(contract)
          for (let n = 0; n < 5; n++) yield* producer.Happened({ n }, { entityId: "s" })
          const group = `m_${uid()}`
          const got = yield* Subscriber.stream(contract, { group }).pipe(
            Stream.mapEffect((d) => Effect.as(d.ack, d.event)),
            Stream.take(5),
            Stream.runCollect
          )
          expect(Chunk.toReadonlyArray(got).map((e) => (e as { n: number }).n)).toEqual([0, 1, 2, 3, 4])
        })
      ), 30_000)
  })
}

class PoisonError extends Schema.TaggedError<PoisonError>()("PoisonError", { n: Schema.Int }) {
  override get message() {
    return `event ${this.n} is poison`
  }
}
