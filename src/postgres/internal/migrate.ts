/**
 * Creating and upgrading the store's schema (schema.ts) when the layer is built. A
 * schema already at this code's version costs one query and needs no privilege beyond
 * reading it; otherwise one transaction, under an advisory lock on the schema's name (two
 * processes starting together do not race), creates what is missing and records the
 * version in `schema_version`. A schema recorded at a newer version than this code knows
 * is refused: an older process must not write to it.
 *
 * @internal
 */
import type { PgClient } from "@effect/sql-pg/PgClient"
import { Effect } from "effect"
import type { PermissionDenied, StoreUnavailable } from "../../EventStore.js"
import { ConfigurationError, SchemaVersionMismatch } from "../PostgresError.js"
import { storeError } from "./errors.js"
import { migrationLockKey, migrations, schemaVersion } from "./schema.js"

const recorded = (sql: PgClient, schema: string) =>
  Effect.flatMap(
    sql.unsafe(`SELECT to_regclass($1) IS NOT NULL`, [`"${schema}".schema_version`]).values,
    (rows) =>
      rows[0]?.[0] === true
        ? Effect.map(sql.unsafe(`SELECT version FROM "${schema}".schema_version`).values, (r) => (r[0] === undefined ? 0 : Number(r[0][0])))
        : Effect.succeed(0)
  )

/**
 * Appends need READ COMMITTED (the append function refuses any other level): a database or
 * role whose default is another level is refused when the store starts, not at the first
 * append.
 */
export const checkIsolation = (sql: PgClient): Effect.Effect<void, ConfigurationError | StoreUnavailable | PermissionDenied> =>
  Effect.flatMap(
    sql.unsafe(`SELECT current_setting('transaction_isolation')`).values.pipe(Effect.mapError((e) => storeError("schema", e))),
    (rows) => {
      const level = String(rows[0]?.[0])
      return level === "read committed"
        ? Effect.void
        : Effect.fail(
          new ConfigurationError({
            option: "default_transaction_isolation",
            reason: `the store's connections run at ${level}; appends need read committed (set it for the store's role, database or connection)`
          })
        )
    }
  )

export const migrate = (sql: PgClient, schema: string): Effect.Effect<void, SchemaVersionMismatch | StoreUnavailable | PermissionDenied> =>
  Effect.gen(function*() {
    const now = yield* recorded(sql, schema).pipe(Effect.mapError((e) => storeError("schema", e)))
    if (now === schemaVersion) return
    if (now > schemaVersion) return yield* new SchemaVersionMismatch({ schema, recorded: now, supported: schemaVersion })
    yield* sql.withTransaction(
      Effect.gen(function*() {
        yield* sql.unsafe(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [migrationLockKey(schema)])
        yield* sql.unsafe(`CREATE SCHEMA IF NOT EXISTS "${schema}"`)
        yield* sql.unsafe(
          `CREATE TABLE IF NOT EXISTS "${schema}".schema_version (only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row), version int NOT NULL)`
        )
        // read again under the lock: another process may have done it meanwhile
        const from = yield* recorded(sql, schema)
        if (from > schemaVersion) return yield* new SchemaVersionMismatch({ schema, recorded: from, supported: schemaVersion })
        for (const statement of migrations(schema, from)) yield* sql.unsafe(statement)
        yield* sql.unsafe(
          `INSERT INTO "${schema}".schema_version (only_row, version) VALUES (true, $1) ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version`,
          [schemaVersion]
        )
      })
    ).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(storeError("schema", e))))
  })
