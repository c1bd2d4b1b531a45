/**
 * PostgreSQL helpers for tests: a store layer in a fresh schema of the file's server, a
 * client for inspecting it, statement counts, and dropping what the file created.
 */
import { afterAll } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, Redacted } from "effect"
import { ConsumerGroups, EventStore } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { lazyPostgresServer, type PostgresServer } from "./postgresServer.js"

type Lazy = ReturnType<typeof lazyPostgresServer>

/** A `PgClient` layer on the server (its own pool). */
export const clientLayer = (url: string, maxConnections = 10) =>
  PgClient.layer({ url: Redacted.make(url), maxConnections, applicationName: "chronicle-test" })

/**
 * The store on the file's server, in `schema` (fresh names come from the server's
 * `freshSchema`; every schema named here is recorded so that `dropSchemas` can drop it).
 */
export const postgresStore = (server: Lazy, schemas: Set<string>, options: PostgresChronicle.Options = {}) =>
  Layer.unwrapEffect(
    Effect.map(Effect.promise(() => server.get()), (s: PostgresServer) => {
      const schema = options.schema ?? s.freshSchema("chronicle_t")
      schemas.add(schema)
      return PostgresChronicle.layer({ ...options, schema }).pipe(Layer.provide(clientLayer(s.url)))
    })
  )

/**
 * Top-level statements the server ran so far (pg_stat_statements), the probe's own and the
 * driver's cancel requests (sent in the background when a statement of an earlier test
 * was interrupted) excluded.
 */
export const statementCount = (client: PgClient.PgClient) =>
  Effect.map(
    client.unsafe(`SELECT coalesce(sum(calls), 0)::int8::text FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_cancel_backend%'`).values,
    (rows) => Number(rows[0]?.[0] ?? 0)
  )

/**
 * Drops the schemas this file created (with DATABASE_URL, never anything else: the names
 * are fresh, and a schema that is not there is left alone).
 */
export const dropSchemas = (url: string, schemas: Iterable<string>) =>
  Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    for (const schema of schemas) {
      if (!/^[a-z_][a-z0-9_]*$/.test(schema)) continue
      yield* sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    }
  }).pipe(Effect.provide(clientLayer(url, 1)), Effect.scoped)

/**
 * A test file's PostgreSQL: its server (started on first use) and the schemas it creates,
 * dropped at the end when the server is not the file's own; then the server is stopped.
 * `beforeStop` runs first (close what uses the server).
 */
export const postgresFile = (beforeStop: () => Promise<void> = async () => undefined) => {
  const server = lazyPostgresServer()
  const schemas = new Set<string>()
  afterAll(async () => {
    await beforeStop()
    const s = await server.get()
    if (!s.owned) await Effect.runPromise(dropSchemas(s.url, schemas))
    await server.stop()
  })
  /** A fresh schema name on the file's server (recorded for dropping), with the server's URL. */
  const fresh = (name: string) =>
    Effect.map(Effect.promise(() => server.get()), (s) => {
      const schema = s.freshSchema(name)
      schemas.add(schema)
      return { url: s.url, schema }
    })
  return { server, schemas, fresh }
}

/** A `PgClient` of its own pool, built in the current scope. */
export const clientIn = (url: string, maxConnections = 2) =>
  Effect.map(Layer.build(clientLayer(url, maxConnections)), (ctx) => Context.get(ctx, PgClient.PgClient))

/** A store and its groups on a pool of their own (as another process would have), built in the current scope. */
export const backendIn = (url: string, options: PostgresChronicle.Options) =>
  Effect.map(Layer.build(PostgresChronicle.layer(options).pipe(Layer.provide(clientLayer(url, 4)))), (ctx) => ({
    store: Context.get(ctx, EventStore.EventStore),
    groups: Context.get(ctx, ConsumerGroups.ConsumerGroups)
  }))

/** Real time, whatever clock the fiber has. */
export const realSleep = (ms: number) => Effect.promise(() => new Promise<void>((r) => setTimeout(r, ms)))

/** Takes a lease's whole pending list (every claim page, `pageSize` a page), as a new owner does. */
export const claimAll = (groups: ConsumerGroups.ConsumerGroups.Service, lease: ConsumerGroups.Lease, member: string, pageSize: number) =>
  Effect.gen(function*() {
    const out: Array<ConsumerGroups.Delivery> = []
    let cursor: ConsumerGroups.ClaimCursor | undefined = ConsumerGroups.claimStart
    while (cursor !== undefined) {
      const page: ConsumerGroups.ClaimPage = yield* groups.claim(lease, member, cursor, pageSize)
      out.push(...page.deliveries)
      cursor = page.next
    }
    return out
  })
