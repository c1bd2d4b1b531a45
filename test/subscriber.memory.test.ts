import { Chronicle } from "effect-chronicle"
import { SubscriberSuite } from "effect-chronicle/testing"

SubscriberSuite.conformance("in memory", (config) => Chronicle.layerMemoryWith(config))
