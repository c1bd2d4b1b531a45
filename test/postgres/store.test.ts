/**
 * The event store conformance suite on PostgreSQL, with the partition counts every
 * backend runs it with (1 and 4). On a private server, the suite also checks that a
 * rejected append sends no statement (pg_stat_statements counts them).
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, ManagedRuntime } from "effect"
import { EventStoreSuite } from "effect-chronicle/testing"
import { clientLayer, postgresFile, postgresStore, statementCount } from "../support/postgres.js"

let probe: ManagedRuntime.ManagedRuntime<PgClient.PgClient, unknown> | undefined
const { server, schemas } = postgresFile(async () => {
  await probe?.dispose()
})
const started = await server.get()
probe = ManagedRuntime.make(clientLayer(started.url, 1))
if (started.statementStats) {
  await probe.runPromise(Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")))
}
const statements = probe

EventStoreSuite.conformance("PostgreSQL", (config) => postgresStore(server, schemas, config), {
  commandCount: started.statementStats
    ? Effect.promise(() => statements.runPromise(Effect.flatMap(PgClient.PgClient, statementCount)))
    : undefined
})
