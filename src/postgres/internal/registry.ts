/**
 * The partition registry on PostgreSQL (docs/semantics.md §4): the `categories` table. A
 * category's count is recorded when it is first written (by the append function itself)
 * or followed by a live reader (`register`); other reads only look it up. A process
 * configured with another count fails with `PartitionCountMismatch`. Counts once seen are
 * kept for the life of the store: they never change.
 *
 * @internal
 */
import type { PgClient } from "@effect/sql-pg/PgClient"
import { type Duration, Effect } from "effect"
import { PartitionCountMismatch, type PartitionsConfig, type StoreError } from "../../EventStore.js"
import { partitionsFor } from "../../internal/options.js"
import { makeRuns } from "./deadline.js"

export interface Registry {
  /** The count of a category already resolved by this store, without I/O. */
  readonly known: (category: string) => number | undefined
  /** Records what an append found (the append function checked it). */
  readonly learn: (category: string, partitions: number) => void
  /**
   * A category's partition count. With `register`, records the configured count when none
   * is (and refuses another); without, only looks the count up (the configured one when
   * nothing is recorded yet).
   */
  readonly resolve: (category: string, register: boolean) => Effect.Effect<number, StoreError>
}

export const makeRegistry = (sql: PgClient, schema: string, partitions: PartitionsConfig, timeout: Duration.Duration): Registry => {
  const { read, write } = makeRuns(sql, timeout)
  const known = new Map<string, number>()
  const lookUpSql = `SELECT partitions FROM "${schema}".categories WHERE category = $1`
  const registerSql = `SELECT "${schema}".register($1, $2) AS partitions`

  const check = (category: string, configured: number) => (rows: ReadonlyArray<ReadonlyArray<unknown>>) => {
    const value = rows[0]?.[0]
    if (value === undefined || value === null) return Effect.succeed(configured)
    const recorded = Number(value)
    if (recorded !== configured) return Effect.fail(new PartitionCountMismatch({ category, recorded, configured }))
    known.set(category, recorded)
    return Effect.succeed(recorded)
  }

  return {
    known: (category) => known.get(category),
    learn: (category, n) => {
      known.set(category, n)
    },
    resolve: (category, register) => {
      const hit = known.get(category)
      if (hit !== undefined) return Effect.succeed(hit)
      const configured = partitionsFor(partitions, category)
      const query = register ? write("registry", registerSql, [category, configured]) : read("registry", lookUpSql, [category])
      return Effect.flatMap(query, check(category, configured))
    }
  }
}
