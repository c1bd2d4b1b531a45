import { SubscriberSuite } from "effect-chronicle/testing"
import { redisStore, redisUrl, uniquePrefix } from "./support/redis.js"

const url = redisUrl()

SubscriberSuite.conformance("Redis", (config) => redisStore(url, { prefix: uniquePrefix("sub"), ...config }))
