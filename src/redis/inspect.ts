/**
 * Read-only views of a Redis store for tools: categories, streams and their versions from
 * the registry keys (never SCAN: on a shared server SCAN lists other tenants' keys), and
 * the extent of each partition's log.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import { makeKeys } from "./internal/keys.js"
import { RedisClient } from "./RedisClient.js"

/**
 * A category with its partition count and streams (entity id and version).
 *
 * @since 0.1.0
 * @category models
 */
export interface CategoryListing {
  readonly category: string
  readonly partitions: number
  readonly streams: ReadonlyArray<{ readonly stream: string; readonly version: number; readonly partition: number }>
}

const setMembers = async (redis: RedisClient.Service["shared"], key: string): Promise<Array<string>> => {
  const out: Array<string> = []
  let cursor = "0"
  do {
    const [next, members] = await redis.sscan(key, cursor, "COUNT", 1000)
    cursor = next
    out.push(...members)
  } while (cursor !== "0")
  return out
}

/**
 * Every category of the store under `prefix`, with its streams and their versions.
 *
 * @since 0.1.0
 * @category inspection
 */
export const categories = (prefix: string) =>
  Effect.flatMap(RedisClient, (client) =>
    client.call("inspect", async (r) => {
      const keys = makeKeys(prefix)
      const names = (await setMembers(r, keys.categories)).sort()
      const listings: Array<CategoryListing> = []
      for (const category of names) {
        const partitions = Number(await r.get(keys.category(category))) || 1
        const streams: Array<{ stream: string; version: number; partition: number }> = []
        for (let p = 0; p < partitions; p++) {
          const ids = (await setMembers(r, keys.streams(category, p))).sort()
          const versions = await Promise.all(ids.map((id) => r.hget(keys.ids(category, p, id), "v")))
          ids.forEach((id, i) => streams.push({ stream: `${category}-${id}`, version: Number(versions[i] ?? 0), partition: p }))
        }
        listings.push({ category, partitions, streams })
      }
      return listings
    }))

/**
 * The first and last entry ids of each partition's log ("0-0" when empty).
 *
 * @since 0.1.0
 * @category inspection
 */
export const logExtent = (prefix: string, category: string, partitions: number) =>
  Effect.flatMap(RedisClient, (client) =>
    client.call("inspect", (r) => {
      const keys = makeKeys(prefix)
      return Promise.all(Array.from({ length: partitions }, async (_, p) => {
        const [first, last] = await Promise.all([
          r.xrange(keys.log(category, p), "-", "+", "COUNT", 1),
          r.xrevrange(keys.log(category, p), "+", "-", "COUNT", 1)
        ])
        return { first: first[0]?.[0] ?? "0-0", last: last[0]?.[0] ?? "0-0" }
      }))
    }))

/**
 * The recorded partition count of every category under `prefix`.
 *
 * @since 0.1.0
 * @category inspection
 */
export const partitionCounts = (prefix: string) =>
  Effect.flatMap(RedisClient, (client) =>
    client.call("inspect", async (r) => {
      const keys = makeKeys(prefix)
      const names = await setMembers(r, keys.categories)
      const counts = await Promise.all(names.map((c) => r.get(keys.category(c))))
      const out: Record<string, number> = {}
      names.forEach((c, i) => {
        const n = Number(counts[i])
        if (Number.isSafeInteger(n) && n >= 1) out[c] = n
      })
      return out
    }))
