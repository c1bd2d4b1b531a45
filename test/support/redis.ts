/**
 * Redis helpers for tests: the run's server URL, layers under fresh prefixes, and
 * command counters.
 */
import { Effect, Layer } from "effect"
import type { Chronicle } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { inject } from "vitest"

/** The URL of the test run's Redis: one globalSetup started, or REDIS_URL. */
export const redisUrl = (): string => inject("redisUrl")

export const uniquePrefix = (name: string) => `${name}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`

/** An event store on Redis under `prefix`, with its own client. */
export const redisStore = (url: string, options: RedisChronicle.Options): Layer.Layer<Chronicle.Services, unknown> =>
  RedisChronicle.layer(options).pipe(Layer.provide(RedisClient.layer({ url })))

/** A plain ioredis connection for inspecting and tampering with the server, closed with the scope. */
export const rawRedis = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
      await redis.connect()
      return redis
    }),
    (redis) => Effect.promise(() => redis.quit().catch(() => "")).pipe(Effect.ignore)
  )

/** Calls per command from INFO commandstats. */
export const commandStats = async (redis: Redis): Promise<Map<string, number>> => {
  const info = await redis.info("commandstats")
  const out = new Map<string, number>()
  for (const line of info.split("\r\n")) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line)
    if (m) out.set(m[1]!, Number(m[2]))
  }
  return out
}

/** Total commands the server ran, INFO excluded (the probe's own command). */
export const commandCount = (redis: Redis) =>
  Effect.promise(async () => {
    let total = 0
    for (const [name, calls] of await commandStats(redis)) if (name !== "info") total += calls
    return total
  })

/** Calls of one command so far. */
export const callsOf = (redis: Redis, command: string) =>
  Effect.promise(async () => (await commandStats(redis)).get(command) ?? 0)

/** This process's environment without REDIS_URL, for children that must not reach a server by default. */
export const withoutRedisUrl = (): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (k !== "REDIS_URL" && v !== undefined) env[k] = v
  return env
}
