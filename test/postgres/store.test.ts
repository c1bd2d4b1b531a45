/**
 * The event store conformance suite on PostgreSQL, with the partition counts every
 * backend runs it with (1 and 4). On a private server, the suite also checks that a
 * rejected append sends no statement (pg_stat_statements counts them).
 */
import { afterAll } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, ManagedRuntime } from "effect"
import { EventStoreSuite } from "effect-chronicle/testing"
import { clientLayer, dropSchemas, postgresStore, statementCount } from "../support/postgres.js"
import { lazyPostgresServer } from "../support/postgresServer.js"

const server = lazyPostgresServer()
const schemas = new Set<string>()
const started = await server.get()
const probe = ManagedRuntime.make(clientLayer(started.url, 1))
if (started.statementStats) {
  await probe.runPromise(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")))
}

afterAll(async () => {
  await probe.dispose()
  if (!started.owned) await Effect.runPromise(dropSchemas(started.url, schemas))
  await server.stop()
})

EventStoreSuite.conformance("PostgreSQL", (config) => postgresStore(server, schemas, config), {
  commandCount: started.statementStats
    ? Effect.promise(() => probe.runPromise(Effect.flatMap(PgClient.PgClient, statementCount)))
    : undefined
})
