/** The producer role alone (Redis): places ORDERS orders (default 20), PAUSE_MS apart. */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Effect } from "effect"
import { placeOrders, Store } from "./roles.js"

NodeRuntime.runMain(
  Effect.gen(function*() {
    const count = yield* Config.integer("ORDERS").pipe(Config.withDefault(20))
    const pause = yield* Config.integer("PAUSE_MS").pipe(Config.withDefault(0))
    yield* placeOrders(count, pause)
  }).pipe(Effect.provide(Store))
)
