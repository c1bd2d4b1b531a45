/**
 * The event store, snapshots, projection checkpoints and the key store of personal data
 * on PostgreSQL, with the same semantics as `Chronicle.layerMemory`'s (docs/semantics.md
 * §1–4, §7, §8, §11), over `@effect/sql-pg`'s `PgClient`.
 *
 * The layer creates its schema (tables `categories`, `partitions`, `streams`, `events`,
 * `snapshots`, `projections`, `data_keys`, the functions `register`, `append` and
 * `save_checkpoint`, and a `schema_version` row) when it is built, and upgrades one made
 * by an older version in place; it refuses one made by a newer version
 * (`SchemaVersionMismatch`). Once the schema is at this version, starting needs no right
 * beyond using it.
 *
 * How it works, in short: an append is ONE statement, a call of the `append` function,
 * outside any transaction of the caller's. The function locks the partition's row
 * (`FOR UPDATE`, held to commit), runs every check before its first write (partition
 * count, exact replay of the batch's ids, partial replay, expected version), then writes
 * the events at the next positions of the partition. Positions are therefore a gapless
 * prefix in commit order: a category reader reads `pos > cursor` per partition and can
 * never skip an event that commits later. Concurrent appends to one partition from this
 * process go together in one call, each answered on its own. Live reads poll the
 * partitions' heads (5 ms after a change, backing off to 1 s while nothing moves) and are
 * woken at once by this process's own appends; nothing depends on LISTEN/NOTIFY.
 *
 * Errors are classified here: serialization failures, deadlocks, lock or statement
 * timeouts and lost connections are retryable `StoreUnavailable`s; a connection lost
 * after an append was sent is `AppendOutcomeUnknown` (retry with the same event ids), and
 * so is an append call with no reply within `appendTimeout`; one that waits longer than
 * `lockTimeout` for its partition's lock fails, retryable, with nothing written.
 * "Acknowledged" means committed on the server you are connected to, with its
 * `synchronous_commit` setting.
 *
 * Appends need the READ COMMITTED isolation level (the default): a store whose connections
 * default to another one is refused at start with `ConfigurationError`.
 *
 * Snapshots are one row per stream, saved by one statement that never writes over a
 * snapshot at the same or a newer version. A projection's checkpoint and lease are one
 * row; leases expire on the database's clock, never this process's, and a checkpoint is
 * saved by one statement that checks lease and generation first. The key store keeps one
 * key per data subject in `data_keys`, made by one statement that leaves exactly one key
 * when processes create it at once, and caches keys for `personalData.cacheTtl`.
 *
 * PostgreSQL's text cannot hold U+0000: an entity id, event type, projection member or
 * data subject containing it is refused with a typed error before any I/O where it would
 * be written (the other backends accept it); a read for one finds nothing.
 *
 * @since 0.3.0
 */
import type { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Config, type ConfigError, Context, Duration, Effect, Layer, Option, Redacted, type Scope } from "effect"
import {
  defaultLimits,
  defaultPartitions,
  EventStore,
  type InvalidArgument,
  type Limits,
  type PartitionsConfig,
  type PermissionDenied,
  type StoreUnavailable
} from "../EventStore.js"
import { ConsumerGroups } from "../ConsumerGroups.js"
import { makePostgresGroups } from "./internal/groups.js"
import { KeyStore } from "../PersonalData.js"
import { ProjectionStore } from "../Projection.js"
import { SnapshotStore } from "../Snapshots.js"
import { makePostgresKeyStore } from "./internal/keystore.js"
import { makePostgresProjections } from "./internal/projections.js"
import { isValidSchemaName } from "./internal/schema.js"
import { makePostgresSnapshots } from "./internal/snapshots.js"
import { makePostgresStore } from "./internal/store.js"
import { ConfigurationError, type SchemaVersionMismatch } from "./PostgresError.js"

/**
 * @since 0.3.0
 * @category models
 */
