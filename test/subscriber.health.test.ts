/**
 * `Subscriber.localHealth`: what a running consumer's engine says about itself, without
 * the backend (its partitions' phases, reads under way, deliveries in flight and waiting
 * for their acknowledgement, what the reader is doing).
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Layer, Schema } from "effect"
import { Chronicle, ConsumerGroups, Contract, EventStore, Subscriber } from "effect-chronicle"
import { partitionOf } from "../src/internal/ids.js"

const Events = Contract.make("hlth", { Happened: { n: Schema.Int } })

const waitUntil = <E, R>(what: string, check: Effect.Effect<boolean, E, R>, millis = 10_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("10 millis")
    }
  })

describe("Subscriber.localHealth", () => {
  it.live("shows each owned partition's phase and work, and what the reader does; nothing once the consumer ends", () =>
    Effect.gen(function*() {
      const store = yield* EventStore.forContract(Events)
      const release = yield* Deferred.make<void>()
      const sub = yield* Effect.fork(Subscriber.run(Events, {
        group: "h",
        handlers: { Happened: () => Deferred.await(release) }
      }))
      yield* waitUntil("the partitions to be owned and read", Effect.map(Subscriber.localHealth("h"), (cs) =>
        cs.length === 1 && cs[0]!.owned.length === 4 && cs[0]!.owned.every((p) => p.phase === "active")))
      yield* store.append("e1", [Events.make.Happened({ n: 1 }), Events.make.Happened({ n: 2 }), Events.make.Happened({ n: 3 })])
      const p = partitionOf("e1", 4)
      // one handler runs, the two others wait in the entity's lane: three in flight
      yield* waitUntil("the events in flight", Effect.map(Subscriber.localHealth("h"), (cs) => cs[0]!.owned[p]!.inFlight === 3))
      const [busy] = yield* Subscriber.localHealth("h")
      expect(busy!.inFlight).toBe(3)
      expect(busy!.partitions).toEqual([0, 1, 2, 3])
      expect(busy!.owned.map((o) => o.partition)).toEqual([0, 1, 2, 3])
      expect(busy!.owned.filter((o) => o.partition !== p).every((o) => o.inFlight === 0)).toBe(true)
      expect(busy!.owned.every((o) => o.epoch >= 1)).toBe(true)
      // every partition drained: the reader waits for new entries
      yield* waitUntil("the reader to wait", Effect.map(Subscriber.localHealth("h"), (cs) => cs[0]!.reader.activity === "waiting"))
      yield* Deferred.succeed(release, undefined)
      yield* waitUntil("the events handled and acknowledged", Effect.map(Subscriber.localHealth("h"), (cs) =>
        cs[0]!.inFlight === 0 && cs[0]!.owned.every((o) => o.inFlight === 0 && o.toAcknowledge === 0)))
      const [after] = yield* Subscriber.localHealth("h")
      expect(after!.failing).toEqual([])
      expect(after!.reader.since).toBeLessThanOrEqual(Date.now())
      yield* Fiber.interrupt(sub)
      expect(yield* Subscriber.localHealth("h")).toEqual([])
    }).pipe(Effect.provide(Chronicle.layerMemoryWith({ partitions: 4 })), Effect.orDie), 30_000)
})

/** The memory backend, with one of its group operations dying (a defect: a bug, not a failure) once. */
const dyingOnce = (operation: "wait" | "read" | "ack" | "heartbeat") =>
  Layer.effect(
    ConsumerGroups.ConsumerGroups,
    Effect.map(ConsumerGroups.ConsumerGroups, (groups) => {
      let died = false
      const once = <A, E>(call: Effect.Effect<A, E>): Effect.Effect<A, E> =>
        Effect.suspend(() => {
          if (died) return call
          died = true
          return Effect.dieMessage(`${operation} broke`)
        })
      return ConsumerGroups.ConsumerGroups.of({
        ...groups,
        wait: (...args) => (operation === "wait" ? once(groups.wait(...args)) : groups.wait(...args)),
        read: (...args) => (operation === "read" ? once(groups.read(...args)) : groups.read(...args)),
        ack: (...args) => (operation === "ack" ? once(groups.ack(...args)) : groups.ack(...args)),
        heartbeat: (...args) => (operation === "heartbeat" ? once(groups.heartbeat(...args)) : groups.heartbeat(...args))
      })
    })
  ).pipe(Layer.provideMerge(Chronicle.layerMemoryWith({ partitions: 2 })))

describe("a background loop that dies ends the subscriber with the defect (it does not go on holding partitions it never reads)", () => {
  for (const operation of ["wait", "read", "ack", "heartbeat"] as const) {
    it.live(`${operation} dies once`, () =>
      Effect.gen(function*() {
        const store = yield* EventStore.forContract(Events)
        const handled: Array<number> = []
        const sub = yield* Effect.fork(Subscriber.run(Events, {
          group: "d",
          handlers: { Happened: (e) => Effect.sync(() => handled.push(e.n)) }
        }))
        for (let n = 0; n < 20; n++) yield* store.append(`e${n % 4}`, [Events.make.Happened({ n })])
        const exit = yield* Fiber.await(sub).pipe(Effect.timeout("10 seconds"))
        expect(Exit.isFailure(exit)).toBe(true)
        const defect = Exit.isFailure(exit) ? Cause.dieOption(exit.cause) : undefined
        expect(defect?._tag).toBe("Some")
        expect(String((defect as { value?: unknown })?.value)).toContain(`${operation} broke`)
        expect(yield* Subscriber.localHealth("d")).toEqual([])
      }).pipe(Effect.provide(dyingOnce(operation)), Effect.orDie), 30_000)
  }
})

describe("a store away at start", () => {
  it.live("a first heartbeat that fails for a passing reason is retried, and the consumer reads once one succeeds", () =>
    Effect.gen(function*() {
      const store = yield* EventStore.forContract(Events)
      const handled: Array<number> = []
      for (let n = 0; n < 10; n++) yield* store.append(`e${n % 3}`, [Events.make.Happened({ n })])
      const sub = yield* Effect.fork(Subscriber.run(Events, {
        group: "away",
        leaseTtl: "3 seconds",
        heartbeat: "100 millis",
        handlers: { Happened: (e) => Effect.sync(() => handled.push(e.n)) }
      }))
      yield* waitUntil("every event handled", Effect.sync(() => handled.length === 10))
      expect(handled.slice().sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
      const [health] = yield* Subscriber.localHealth("away")
      expect(health!.reader.activity).not.toBe("stopped")
      yield* Fiber.interrupt(sub)
    }).pipe(
      Effect.provide(Layer.effect(
        ConsumerGroups.ConsumerGroups,
        Effect.map(ConsumerGroups.ConsumerGroups, (groups) => {
          let failures = 2
          return ConsumerGroups.ConsumerGroups.of({
            ...groups,
            heartbeat: (...args) =>
              Effect.suspend(() =>
                failures-- > 0
                  ? Effect.fail(new EventStore.StoreUnavailable({ operation: "heartbeat", reason: "the store is starting", retryable: true }))
                  : groups.heartbeat(...args)
              )
          })
        })
      ).pipe(Layer.provideMerge(Chronicle.layerMemoryWith({ partitions: 2 })))),
      Effect.orDie
    ), 30_000)
})
