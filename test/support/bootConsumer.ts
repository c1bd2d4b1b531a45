/**
 * The package test's consumer, from the sources through tsx (the same program as its
 * built twin in the installed app): usage `tsx bootConsumer.ts <url> <prefix>`.
 */
import { Effect, Layer, Schema } from "effect"
import { Contract, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"

const [url, prefix] = process.argv.slice(2) as [string, string]
const Events = Contract.make("boot", { Happened: { n: Schema.Int }, Followed: { n: Schema.Int } })
const layer = RedisChronicle.layer({ prefix, partitions: 1 }).pipe(Layer.provide(RedisClient.layer({ url })))
Effect.runPromise(Subscriber.run(Events, { group: "g", leaseTtl: "3 seconds", handlers: { Happened: () => Effect.void, Followed: () => Effect.void } }).pipe(Effect.provide(layer)))