export interface Options {
  /**
   * The PostgreSQL schema holding the store's tables (1–63 of `[a-z0-9_]`, not starting
   * with a digit): one per application or tenant. Default `chronicle`.
   */
  readonly schema?: string | undefined
  /**
   * Partitions per category: a number, or `{ default, byCategory }`. A category's count is
   * fixed when it is first written (or followed live); a process configured otherwise
   * fails with `PartitionCountMismatch` when it first touches it. Default 8
   * (`EventStore.defaultPartitions`).
   */
  readonly partitions?: PartitionsConfig | undefined
  /** Append limits (docs/semantics.md §3); each defaults to `EventStore.defaultLimits`. */
  readonly limits?: Partial<Limits> | undefined
  /** Tuning of append coalescing. */
  readonly coalescing?: {
    /** Events per coalesced call of the append function (default 1,000); a larger batch goes alone. */
    readonly maxEvents?: number | undefined
  } | undefined
  /**
   * The longest an append waits for its partition's lock (held by another process's
   * append, or by a transaction that called the append function and has not ended)
   * before it fails with a retryable `StoreUnavailable`, nothing written. Default 5
   * seconds.
   */
  readonly lockTimeout?: Duration.DurationInput | undefined
  /**
   * The longest an append call waits for the database's reply once sent (default 30
   * seconds; longer than `lockTimeout`). Past it the append fails with
   * `AppendOutcomeUnknown` (retry with the same event ids) and the call is cancelled, so
   * that a connection that went silent cannot hold the partition's later appends for good.
   */
  readonly appendTimeout?: Duration.DurationInput | undefined
  /**
   * The longest a read's statement (a page of a stream or of a category, where a
   * category ends, a poll of partition heads, a category's partition count) waits for
   * its reply (default 30 seconds). Past it the read fails with a retryable
   * `StoreUnavailable`, so that a connection gone silent cannot hold a reader, or a live
   * reader, for good; the connection is closed, never reused.
   */
  readonly readTimeout?: Duration.DurationInput | undefined
  /**
   * The longest a statement of the consumer groups (a heartbeat, a lease, a read, an
   * ack…), of snapshots, projection checkpoints and personal-data keys waits for its
   * reply before it fails, retryable (default 10 seconds), once the server was asked to
   * cancel it; its connection is closed, never reused. A group read given up on this
   * way takes nothing should it still run: the partition is claimed again first.
   */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /**
   * Polling of the partitions' heads by live readers (appends of other processes): the
   * interval after a change (default 5 ms), doubling while nothing moves up to `max`
   * (default 1 second). Appends of this process wake its readers at once.
   */
  readonly livePolling?: {
    readonly min?: Duration.DurationInput | undefined
    readonly max?: Duration.DurationInput | undefined
  } | undefined
  /** The key store of personal data (table `data_keys` of the schema). */
  readonly personalData?: {
    /**
     * How long a key read is kept in the process (default 30 seconds): a subject
     * forgotten by another process is forgotten here within it.
     */
    readonly cacheTtl?: Duration.DurationInput | undefined
  } | undefined
}

/**
 * The services `make` builds: the event store, snapshots, projection checkpoints and
 * leases, and the key store of personal data.
 *
 * @since 0.3.0
 * @category models
 */
export type Services =
  | EventStore
  | ConsumerGroups
  | SnapshotStore
  | ProjectionStore
  | KeyStore

/**
 * Every way building the store can fail: bad options, a schema it cannot use, the
 * database away or refusing.
 *
 * @since 0.3.0
 * @category errors
 */
export type MakeError = InvalidArgument | ConfigurationError | SchemaVersionMismatch | StoreUnavailable | PermissionDenied

