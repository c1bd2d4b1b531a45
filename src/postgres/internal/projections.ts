/**
 * Projection checkpoints and leases on PostgreSQL (docs/semantics.md §7): one row of the
 * `projections` table per projection, holding its checkpoint (generation, cursor,
 * resetDone, category) and its lease (member, expiry, epoch). Every lease decision is
 * taken on the database's clock (`clock_timestamp()`), never this process's: processes
 * whose clocks disagree still agree on who holds a lease. The token is `member:epoch`;
 * the epoch grows each time a lease begins (a member renewing its own unexpired lease
 * keeps it), so an old holder's token never matches again. A checkpoint is saved by
 * `save_checkpoint`, which checks lease and generation under the row's lock and writes in
 * the same statement.
 *
 * PostgreSQL's text cannot hold U+0000: a member or category containing one is refused
 * before any I/O; a token containing one holds no lease (renew answers false, save
 * `LeaseLost`, release does nothing).
 *
 * @internal
 */
import type { PgClient } from "@effect/sql-pg/PgClient"
import { type Duration, Effect } from "effect"
import { InvalidArgument, type StoreError } from "../../EventStore.js"
import { isEntryId } from "../../internal/ids.js"
import { type Checkpoint, CheckpointRejected, ProjectionStore } from "../../Projection.js"
import { makeRuns } from "./deadline.js"
import { hasNul } from "./reads.js"

const NAME = /^[A-Za-z0-9_.-]{1,128}$/

type Row = readonly [string, ReadonlyArray<string> | null, string, string | null]

