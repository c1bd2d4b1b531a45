/**
 * Every service of the toolkit on Redis, with the same semantics as
 * `Chronicle.layerMemory`.
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, Layer } from "effect"
import { ConsumerGroups } from "../ConsumerGroups.js"
import { defaultLimits, EventStore, type InvalidArgument, type Limits, type PartitionsConfig } from "../EventStore.js"
import { RedisClient, type RedisConnectionError } from "./RedisClient.js"
import { ProjectionStore } from "../Projection.js"
import { SnapshotStore } from "../Snapshots.js"
import { makeRedisGroups } from "./groups.js"
import { makeRedisProjections } from "./projections.js"
import { makeRedisSnapshots } from "./snapshots.js"
import { makeKeys } from "./keys.js"
import { makeRedisStore } from "./store.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The prefix of every key (1–64 of `[A-Za-z0-9_.:-]`): one per application or tenant. Default `chronicle`. */
  readonly prefix?: string | undefined
  /**
   * Partitions per category: a number, or `{ default, byCategory }`. A category's count is
   * fixed when it is first written; a process configured otherwise fails with
   * `PartitionCountMismatch` when it first touches it. Default 1.
   */
  readonly partitions?: PartitionsConfig | undefined
  /** Append limits (SEMANTICS §3); each defaults to `EventStore.defaultLimits`. */
  readonly limits?: Partial<Limits> | undefined
  /** Tuning of append coalescing. */
  readonly coalescing?: {
    /** Events per coalesced script call, at most 512 (default 256). */
    readonly maxEvents?: number | undefined
    /** Script calls in flight on the append connection (default 4). */
    readonly maxCallsInFlight?: number | undefined
  } | undefined
  /** How long one live read blocks before it is issued again (default 5 seconds). */
  readonly liveBlock?: Duration.DurationInput | undefined
}

/**
 * The event store and consumer groups on Redis. Needs a `RedisClient`.
 *
 * At start it warns loudly when the server's `maxmemory-policy` is not `noeviction`.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
 *
 * const Live = RedisChronicle.layer({ prefix: "shop", partitions: 4 }).pipe(
 *   Layer.provide(RedisClient.layerConfig())
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<EventStore | ConsumerGroups | SnapshotStore | ProjectionStore, InvalidArgument | RedisConnectionError, RedisClient> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const prefix = options.prefix ?? "chronicle"
      const store = yield* makeRedisStore({
        prefix,
        partitions: options.partitions ?? 1,
        limits: { ...defaultLimits, ...options.limits },
        maxEventsPerCall: Math.max(1, Math.min(512, options.coalescing?.maxEvents ?? 256)),
        maxCallsInFlight: Math.max(1, options.coalescing?.maxCallsInFlight ?? 4),
        liveBlock: Duration.decode(options.liveBlock ?? "5 seconds")
      })
      const client = yield* RedisClient
      const keys = makeKeys(prefix)
      const groups = yield* makeRedisGroups(client, keys, store.partitions)
      return Context.make(EventStore, store).pipe(
        Context.add(ConsumerGroups, groups),
        Context.add(SnapshotStore, makeRedisSnapshots(client, keys, store.partitions)),
        Context.add(ProjectionStore, makeRedisProjections(client, keys))
      )
    })
  )
