/**
 * What the store checks of the server and its connections.
 *
 * @internal
 */
import { Duration, Effect } from "effect"
import type { Connection } from "../RedisClient.js"
import type { RedisClient } from "../RedisClient.js"

/**
 * The next "ready" of each connection that is not ready, shared: however many calls wait
 * for one connection (every coalesced call sent while it reconnects), it holds one
 * listener.
 */
const readiness = new WeakMap<Connection, Promise<void>>()

const nextReady = (redis: Connection): Promise<void> => {
  let ready = readiness.get(redis)
  if (ready === undefined) {
    ready = new Promise<void>((resolve) => {
      redis.once("ready", () => {
        readiness.delete(redis)
        resolve()
      })
    })
    readiness.set(redis, ready)
  }
  return ready
}

/** Resolves when the connection is ready, or fails (nothing sent) after `timeout`. */
export const whenReady = (redis: Connection, timeout: Duration.Duration): Promise<void> => {
  if (redis.status === "ready") return Promise.resolve()
  return new Promise((resolve, reject) => {
    let waiting = true
    const timer = setTimeout(() => {
      waiting = false
      reject(new Error(`the connection is ${redis.status}, not ready`))
    }, Duration.toMillis(timeout))
    void nextReady(redis).then(() => {
      if (!waiting) return
      clearTimeout(timer)
      resolve()
    })
  })
}

/** Warns loudly when the server may evict keys: an event store must never lose data to eviction. */
export const checkEvictionPolicy = (client: RedisClient.Service) =>
  client.call("info", (r) => r.info("memory")).pipe(
    Effect.flatMap((info) => {
      const policy = /maxmemory_policy:(\S+)/.exec(info)?.[1]
      return policy === undefined || policy === "noeviction"
        ? Effect.void
        : Effect.logWarning(
          `Redis at ${client.url} runs with maxmemory-policy ${policy}: it may EVICT EVENTS under memory pressure. ` +
            "Set `maxmemory-policy noeviction` for an event store."
        )
    }),
    Effect.catchAll((e) => Effect.logWarning(`could not check Redis's maxmemory-policy (${e.message}); it must be noeviction`))
  )
