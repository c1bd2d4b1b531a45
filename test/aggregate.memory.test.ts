import { Chronicle } from "effect-chronicle"
import { AggregateSuite } from "effect-chronicle/testing"

AggregateSuite.conformance("in memory", (config) => Chronicle.layerMemoryWith(config))
