/**
 * Notices of appends to single streams, for live reads of one stream
 * (`read(stream, { live: true })`). The append script publishes the stream's new version
 * on the stream's shard channel (`prefix:{category:p}:appended:<id>`, the partition's hash
 * tag); this module keeps ONE subscriber connection per store, subscribed to the channels
 * that live readers watch (counted, so many readers of one stream share a subscription),
 * and opens the readers' latches when a notice comes.
 *
 * The append script also publishes on the partition's channel (`<tag>:appended`) once
 * per call: on a Redis Cluster, where one read cannot span partitions, live category
 * readers and consumer groups wait on those.
 *
 * A notice only says "read again": the reader reads by version or entry id, so a lost
 * notice costs a wait (bounded by the reader's recheck), a spurious one a read. After a
 * reconnect ioredis subscribes again; every latch is opened once the server has taken
 * those subscriptions (a PING answered after them), for what was appended in between. On
 * a cluster a shard's subscriber that reconnects (a failover, say) opens every latch
 * when it is back.
 *
 * @internal
 */
import { Effect, Scope } from "effect"
import type { Connection } from "../RedisClient.js"
import { StoreUnavailable } from "../../EventStore.js"
import type { CallError, RedisClient } from "../RedisClient.js"

interface Channel {
  readonly latches: Set<Effect.Latch>
  /** Settles when the server has confirmed the subscription. */
  readonly subscribed: Promise<unknown>
}

export interface Notices {
  /**
   * A latch opened on every notice on `channel` (or on any of `channels`), for the
   * scope's lifetime. It succeeds once the server has confirmed the subscriptions: an
   * append after that is noticed.
   */
  readonly watch: (channel: string | ReadonlyArray<string>) => Effect.Effect<Effect.Latch, CallError, Scope.Scope>
}

export const makeNotices = (client: RedisClient.Service): Effect.Effect<Notices, never, Scope.Scope> =>
  Effect.gen(function*() {
    const storeScope = yield* Effect.scope
    const channels = new Map<string, Channel>()
    const lock = yield* Effect.makeSemaphore(1)
    let connection: Connection | undefined = undefined

    const openAll = () => {
      for (const c of channels.values()) for (const latch of c.latches) latch.unsafeOpen()
    }

    /** The subscriber connection, made on first use and closed with the store. */
    const subscriber = Effect.suspend(() =>
      connection !== undefined ? Effect.succeed(connection) : lock.withPermits(1)(
        Effect.suspend(() => {
          if (connection !== undefined) return Effect.succeed(connection)
          return Scope.extend(client.subscriber("notices"), storeScope).pipe(
            Effect.map((redis) => {
              redis.on("smessage", (channel: string) => {
                const c = channels.get(channel)
                if (c !== undefined) for (const latch of c.latches) latch.unsafeOpen()
              })
              let first = true
              redis.on("ready", () => {
                if (first) return void (first = false)
                // ioredis subscribes again before it says ready; the PING's reply follows those
                redis.ping().then(openAll, openAll)
              })
              // the connection was ready when made; later "ready" events are reconnects
              if (redis.status === "ready") first = false
              // a cluster's shard subscriber made again (a failover, a reconnect)
              redis.on("+subscriber", openAll)
              connection = redis
              return redis
            })
          )
        })
      )
    )

    const release = (channel: string, c: Channel, latch: Effect.Latch) => {
      c.latches.delete(latch)
      if (c.latches.size === 0 && channels.get(channel) === c) {
        channels.delete(channel)
        // ordered on the connection: a later subscription to the channel still holds
        connection?.sunsubscribe(channel).catch(() => undefined)
      }
    }

    const watch: Notices["watch"] = (given) => {
      const names = typeof given === "string" ? [given] : given
      const latch = Effect.unsafeMakeLatch(false)
      const joined: Array<readonly [string, Channel]> = []
      const releaseAll = Effect.sync(() => {
        for (const [name, c] of joined) release(name, c, latch)
        joined.length = 0
      })
      return Effect.acquireRelease(
        Effect.gen(function*() {
          const redis = yield* subscriber.pipe(
            Effect.mapError((e) => new StoreUnavailable({ operation: "read", reason: e.message, retryable: true }))
          )
          for (const name of names) {
            let c = channels.get(name)
            if (c === undefined) {
              c = { latches: new Set(), subscribed: redis.ssubscribe(name) }
              channels.set(name, c)
            }
            c.latches.add(latch)
            joined.push([name, c])
          }
          yield* client.call("read", () => Promise.all(joined.map(([, c]) => c.subscribed)), redis).pipe(
            Effect.tapError(() => releaseAll)
          )
          return latch
        }),
        () => releaseAll
      )
    }

    return { watch }
  })
