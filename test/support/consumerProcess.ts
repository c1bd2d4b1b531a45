/**
 * A consumer in a process of its own, for tests that kill, freeze or crash it.
 *
 * Usage: tsx consumerProcess.ts <url> <prefix> <category> <group> <consumer> <delayMs> <mode>
 * mode: "normal", or "crash:<n>" to exit the process whenever it handles event n.
 * Every handled event is recorded with RPUSH <prefix>:handled
 * "<consumer>|<stream>|<version>|<eventId>|<redelivered>". Logs (debug included) go to stdout.
 */
import { Duration, Effect, Layer, Logger, LogLevel, Schema } from "effect"
import { Contract, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { endWithParent } from "./orphan.js"

// a consumer outlives nothing: once the process that started it is gone, it ends
endWithParent()

const [url, prefix, category, group, consumer, delay, mode] = process.argv.slice(2) as [string, string, string, string, string, string, string]
const crashOn = mode.startsWith("crash:") ? Number(mode.slice(6)) : undefined

const Events = Contract.make(category, { Happened: { n: Schema.Int }, Followed: { n: Schema.Int } })
const recorder = new Redis(url)

const program = Subscriber.run(Events, {
  group,
  consumer,
  leaseTtl: Duration.millis(Number(process.env.LEASE_TTL_MS ?? 2000)),
  heartbeat: Duration.millis(Number(process.env.HEARTBEAT_MS ?? 500)),
  maxDeliveries: Number(process.env.MAX_DELIVERIES ?? 10),
  readCount: 50,
  concurrency: 4,
  handlers: {
    Happened: (event, ctx) =>
      Effect.gen(function*() {
        if (event.n === crashOn) {
          // let the acks of what came before go out first: only this event is in a crash loop
          yield* Effect.sleep("300 millis")
          console.log(`crashing on ${event.n}`)
          process.exit(3)
        }
        yield* Effect.promise(() =>
          recorder.rpush(`${prefix}:handled`, `${consumer}|${ctx.envelope.stream}|${ctx.envelope.version}|${ctx.envelope.eventId}|${ctx.redelivered}`)
        )
        if (Number(delay) > 0) yield* Effect.sleep(Number(delay))
      }),
    Followed: () => Effect.void
  }
})

const layer = RedisChronicle.layer({ prefix, partitions: process.env.PARTITIONS === undefined ? undefined : Number(process.env.PARTITIONS) }).pipe(Layer.provide(RedisClient.layer({ url })))
console.log("starting")
Effect.runPromise(
  program.pipe(
    Effect.provide(layer),
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => console.log(Array.isArray(message) ? message.join(" ") : String(message))))),
    Logger.withMinimumLogLevel(LogLevel.Debug)
  )
).catch((error) => {
  console.error(error)
  process.exit(1)
})
