/** The reporter role alone (Redis): runs until stopped. */
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { reporter, Store } from "./roles.js"

NodeRuntime.runMain(Layer.launch(reporter.pipe(Layer.provide(Store))))
