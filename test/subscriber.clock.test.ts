/**
 * Retry schedules on the in-memory backend, driven by TestClock; handler records checked
 * by the type checker.
 */
import { describe, expect, expectTypeOf, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Schema, TestClock } from "effect"
import { Chronicle, Contract, DeadLetters, Producer, Subscriber } from "effect-chronicle"

const Orders = Contract.make("orders", { Placed: { n: Schema.Int }, Shipped: { n: Schema.Int } })

/** Waits in real time (not the test clock) until `check` holds: fibers need turns of the event loop. */
const eventually = (check: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 400 && !check(); i++) yield* Effect.promise(() => new Promise((r) => setTimeout(r, 5)))
    expect(check()).toBe(true)
  })

class Refused extends Schema.TaggedError<Refused>()("Refused", {}) {}

describe("Subscriber retries on the test clock", () => {
  it.effect("the default schedule: exponential from 100 ms, jittered, 5 recurrences, then a dead letter", () =>
    Effect.gen(function*() {
      let calls = 0
      const sub = yield* Effect.fork(Subscriber.run(Orders, {
        group: "retries",
        handlers: {
          Placed: () => Effect.suspend(() => {
            calls++
            return Effect.fail(new Refused())
          }),
          Shipped: () => Effect.void
        }
      }))
      const producer = yield* Producer.make(Orders)
      yield* producer.Placed({ n: 1 }, { entityId: "o1" })
      yield* eventually(() => calls === 1)
      // the first retry waits about 100 ms (80 to 120 with jitter)
      yield* TestClock.adjust("50 millis")
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 20)))
      expect(calls).toBe(1)
      yield* TestClock.adjust("100 millis")
      yield* eventually(() => calls === 2)
      for (let i = 0; i < 10 && calls < 6; i++) {
        yield* TestClock.adjust("2 seconds")
        yield* Effect.promise(() => new Promise((r) => setTimeout(r, 10)))
      }
      yield* eventually(() => calls === 6)
      yield* TestClock.adjust("10 seconds")
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 20)))
      expect(calls).toBe(6)
      const letters = yield* DeadLetters.list("retries")
      expect(letters.map((l) => [l.errorTag, l.attempts, l.deliveries])).toEqual([["Refused", 6, 1]])
      yield* Fiber.interrupt(sub)
    }).pipe(Effect.provide(Chronicle.layerMemory)))

  it.live("a handler whose own effect is interrupted is dead-lettered (HandlerInterrupted), not left pending", () =>
    Effect.gen(function*() {
      const sub = yield* Effect.fork(Subscriber.run(Orders, {
        group: "self-interrupt",
        handlers: { Placed: () => Effect.interrupt, Shipped: () => Effect.void }
      }))
      const producer = yield* Producer.make(Orders)
      yield* producer.Placed({ n: 1 }, { entityId: "o1" })
      yield* Subscriber.awaitIdle("self-interrupt").pipe(Effect.timeout("10 seconds"))
      expect((yield* DeadLetters.list("self-interrupt")).map((l) => l.errorTag)).toEqual(["HandlerInterrupted"])
      yield* Fiber.interrupt(sub)
    }).pipe(Effect.provide(Chronicle.layerMemory)))

  it.effect("limits the store cannot carry are refused when it is built", () =>
    Effect.gen(function*() {
      const built = yield* Effect.either(Layer.build(Chronicle.layerMemoryWith({ limits: { maxBatchEvents: 2000 } })))
      expect(built._tag === "Left" && built.left._tag).toBe("InvalidArgument")
    }).pipe(Effect.scoped))

  it("handler records are exhaustive and closed, and their services and errors are inferred", () => {
    const handlers = {
      Placed: (event: { readonly n: number }) => Effect.log(event.n),
      Shipped: () => Effect.fail(new Refused())
    }
    const run = Subscriber.run(Orders, { group: "g", handlers })
    expectTypeOf(run).toEqualTypeOf<
      Effect.Effect<never, Subscriber.SubscriberError, import("effect-chronicle").EventStore.EventStore | import("effect-chronicle").ConsumerGroups.ConsumerGroups>
    >()
    // @ts-expect-error a missing handler
    Subscriber.run(Orders, { group: "g", handlers: { Placed: () => Effect.void } })
    Subscriber.run(Orders, {
      group: "g",
      // @ts-expect-error a misspelled handler
      handlers: { Placed: () => Effect.void, Shipped: () => Effect.void, Shiped: () => Effect.void }
    })
    Subscriber.run(Orders, {
      group: "g",
      handlers: {
        Placed: (event, ctx) => {
          expectTypeOf(event).toEqualTypeOf<{ readonly _tag: "Placed"; readonly n: number }>()
          expectTypeOf(ctx.redelivered).toEqualTypeOf<boolean>()
          return Effect.void
        },
        Shipped: () => Effect.void
      }
    })
  })
})
