/**
 * The partition registry (docs/semantics.md §4): a category's partition count is recorded
 * when the category is first written (SET NX) and by live readers before they read; other
 * reads only look it up. A process configured with another count fails with
 * `PartitionCountMismatch` when it first touches the category. Counts once seen are kept
 * for the life of the store: they never change.
 *
 * @internal
 */
import { Effect } from "effect"
import { PartitionCountMismatch, type PartitionsConfig, type StoreError } from "../../EventStore.js"
import { partitionsFor } from "../../internal/options.js"
import type { RedisClient } from "../RedisClient.js"
import type { Keys } from "./keys.js"

export interface Registry {
  /** The count of a category already resolved by this store, without I/O. */
  readonly known: (category: string) => number | undefined
  /**
   * A category's partition count. With `register`, records the configured count when none
   * is (and refuses another); without, only looks the count up (the configured one when
   * nothing is recorded yet).
   */
  readonly resolve: (category: string, register: boolean) => Effect.Effect<number, StoreError>
}

export const makeRegistry = (client: RedisClient.Service, keys: Keys, partitions: PartitionsConfig): Registry => {
  const known = new Map<string, number>()
  const mismatch = (category: string, recorded: number, configured: number) =>
    new PartitionCountMismatch({ category, recorded: Number.isSafeInteger(recorded) ? recorded : -1, configured })

  const lookUp = (category: string, configured: number) =>
    client.call("registry", (r) => r.get(keys.category(category))).pipe(
      Effect.flatMap((recorded) => {
        if (recorded === null) return Effect.succeed(configured)
        const n = Number(recorded)
        if (n !== configured) return Effect.fail(mismatch(category, n, configured))
        known.set(category, n)
        return Effect.succeed(n)
      })
    )

  const record = (category: string, configured: number) =>
    client.call("registry", (r) =>
      Promise.all([
        r.call("SET", keys.category(category), String(configured), "NX", "GET") as Promise<string | null>,
        r.sadd(keys.categories, category)
      ])).pipe(
        Effect.flatMap(([previous]) => {
          const recorded = previous === null ? configured : Number(previous)
          if (recorded !== configured) return Effect.fail(mismatch(category, recorded, configured))
          known.set(category, configured)
          return Effect.succeed(configured)
        })
      )

  return {
    known: (category) => known.get(category),
    resolve: (category, register) => {
      const hit = known.get(category)
      if (hit !== undefined) return Effect.succeed(hit)
      const configured = partitionsFor(partitions, category)
      return register ? record(category, configured) : lookUp(category, configured)
    }
  }
}
