/**
 * The PostgreSQL backend: `PostgresChronicle.layer` provides the `EventStore`,
 * `SnapshotStore`, `ProjectionStore` and `KeyStore` over `@effect/sql-pg`'s `PgClient`.
 *
 * @since 0.3.0
 */

/**
 * The event store and its services on PostgreSQL: `layer`, `layerConfig`, `make`, and a
 * `PgClient` layer from the environment.
 *
 * @since 0.3.0
 */
export * as PostgresChronicle from "./PostgresChronicle.js"

/**
 * The errors of building the PostgreSQL store.
 *
 * @since 0.3.0
 */
export * as PostgresError from "./PostgresError.js"
