/**
 * Every service of the toolkit on Redis, with the same semantics as
 * `Chronicle.layerMemory`.
 *
 * @since 0.1.0
 */
import { Config, type ConfigError, Context, Duration, Effect, Layer, Option, Schema, type Scope } from "effect"
import { ConsumerGroups } from "../ConsumerGroups.js"
import { defaultLimits, defaultPartitions, EventStore, type InvalidArgument, type Limits, type PartitionsConfig } from "../EventStore.js"
import { RedisClient, type RedisConnectionError } from "./RedisClient.js"
import { ProjectionStore } from "../Projection.js"
import { SnapshotStore } from "../Snapshots.js"
import { makeRedisGroups } from "./internal/groups.js"
import { makeRedisProjections } from "./internal/projections.js"
import { makeRedisSnapshots } from "./internal/snapshots.js"
import { isValidPrefix, makeKeys } from "./internal/keys.js"
import { makeRedisKeyStore } from "./internal/keystore.js"
import { KeyStore } from "../PersonalData.js"
import { makeRedisStore } from "./internal/store.js"

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
   * `PartitionCountMismatch` when it first touches it. Default 8 (`EventStore.defaultPartitions`):
   * a group's consumers share the work; 1 gives one total order per category.
   */
  readonly partitions?: PartitionsConfig | undefined
  /** Append limits (docs/semantics.md §3); each defaults to `EventStore.defaultLimits`. */
  readonly limits?: Partial<Limits> | undefined
  /** Tuning of append coalescing. */
  readonly coalescing?: {
    /** Events per coalesced script call, at most 512 (default 256). */
    readonly maxEvents?: number | undefined
    /** Script calls in flight per partition on the append connection (default 4); over all partitions at most 16, or this many if larger. */
    readonly maxCallsInFlight?: number | undefined
  } | undefined
  /**
   * How long one live category read blocks before it is issued again, and how long a live
   * read of one stream waits without a notice before it reads again (default 5 seconds).
   */
  readonly liveBlock?: Duration.DurationInput | undefined
  /**
   * What "acknowledged" means beyond the primary's memory (docs/semantics.md §9). With
   * `replicas: n`, every append waits (WAIT) for n replicas and fails with
   * `ReplicationTimeout` when fewer confirm within `timeout` (the events are then written
   * on the primary; a same-id retry is safe). `aof: true` also waits for the AOF fsync
   * (WAITAOF), which needs Redis 7.2 or later: on an older server the Layer fails to
   * build with `ConfigurationError`. Checked when the Layer is built: `replicas` at least
   * 1 (default 1; 0 only with `aof`), `timeout` at least 1 ms and finite (default 1 second),
   * else `ConfigurationError`.
   */
  readonly personalData?: {
    /**
     * The prefix of the key store's keys (one data key per data subject), apart from the
     * events' so that an ACL and a backup policy can treat them apart. Default
     * `<prefix>-keys`.
     */
    readonly keyPrefix?: string | undefined
    /** How long a key read is kept in the process (default 30 seconds): a subject forgotten elsewhere is forgotten here within it. */
    readonly cacheTtl?: Duration.DurationInput | undefined
  } | undefined
  readonly durability?: {
    readonly replicas?: number | undefined
    readonly timeout?: Duration.DurationInput | undefined
    readonly aof?: boolean | undefined
  } | undefined
}

/**
 * The store's options cannot work with this server (a durability mode it lacks, say).
 *
 * @since 0.1.0
 * @category errors
 */
export class ConfigurationError extends Schema.TaggedError<ConfigurationError>()("ConfigurationError", {
  option: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `${this.option}: ${this.reason}`
  }
}

/**
 * The services `make` builds: the same as `Chronicle.layerMemory` provides.
 *
 * @since 0.2.0
 * @category models
 */
export type Services = EventStore | ConsumerGroups | SnapshotStore | ProjectionStore | KeyStore

