/**
 * The key store of personal data on PostgreSQL: the `data_keys` table, one row per data
 * subject (its key id and 32 bytes of key material). A subject's key is made by one
 * statement that inserts only when the subject has none and otherwise returns the row
 * that is there, even one another process committed a moment before (`ON CONFLICT DO
 * UPDATE` locks and returns it, where `DO NOTHING` would return nothing), so two
 * processes creating at once end with one key. Keys are cached for `cacheTtl`, as on
 * Redis (internal/keyCache.ts): a subject forgotten here is forgotten at once, forgotten
 * by another process within `cacheTtl`.
 *
 * Key material travels as base64 text inside the statements (`decode` / `encode`) and is
 * never part of an error: the errors name the operation and the server's message only.
 *
 * PostgreSQL's text cannot hold U+0000: making a key for a subject containing one fails
 * with `KeyStoreError` before any I/O; such a subject has no key to read (`get` finds
 * none) nor to forget.
 *
 * @internal
 */
import type { PgClient } from "@effect/sql-pg/PgClient"
import { type Duration, Effect } from "effect"
import { makeCachedKeyStore } from "../../internal/keyCache.js"
import { type KeyStore, KeyStoreError } from "../../PersonalData.js"
import type { StoreError } from "../../EventStore.js"
import { makeRuns } from "./deadline.js"
import { hasNul } from "./reads.js"

export const makePostgresKeyStore = (sql: PgClient, schema: string, cacheTtl: Duration.Duration, commandTimeout: Duration.Duration): KeyStore.Service => {
  const s = `"${schema}"`
  const { read, write } = makeRuns(sql, commandTimeout)
  const stored = `key_id || ':' || encode(material, 'base64')`
  const getSql = `SELECT ${stored} FROM ${s}.data_keys WHERE subject = $1`
  // the found row, or the inserted one, or (a concurrent insert won) the winner's, locked by DO UPDATE
  const getOrCreateSql = `WITH found AS (SELECT ${stored} AS k FROM ${s}.data_keys WHERE subject = $1),
    made AS (
      INSERT INTO ${s}.data_keys AS d (subject, key_id, material)
        SELECT $1, $2, decode($3, 'base64') WHERE NOT EXISTS (SELECT 1 FROM found)
        ON CONFLICT (subject) DO UPDATE SET key_id = d.key_id
        RETURNING d.key_id || ':' || encode(d.material, 'base64') AS k
    )
    SELECT k FROM found UNION ALL SELECT k FROM made`
  const forgetSql = `DELETE FROM ${s}.data_keys WHERE subject = $1`
  const failed = (operation: string) => (e: StoreError) => new KeyStoreError({ operation, reason: e.message })
  const nul = new KeyStoreError({ operation: "getOrCreate", reason: "the PostgreSQL key store cannot store a NUL character (U+0000) in a subject" })

  return makeCachedKeyStore({
    getOrCreate: (subject, fresh) =>
      Effect.suspend(() => {
        if (hasNul(subject)) return Effect.fail(nul)
        const encoded = fresh()
        const at = encoded.indexOf(":")
        return write("keyStore.getOrCreate", getOrCreateSql, [subject, encoded.slice(0, at), encoded.slice(at + 1)]).pipe(
          Effect.mapError(failed("getOrCreate")),
          Effect.flatMap((rows) => {
            const k = rows[0]?.[0]
            return typeof k === "string" ? Effect.succeed(k) : Effect.fail(new KeyStoreError({ operation: "getOrCreate", reason: "no key was stored nor found" }))
          })
        )
      }),
    get: (subject) =>
      hasNul(subject)
        ? Effect.succeed(undefined)
        : read("keyStore.get", getSql, [subject]).pipe(
          Effect.mapError(failed("get")),
          Effect.map((rows) => {
            const k = rows[0]?.[0]
            return typeof k === "string" ? k : undefined
          })
        ),
    forget: (subject) =>
      hasNul(subject)
        ? Effect.void
        : write("keyStore.forget", forgetSql, [subject]).pipe(Effect.mapError(failed("forget")), Effect.asVoid)
  }, cacheTtl)
}
