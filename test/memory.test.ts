import { Chronicle } from "effect-chronicle"
import { EventStoreSuite } from "effect-chronicle/testing"

EventStoreSuite.conformance("in memory", (config) => Chronicle.layerMemoryWith(config))
