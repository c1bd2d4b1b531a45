/**
 * Statements given up on, against a server that is alive but slow (src/postgres/internal/
 * deadline.ts): an abandoned statement is cancelled on the server at once, so abandoned
 * statements never pile up there beyond the pool's size; one that never had a connection
 * fails at its deadline, whatever its policy, saying nothing was sent.
 */
import { describe, expect, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Effect, Layer } from "effect"
import { Snapshots } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { clientIn, clientLayer, postgresFile, realSleep } from "../support/postgres.js"

const { fresh } = postgresFile()

const servicesIn = (url: string, options: PostgresChronicle.Options, pool: number) =>
  Effect.map(Layer.build(PostgresChronicle.layer(options).pipe(Layer.provide(clientLayer(url, pool)))), (ctx) => ({
    snapshots: Context.get(ctx, Snapshots.SnapshotStore)
  }))

/** Sessions of the tests' pools (application "chronicle-test") whose statement waits on a lock. */
const waitingOnLocks = (sql: Effect.Effect.Success<ReturnType<typeof clientIn>>) =>
  Effect.map(
    sql.unsafe(`SELECT count(*)::int FROM pg_stat_activity WHERE application_name = 'chronicle-test' AND wait_event_type = 'Lock'`).values,
    (rows) => Number(rows[0]![0])
  )

describe("PostgreSQL: abandoned statements", () => {
  it.live("behind a lock held elsewhere, statements past their deadline are cancelled on the server: those waiting there never exceed the pool", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("abandon_lock")
      const { snapshots } = yield* servicesIn(url, { schema, commandTimeout: "200 millis" }, 4)
      yield* snapshots.save("things-1", { version: 1, stateVersion: 1, state: {} })
      // another session holds the snapshots table exclusively: every snapshot statement waits
      const holder = yield* clientIn(url, 1)
      const admin = yield* clientIn(url, 1)
      const locked = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      yield* Effect.fork(holder.withTransaction(Effect.gen(function*() {
        yield* holder.unsafe(`LOCK TABLE "${schema}".snapshots IN ACCESS EXCLUSIVE MODE`)
        yield* Deferred.succeed(locked, undefined)
        yield* Deferred.await(release)
      })))
      yield* Deferred.await(locked)
      // 16 loaders, each retrying at once after its deadline, for 3 s
      const until = Date.now() + 3000
      const failures = { n: 0 }
      const loaders = yield* Effect.fork(Effect.all(Array.from({ length: 16 }, (_, i) =>
        Effect.gen(function*() {
          while (Date.now() < until) {
            const r = yield* Effect.either(snapshots.load(`things-${i}`))
            if (r._tag === "Left") failures.n++
          }
        })), { concurrency: "unbounded", discard: true }))
      let most = 0
      while (Date.now() < until) {
        most = Math.max(most, yield* waitingOnLocks(admin))
        yield* realSleep(50)
      }
      yield* Effect.fork(Deferred.succeed(release, undefined))
      yield* loaders.await
      expect(failures.n).toBeGreaterThan(16)
      // the pool's 4, and a moment's overlap while a cancel is on its way
      expect(most).toBeLessThanOrEqual(6)
      // and the store works once the lock is gone
      yield* realSleep(100)
      expect((yield* snapshots.load("things-1"))._tag).toBe("Some")
    }).pipe(Effect.scoped), 30_000)

  it.live("a statement that never had a connection fails at its deadline under the awaited policy too, saying nothing was sent", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("abandon_pool")
      const ctx = yield* Layer.build(PostgresChronicle.layer({ schema, commandTimeout: "300 millis" }).pipe(Layer.provideMerge(clientLayer(url, 1))))
      const snapshots = Context.get(ctx, Snapshots.SnapshotStore)
      yield* snapshots.save("things-1", { version: 1, stateVersion: 1, state: {} })
      // the pool's only connection is held by a caller's transaction until the save has ended (or 10 s)
      const sql = Context.get(ctx, PgClient.PgClient)
      const saved = yield* Deferred.make<void>()
      const holding = yield* Deferred.make<void>()
      const held = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
        yield* sql.unsafe(`SELECT 1`)
        yield* Deferred.succeed(holding, undefined)
        yield* Deferred.await(saved).pipe(Effect.timeout("10 seconds"), Effect.ignore)
      })))
      yield* Deferred.await(holding)
      const started = Date.now()
      const result = yield* Effect.either(snapshots.save("things-1", { version: 2, stateVersion: 1, state: {} }))
      const waited = Date.now() - started
      yield* Deferred.succeed(saved, undefined)
      yield* held.await
      expect(result._tag === "Left" && result.left._tag === "StoreUnavailable" && [result.left.retryable, result.left.reason]).toEqual([
        true,
        "no connection within 300ms: nothing was sent"
      ])
      // well before the transaction would have let go of the connection
      expect(waited).toBeLessThan(5000)
    }).pipe(Effect.scoped), 30_000)
})
