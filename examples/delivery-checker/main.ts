/**
 * The delivery checker: a subscriber's every handler invocation recorded, then checked
 * against what a group promises (order per entity, nothing lost, no late start).
 *
 * Run: npx tsx examples/delivery-checker/main.ts
 */
import { Console, Effect, Fiber, Schema } from "effect"
import { Chronicle, Contract, Producer, Subscriber } from "effect-chronicle"
// the checker alone (the testing entry also loads the suites, which need vitest)
import * as DeliveryChecker from "effect-chronicle/testing/DeliveryChecker"

const Orders = Contract.make("orders", { Placed: { n: Schema.Int } })

const program = Effect.gen(function*() {
  const history = DeliveryChecker.memory()
  const consumer = yield* Effect.fork(Subscriber.run(Orders, {
    group: "billing",
    handlers: DeliveryChecker.recording(history, { Placed: () => Effect.sleep("1 millis") })
  }))
  const producer = yield* Producer.make(Orders)
  const expected: Array<DeliveryChecker.Expected> = []
  for (let n = 0; n < 200; n++) {
    const position = yield* producer.Placed({ n }, { entityId: `o${n % 10}` })
    void position
    expected.push({ stream: `orders-o${n % 10}`, version: Math.floor(n / 10) + 1 })
  }
  yield* Subscriber.awaitIdle("billing")
  yield* Fiber.interrupt(consumer)
  const report = DeliveryChecker.check(history.invocations, { expected })
  yield* Console.log(`handled ${report.handled} of ${expected.length}; order violations ${report.orderViolations.length}, lost ${report.lost.length}, late starts ${report.lateStarts.length}`)
})

Effect.runPromise(program.pipe(Effect.provide(Chronicle.layerMemory)))
