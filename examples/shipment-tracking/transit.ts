/** The transit role alone (Redis): runs until stopped. */
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { Store, transit } from "./roles.js"

NodeRuntime.runMain(Layer.launch(transit.pipe(Layer.provide(Store))))
