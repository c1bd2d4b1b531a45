/**
 * Shipment tracking end to end in one process: the reporter and transit groups run in the
 * background, the producer places five orders, and the program ends once every order has
 * been received and reported.
 *
 * Run: npm start                    (in memory)
 *      REDIS_URL=redis://127.0.0.1:6379 npm start   (on Redis)
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import { Subscriber } from "effect-chronicle"
import { placeOrders, reporter, Store, transit } from "./roles.js"

const ORDERS = 5

const program = Effect.gen(function*() {
  yield* Console.log(`placing ${ORDERS} orders`)
  yield* placeOrders(ORDERS)
  // transit appends each next step before acknowledging the one that caused it, so once
  // transit is idle every order has all four events; then the reporter catches up
  yield* Subscriber.awaitIdle("transit")
  yield* Subscriber.awaitIdle("reporter")
  yield* Console.log("every order was received")
}).pipe(Effect.timeout("60 seconds"))

NodeRuntime.runMain(program.pipe(Effect.provide(Layer.merge(transit, reporter).pipe(Layer.provideMerge(Store)))))