/**
 * Builds the event store, consumer groups, snapshots and projections on the
 * `RedisClient`'s server, within the current scope (closing it closes the store's
 * connections and fails what is still queued). Every option is checked first: bad input
 * is an `InvalidArgument` or a `ConfigurationError`, never a throw.
 *
 * At start it warns loudly when the server's `maxmemory-policy` is not `noeviction`.
 *
 * @example
 * ```ts
 * import { Context, Effect } from "effect"
 * import { EventStore } from "effect-chronicle"
 * import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
 *
 * const program = Effect.gen(function*() {
 *   const services = yield* RedisChronicle.make({ prefix: "shop" })
 *   const store = Context.get(services, EventStore.EventStore)
 *   return yield* store.partitions("orders")
 * }).pipe(Effect.scoped, Effect.provide(RedisClient.layerConfig()))
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<Context.Context<Services>, InvalidArgument | RedisConnectionError | ConfigurationError, RedisClient | Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? "chronicle"
    const durability = yield* checkDurability(options.durability)
    const liveBlock = yield* checkDuration("liveBlock", options.liveBlock, "5 seconds")
    const store = yield* makeRedisStore({
      prefix,
      partitions: options.partitions ?? defaultPartitions,
      limits: { ...defaultLimits, ...options.limits },
      maxEventsPerCall: Math.max(1, Math.min(512, options.coalescing?.maxEvents ?? 256)),
      maxCallsInFlight: Math.max(1, options.coalescing?.maxCallsInFlight ?? 4),
      liveBlock,
      durability
    })
    const client = yield* RedisClient
    const keys = makeKeys(prefix)
    const groups = yield* makeRedisGroups(client, keys, store.partitions)
    const keyPrefix = options.personalData?.keyPrefix ?? `${prefix}-keys`
    if (!isValidPrefix(keyPrefix) || keyPrefix === prefix) {
      return yield* new ConfigurationError({ option: "personalData.keyPrefix", reason: `${JSON.stringify(keyPrefix)} must be 1 to 64 of [A-Za-z0-9_.:-], and not the events' prefix` })
    }
    const cacheTtl = yield* checkDuration("personalData.cacheTtl", options.personalData?.cacheTtl, "30 seconds")
    return Context.make(EventStore, store).pipe(
      Context.add(ConsumerGroups, groups),
      Context.add(SnapshotStore, makeRedisSnapshots(client, keys, store.partitions)),
      Context.add(ProjectionStore, makeRedisProjections(client, keys)),
      Context.add(KeyStore, makeRedisKeyStore(client, keyPrefix, cacheTtl))
    )
  })

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
export const layer = (
  options: Options = {}
): Layer.Layer<Services, InvalidArgument | RedisConnectionError | ConfigurationError, RedisClient> => Layer.scopedContext(make(options))

/**
 * The options from the environment: the prefix from `CHRONICLE_PREFIX` (default
 * `chronicle`) and, when set, the partition count of new categories from
 * `CHRONICLE_PARTITIONS`.
 *
 * @since 0.2.0
 * @category config
 */
export const defaultConfig: Config.Config<Options> = Config.all({
  prefix: Config.string("CHRONICLE_PREFIX").pipe(Config.withDefault("chronicle")),
  partitions: Config.option(Config.integer("CHRONICLE_PARTITIONS"))
}).pipe(
  Config.map(({ partitions, prefix }): Options => ({ prefix, partitions: Option.getOrUndefined(partitions) }))
)

/**
 * `layer` with its options read from `Config` (by default `defaultConfig`); each option
 * may be a `Config` of its own.
 *
 * @example
 * ```ts
 * import { Config, Layer } from "effect"
 * import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
 *
 * const Live = RedisChronicle.layerConfig({
 *   prefix: Config.string("SHOP_PREFIX"),
 *   partitions: Config.integer("SHOP_PARTITIONS").pipe(Config.withDefault(8))
 * }).pipe(Layer.provide(RedisClient.layerConfig()))
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options> = defaultConfig
): Layer.Layer<Services, InvalidArgument | RedisConnectionError | ConfigurationError | ConfigError.ConfigError, RedisClient> =>
  Layer.scopedContext(Effect.flatMap(Config.unwrap(config), make))

/** A duration option: at least 1 ms and finite, else `ConfigurationError` (never a throw). */
const checkDuration = (option: string, given: Duration.DurationInput | undefined, fallback: Duration.DurationInput) => {
  const d = Duration.decodeUnknown(given ?? fallback).pipe(Option.getOrUndefined)
  return d === undefined || !Duration.isFinite(d) || Duration.toMillis(d) < 1
    ? Effect.fail(new ConfigurationError({ option, reason: `${String(given)} is not a duration of at least 1 ms (and finite)` }))
    : Effect.succeed(d)
}

const checkDurability = (durability: Options["durability"]) =>
  Effect.gen(function*() {
    if (durability === undefined) return undefined
    const aof = durability.aof === true
    const replicas = durability.replicas ?? (aof ? 0 : 1)
    if (!Number.isSafeInteger(replicas) || replicas < (aof ? 0 : 1)) {
      return yield* new ConfigurationError({
        option: "durability.replicas",
        reason: `${String(replicas)} is not an integer ≥ ${aof ? 0 : 1} (without aof, durability waits for at least one replica)`
      })
    }
    // WAIT with a timeout of 0 blocks the append connection for good: never
    const timeout = yield* checkDuration("durability.timeout", durability.timeout, "1 second")
    if (aof) {
      const client = yield* RedisClient
      const info = yield* client.call("info", (r) => r.info("server")).pipe(
        Effect.mapError((e) => new ConfigurationError({ option: "durability.aof", reason: `cannot read the server's version: ${e.message}` }))
      )
      const version = /redis_version:(\d+)\.(\d+)/.exec(info)
      const [major, minor] = version === null ? [0, 0] : [Number(version[1]), Number(version[2])]
      if (major < 7 || (major === 7 && minor < 2)) {
        return yield* new ConfigurationError({
          option: "durability.aof",
          reason: `needs WAITAOF (Redis 7.2 or later); this server runs ${version === null ? "an unknown version" : `${major}.${minor}`}`
        })
      }
    }
    return { replicas, timeout, aof }
  })