/**
 * Builds the event store, snapshots, projection checkpoints and the key store on the
 * `PgClient`'s database within the current scope: checks every option (bad input is an
 * `InvalidArgument` or a `ConfigurationError`, never a throw), creates or upgrades the
 * schema, and returns the services.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Config, Context, Effect } from "effect"
 * import { EventStore, PersonalData, Snapshots } from "effect-chronicle"
 * import { PostgresChronicle } from "effect-chronicle/postgres"
 *
 * const program = Effect.gen(function*() {
 *   const services = yield* PostgresChronicle.make({ schema: "shop", personalData: { cacheTtl: "10 seconds" } })
 *   const store = Context.get(services, EventStore.EventStore)
 *   const snapshots = Context.get(services, Snapshots.SnapshotStore)
 *   yield* PersonalData.forget("customer-42").pipe(Effect.provide(services))
 *   return [yield* store.partitions("orders"), yield* snapshots.load("orders-42")] as const
 * }).pipe(Effect.scoped, Effect.provide(PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })))
 * ```
 *
 * @since 0.3.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Context.Context<Services>, MakeError, PgClient.PgClient | Scope.Scope> =>
  Effect.gen(function*() {
    const schema = options.schema ?? "chronicle"
    if (!isValidSchemaName(schema)) {
      return yield* new ConfigurationError({ option: "schema", reason: `${JSON.stringify(schema)} must be 1 to 63 of [a-z0-9_], not starting with a digit` })
    }
    const min = yield* checkDuration("livePolling.min", options.livePolling?.min, "5 millis")
    const max = yield* checkDuration("livePolling.max", options.livePolling?.max, "1 second")
    if (Duration.lessThan(max, min)) {
      return yield* new ConfigurationError({ option: "livePolling.max", reason: `${Duration.format(max)} is shorter than livePolling.min (${Duration.format(min)})` })
    }
    const lockTimeout = yield* checkDuration("lockTimeout", options.lockTimeout, "5 seconds")
    const appendTimeout = yield* checkDuration("appendTimeout", options.appendTimeout, "30 seconds")
    if (!Duration.greaterThan(appendTimeout, lockTimeout)) {
      return yield* new ConfigurationError({ option: "appendTimeout", reason: `${Duration.format(appendTimeout)} is not longer than lockTimeout (${Duration.format(lockTimeout)})` })
    }
    const maxEvents = options.coalescing?.maxEvents ?? 1000
    if (!Number.isSafeInteger(maxEvents) || maxEvents < 1) {
      return yield* new ConfigurationError({ option: "coalescing.maxEvents", reason: `${String(maxEvents)} is not an integer ≥ 1` })
    }
    const commandTimeout = yield* checkDuration("commandTimeout", options.commandTimeout, "10 seconds")
    const readTimeout = yield* checkDuration("readTimeout", options.readTimeout, "30 seconds")
    const cacheTtl = yield* checkDuration("personalData.cacheTtl", options.personalData?.cacheTtl, "30 seconds")
    const { heads, registry, sql, store } = yield* makePostgresStore({
      schema,
      partitions: options.partitions ?? defaultPartitions,
      limits: { ...defaultLimits, ...options.limits },
      maxEventsPerCall: maxEvents,
      lockTimeout,
      appendTimeout,
      readTimeout,
      poll: { min, max },
      // a safety net only: the poller wakes readers when their partitions move
      recheck: Duration.max(max, Duration.seconds(5))
    })
    const groups = yield* makePostgresGroups(sql, registry, heads, { schema, commandTimeout })
    return Context.make(EventStore, store).pipe(
      Context.add(ConsumerGroups, groups),
      Context.add(SnapshotStore, makePostgresSnapshots(sql, schema, commandTimeout)),
      Context.add(ProjectionStore, makePostgresProjections(sql, schema, commandTimeout)),
      Context.add(KeyStore, makePostgresKeyStore(sql, schema, cacheTtl, commandTimeout))
    )
  })

/**
 * The event store, consumer groups, snapshots, projection checkpoints and the key store on PostgreSQL
 * (`Services`). Needs a `PgClient` (from `@effect/sql-pg`), which holds the connection
 * settings, the pool and the secrets (`Redacted`); see `clientLayerConfig` for one from
 * the environment.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { PostgresChronicle } from "effect-chronicle/postgres"
 *
 * const Live = PostgresChronicle.layer({ schema: "shop", partitions: 4 }).pipe(
 *   Layer.provide(PostgresChronicle.clientLayerConfig())
 * )
 * ```
 *
 * @since 0.3.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Services, MakeError, PgClient.PgClient> => Layer.scopedContext(make(options))

/**
 * The options from the environment: the schema from `CHRONICLE_PG_SCHEMA` (default
 * `chronicle`) and, when set, the partition count of new categories from
 * `CHRONICLE_PARTITIONS`.
 *
 * @since 0.3.0
 * @category config
 */