export const makePostgresProjections = (sql: PgClient, schema: string, commandTimeout: Duration.Duration): ProjectionStore.Service => {
  const s = `"${schema}"`
  const { read, write } = makeRuns(sql, commandTimeout)
  const ttl = `$3::float8 * interval '1 millisecond'`
  // a member renewing its own unexpired lease keeps its epoch; any other start of a lease takes the next
  const acquireSql = `INSERT INTO ${s}.projections AS p (name, lease_member, lease_until, epoch) VALUES ($1, $2, clock_timestamp() + ${ttl}, 1)
    ON CONFLICT (name) DO UPDATE SET
      epoch = CASE WHEN p.lease_member = EXCLUDED.lease_member AND p.lease_until > clock_timestamp() THEN p.epoch ELSE p.epoch + 1 END,
      lease_member = EXCLUDED.lease_member,
      lease_until = clock_timestamp() + ${ttl}
    WHERE p.lease_member IS NULL OR p.lease_until <= clock_timestamp() OR p.lease_member = EXCLUDED.lease_member
    RETURNING p.lease_member || ':' || p.epoch`
  const held = `p.lease_member || ':' || p.epoch = $2`
  const renewSql = `UPDATE ${s}.projections p SET lease_until = clock_timestamp() + ${ttl}
    WHERE p.name = $1 AND ${held} AND p.lease_until > clock_timestamp() RETURNING 1`
  const releaseSql = `UPDATE ${s}.projections p SET lease_member = NULL, lease_until = NULL WHERE p.name = $1 AND ${held}`
  const loadSql = `SELECT generation::text, cursor, reset_done::text, category FROM ${s}.projections WHERE name = $1`
  const saveSql = `SELECT ${s}.save_checkpoint($1, $2, $3, $4::text[], $5, $6)`
  const rebuildSql = `INSERT INTO ${s}.projections AS p (name, generation) VALUES ($1, 1)
    ON CONFLICT (name) DO UPDATE SET generation = p.generation + 1, cursor = NULL
    RETURNING p.generation::text`

  const checked = <A, E>(name: string, f: () => Effect.Effect<A, E>): Effect.Effect<A, E | InvalidArgument> =>
    Effect.suspend((): Effect.Effect<A, E | InvalidArgument> =>
      NAME.test(name)
        ? f()
        : Effect.fail(new InvalidArgument({ argument: "projection", reason: `${JSON.stringify(name)} must be 1 to 128 of [A-Za-z0-9_.-]` }))
    )
  const ttlOf = (ttlMillis: number) =>
    Number.isFinite(ttlMillis) && ttlMillis > 0
      ? Effect.succeed(Math.ceil(ttlMillis))
      : Effect.fail(new InvalidArgument({ argument: "ttlMillis", reason: `${String(ttlMillis)} is not a positive number of milliseconds` }))
  const nul = (argument: string) => new InvalidArgument({ argument, reason: "the PostgreSQL store cannot store a NUL character (U+0000)" })
  const integer = (argument: string, n: unknown) =>
    typeof n === "number" && Number.isSafeInteger(n) && n >= 0 ? undefined : new InvalidArgument({ argument, reason: `${String(n)} is not an integer ≥ 0` })

  return ProjectionStore.of({
    acquire: (name, member, ttlMillis) =>
      checked(name, () => {
        if (hasNul(member)) return Effect.fail(nul("member"))
        return Effect.flatMap(ttlOf(ttlMillis), (ms) =>
          write("projection", acquireSql, [name, member, ms]).pipe(
            Effect.map((rows) => {
              const token = rows[0]?.[0]
              return typeof token === "string" ? token : undefined
            })
          ))
      }),
    renew: (name, token, ttlMillis) =>
      checked(name, () =>
        Effect.flatMap(ttlOf(ttlMillis), (ms) =>
          hasNul(token)
            ? Effect.succeed(false)
            : write("projection", renewSql, [name, token, ms]).pipe(
              Effect.map((rows) => rows.length === 1)
            ))),
    release: (name, token) =>
      checked(name, () =>
        hasNul(token)
          ? Effect.void
          : write("projection", releaseSql, [name, token]).pipe(
            Effect.asVoid
          )),
    load: (name) =>
      checked(name, () =>
        read("projection", loadSql, [name]).pipe(
          Effect.map((rows): Checkpoint => {
            const row = rows[0] as Row | undefined
            if (row === undefined) return { generation: 0, cursor: undefined, resetDone: 0, category: undefined }
            const cursor = row[1] === null ? undefined : [...row[1]]
            return { generation: Number(row[0]), cursor, resetDone: Number(row[2]), category: row[3] ?? undefined }
          })
        )),
    save: (name, token, checkpoint) =>
      checked(name, (): Effect.Effect<void, StoreError | InvalidArgument | CheckpointRejected> => {
        const bad = integer("checkpoint.generation", checkpoint.generation) ?? integer("checkpoint.resetDone", checkpoint.resetDone)
        if (bad !== undefined) return Effect.fail(bad)
        const cursor = checkpoint.cursor
        if (cursor !== undefined && !(Array.isArray(cursor) && cursor.every(isEntryId))) {
          return Effect.fail(new InvalidArgument({ argument: "checkpoint.cursor", reason: "a cursor is a list of entry ids `<ms>-<seq>`" }))
        }
        const category = checkpoint.category === undefined || checkpoint.category === "" ? null : checkpoint.category
        if (category !== null && hasNul(category)) return Effect.fail(nul("checkpoint.category"))
        if (hasNul(token)) return Effect.fail(new CheckpointRejected({ projection: name, reason: "LeaseLost" }))
        return write("projection", saveSql, [name, token, checkpoint.generation, cursor === undefined ? null : [...cursor], checkpoint.resetDone, category]).pipe(
          Effect.flatMap((rows) => {
            const reply = rows[0]?.[0]
            return reply === "ok"
              ? Effect.void
              : Effect.fail(new CheckpointRejected({ projection: name, reason: reply === "generation" ? "GenerationChanged" : "LeaseLost" }))
          })
        )
      }),
    rebuild: (name) =>
      checked(name, () =>
        write("projection", rebuildSql, [name]).pipe(
          Effect.map((rows) => Number(rows[0]?.[0]))
        ))
  })
}
