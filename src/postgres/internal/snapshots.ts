/**
 * Snapshots on PostgreSQL (docs/semantics.md §8): the `snapshots` table, one row per
 * stream. The state is kept as its JSON text, as Redis keeps it, so a state that does not
 * survive JSON (a Date, an undefined field) reads back as JSON made it, on every backend.
 * A save is one upsert that writes only over an older snapshot. As on the other
 * backends, a save does not look at the stream: a snapshot that names a version beyond
 * it is stored, and `Aggregate.load` does not trust it.
 *
 * PostgreSQL's text cannot hold U+0000: a save for an entity id containing one is refused
 * before any I/O (no such stream can exist here); a load finds nothing, a remove removes
 * nothing.
 *
 * @internal
 */
import type { PgClient } from "@effect/sql-pg/PgClient"
import { type Duration, Effect, Option } from "effect"
import { InvalidArgument, parseStream, type StoreError, type StreamId } from "../../EventStore.js"
import { type Snapshot, SnapshotStore } from "../../Snapshots.js"
import { makeRuns } from "./deadline.js"
import { hasNul } from "./reads.js"

type Row = readonly [string, string, string | null]

export const makePostgresSnapshots = (sql: PgClient, schema: string, commandTimeout: Duration.Duration): SnapshotStore.Service => {
  const s = `"${schema}"`
  const { read, write } = makeRuns(sql, commandTimeout)
  const loadSql = `SELECT version::text, state_version::text, state FROM ${s}.snapshots WHERE category = $1 AND stream_id = $2`
  const saveSql = `INSERT INTO ${s}.snapshots AS t (category, stream_id, version, state_version, state) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (category, stream_id) DO UPDATE SET version = EXCLUDED.version, state_version = EXCLUDED.state_version, state = EXCLUDED.state
    WHERE t.version < EXCLUDED.version
    RETURNING 1`
  const removeSql = `DELETE FROM ${s}.snapshots WHERE category = $1 AND stream_id = $2`

  /** The stream's parts, or the argument's error; `undefined` when no such stream can be stored here. */
  const parsed = (stream: string): Effect.Effect<StreamId | undefined, InvalidArgument> => {
    const p = parseStream(stream)
    if (p instanceof Error) return Effect.fail(p)
    return Effect.succeed(hasNul(p.id) ? undefined : p)
  }

  const nulRefused = new InvalidArgument({ argument: "stream", reason: "the PostgreSQL store cannot store a NUL character (U+0000) in an entity id" })

  const integer = (argument: string, n: unknown) =>
    typeof n === "number" && Number.isSafeInteger(n) ? undefined : new InvalidArgument({ argument, reason: `${String(n)} is not an integer` })

  return SnapshotStore.of({
    load: (stream) =>
      Effect.flatMap(parsed(stream), (p) =>
        p === undefined
          ? Effect.succeed(Option.none<Snapshot>())
          : read("loadSnapshot", loadSql, [p.category, p.id]).pipe(
            Effect.map((rows) => {
              const row = rows[0] as Row | undefined
              if (row === undefined) return Option.none<Snapshot>()
              try {
                const state: unknown = row[2] === null ? undefined : JSON.parse(row[2])
                return Option.some<Snapshot>({ version: Number(row[0]), stateVersion: Number(row[1]), state })
              } catch {
                return Option.none<Snapshot>()
              }
            })
          )),
    save: (stream, snapshot) =>
      Effect.flatMap(parsed(stream), (p): Effect.Effect<boolean, StoreError | InvalidArgument> => {
        if (p === undefined) return Effect.fail(nulRefused)
        const bad = integer("snapshot.version", snapshot.version) ?? integer("snapshot.stateVersion", snapshot.stateVersion)
        if (bad !== undefined) return Effect.fail(bad)
        let state: string | undefined
        try {
          state = JSON.stringify(snapshot.state)
        } catch (e) {
          return Effect.fail(new InvalidArgument({ argument: "snapshot.state", reason: `does not encode to JSON: ${e instanceof Error ? e.message : String(e)}` }))
        }
        return write("saveSnapshot", saveSql, [p.category, p.id, snapshot.version, snapshot.stateVersion, state ?? null]).pipe(
          Effect.map((rows) => rows.length === 1)
        )
      }),
    remove: (stream) =>
      Effect.flatMap(parsed(stream), (p) =>
        p === undefined
          ? Effect.void
          : write("removeSnapshot", removeSql, [p.category, p.id]).pipe(
            Effect.asVoid
          ))
  })
}