export const defaultConfig: Config.Config<Options> = Config.all({
  schema: Config.string("CHRONICLE_PG_SCHEMA").pipe(Config.withDefault("chronicle")),
  partitions: Config.option(Config.integer("CHRONICLE_PARTITIONS"))
}).pipe(
  Config.map(({ partitions, schema }): Options => ({ schema, partitions: Option.getOrUndefined(partitions) }))
)

/**
 * `layer` with its options read from `Config` (by default `defaultConfig`); each option
 * may be a `Config` of its own.
 *
 * @example
 * ```ts
 * import { Config, Layer } from "effect"
 * import { PostgresChronicle } from "effect-chronicle/postgres"
 *
 * const Live = PostgresChronicle.layerConfig({
 *   schema: Config.string("SHOP_SCHEMA"),
 *   partitions: Config.integer("SHOP_PARTITIONS").pipe(Config.withDefault(8))
 * }).pipe(Layer.provide(PostgresChronicle.clientLayerConfig()))
 * ```
 *
 * @since 0.3.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options> = defaultConfig
): Layer.Layer<Services, MakeError | ConfigError.ConfigError, PgClient.PgClient> => Layer.scopedContext(Effect.flatMap(Config.unwrap(config), make))

/**
 * A `PgClient` layer from the environment, for `layer` and `layerConfig`: the connection
 * URL from `DATABASE_URL` (default `postgres://localhost:5432/postgres`), kept `Redacted`
 * (it may carry a password) until the driver reads it, the pool's size from
 * `DATABASE_POOL_SIZE` (default 10), and a connect timeout of 10 seconds (a statement
 * waiting for a connection of the pool gives up then, as a new connection does, rather
 * than queueing for good). For anything else (TLS, a separate password, …) use
 * `PgClient.layerConfig` of `@effect/sql-pg` directly; give it a `connectTimeout` no
 * longer than the store's deadlines.
 *
 * @since 0.3.0
 * @category layers
 */
export const clientLayerConfig = (): Layer.Layer<PgClient.PgClient | SqlClient, ConfigError.ConfigError | SqlError> =>
  PgClient.layerConfig({
    url: Config.redacted("DATABASE_URL").pipe(Config.withDefault(Redacted.make("postgres://localhost:5432/postgres"))),
    maxConnections: Config.integer("DATABASE_POOL_SIZE").pipe(Config.withDefault(10)),
    connectTimeout: Config.succeed(Duration.seconds(10)),
    applicationName: Config.succeed("effect-chronicle")
  })

/** A duration option: finite and at least 1 ms, else `ConfigurationError` (never a throw). */
const checkDuration = (option: string, given: Duration.DurationInput | undefined, fallback: Duration.DurationInput) => {
  const d = Duration.decodeUnknown(given ?? fallback).pipe(Option.getOrUndefined)
  return d === undefined || !Duration.isFinite(d) || Duration.toMillis(d) < 1
    ? Effect.fail(new ConfigurationError({ option, reason: `${String(given)} is not a duration of at least 1 ms (and finite)` }))
    : Effect.succeed(d)
}
