/**
 * A consumer in a process of its own whose every handler invocation is recorded by the
 * delivery checker into a file (one JSON line per start and per end, written before the
 * handler goes on, so what it did survives a SIGKILL).
 *
 * Settings come from the environment: BACKEND ("redis", the default, or "postgres"),
 * CATEGORY, GROUP, CONSUMER, RECORD (the file), PARTITIONS, LEASE_TTL_MS, HEARTBEAT_MS,
 * HANDLER_MS ("3", or "1-5": 1 + n mod 5), CONCURRENCY, READ_COUNT, MAX_DELIVERIES,
 * COMMAND_TIMEOUT_MS, CONNECT_TIMEOUT_MS (30 s); on Redis URL and PREFIX; on PostgreSQL
 * DATABASE_URL, SCHEMA, APPEND_TIMEOUT_MS and LOCK_TIMEOUT_MS. Logs go to stdout.
 */
import { Duration, Effect, Layer, Logger, LogLevel, Schedule, Schema } from "effect"
import { type ConsumerGroups, Contract, EventStore, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
// the checker alone (the testing entry also loads the suites, which need vitest)
import * as DeliveryChecker from "effect-chronicle/testing/DeliveryChecker"
import { endWithParent } from "./orphan.js"
import { postgresLayer } from "./scenarioBackend.js"

const env = (name: string, fallback?: string): string => {
  const v = process.env[name] ?? fallback
  if (v === undefined) {
    console.error(`missing ${name}`)
    process.exit(2)
  }
  return v
}

const Events = Contract.make(env("CATEGORY"), { Happened: { n: Schema.Int }, Followed: { n: Schema.Int } })
const recorder = DeliveryChecker.file(env("RECORD"))
const spec = env("HANDLER_MS", "0")
const handlerMs = (n: number) => {
  const [lo, hi] = spec.split("-").map(Number) as [number, number | undefined]
  return hi === undefined ? lo : lo + (n % (hi - lo + 1))
}

// SIGUSR2: one line with this process's consumers as their engines see them (partition
// phases, reads under way, what the reader waits on), for a scenario's report
const engineDump = Effect.async<never>(() => {
  const dump = () =>
    Effect.runFork(Effect.flatMap(Subscriber.localHealth(env("GROUP")), (consumers) => Effect.sync(() => console.log(`engine: ${JSON.stringify(consumers)}`))))
  process.on("SIGUSR2", dump)
  return Effect.sync(() => process.off("SIGUSR2", dump))
})

const subscriber = Subscriber.run(Events, {
  group: env("GROUP"),
  consumer: env("CONSUMER"),
  leaseTtl: Duration.millis(Number(env("LEASE_TTL_MS", "2000"))),
  heartbeat: Duration.millis(Number(env("HEARTBEAT_MS", "500"))),
  maxDeliveries: Number(env("MAX_DELIVERIES", "1000")),
  readCount: Number(env("READ_COUNT", "100")),
  concurrency: Number(env("CONCURRENCY", "4")),
  handlers: DeliveryChecker.recording(recorder, {
    Happened: (event: { readonly n: number }) => {
      const ms = handlerMs(event.n)
      return ms > 0 ? Effect.sleep(ms) : Effect.void
    },
    Followed: () => Effect.void
  })
})
const program = Effect.raceFirst(subscriber, engineDump)

const redisLayer = () =>
  RedisChronicle.layer({ prefix: env("PREFIX"), partitions: Number(env("PARTITIONS", "8")) }).pipe(
    // a consumer (re)started while the server restarts waits for it: loading a large AOF on a busy machine takes seconds
    Layer.provide(RedisClient.layer({
      url: env("URL"),
      commandTimeout: Duration.millis(Number(env("COMMAND_TIMEOUT_MS", "1000"))),
      connectTimeout: Duration.millis(Number(env("CONNECT_TIMEOUT_MS", "30000")))
    }))
  )

const postgresConsumerLayer = () =>
  postgresLayer({
    url: env("DATABASE_URL"),
    schema: env("SCHEMA"),
    partitions: Number(env("PARTITIONS", "8")),
    commandTimeoutMs: Number(env("COMMAND_TIMEOUT_MS", "1000")),
    appendTimeoutMs: Number(env("APPEND_TIMEOUT_MS", "1000")),
    lockTimeoutMs: Number(env("LOCK_TIMEOUT_MS", "500")),
    applicationName: env("CONSUMER")
  }).pipe(
    // as on Redis, a consumer (re)started while the server restarts (or is frozen) waits
    // for it, for at most CONNECT_TIMEOUT_MS: building the store retries retryable failures
    Layer.retry(
      Schedule.spaced("200 millis").pipe(
        Schedule.whileInput((error: unknown) => EventStore.isRetryable(error) || isConnectFailure(error)),
        Schedule.upTo(Duration.millis(Number(env("CONNECT_TIMEOUT_MS", "30000"))))
      )
    )
  )

/** The PgClient's own failure to connect at start (a SqlError, before the store classifies anything). */
const isConnectFailure = (error: unknown) =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "SqlError"

const layer: Layer.Layer<EventStore.EventStore | ConsumerGroups.ConsumerGroups, unknown> =
  env("BACKEND", "redis") === "postgres" ? postgresConsumerLayer() : redisLayer()
// a consumer outlives nothing: once the process that started it is gone, it ends
endWithParent()
console.log("starting")
Effect.runPromise(
  program.pipe(
    Effect.provide(layer),
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => console.log(Array.isArray(message) ? message.join(" ") : String(message))))),
    Logger.withMinimumLogLevel(LogLevel.Info)
  )
).then(
  () => process.exit(0),
  (error) => {
    console.error("stopped:", error)
    process.exit(1)
  }
)
