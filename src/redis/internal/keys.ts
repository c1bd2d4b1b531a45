/**
 * Key names of the Redis backend. Every key a script touches carries its partition's
 * hash tag `{category:partition}`, so one script never spans two cluster slots.
 *
 * @internal
 */

const PREFIX = /^[A-Za-z0-9_.:-]{1,64}$/

/** Whether a key prefix is acceptable: 1–64 of `[A-Za-z0-9_.:-]` (no braces, so it cannot change the hash tag). */
export const isValidPrefix = (prefix: unknown): prefix is string => typeof prefix === "string" && PREFIX.test(prefix)

export interface Keys {
  readonly prefix: string
  /** `prefix:{category:p}` */
  readonly tag: (category: string, partition: number) => string
  /** The partition's category log (stream). */
  readonly log: (category: string, partition: number) => string
  /** The partition's set of entity ids. */
  readonly streams: (category: string, partition: number) => string
  /** An entity's version and id map (hash). */
  readonly ids: (category: string, partition: number, id: string) => string
  /** An entity's list of log entry ids, one per version. */
  readonly list: (category: string, partition: number, id: string) => string
  /** The shard channel on which the append script announces a stream's new version. */
  readonly notice: (category: string, partition: number, id: string) => string
  /** The channel of a partition's appends: one notice per append call that wrote. */
  readonly partitionNotice: (category: string, partition: number) => string
  /** The registry entry of a category: its partition count. */
  readonly category: (category: string) => string
  /** The set of every category. */
  readonly categories: string
}

export const makeKeys = (prefix: string): Keys => {
  const tag = (category: string, partition: number) => `${prefix}:{${category}:${partition}}`
  return {
    prefix,
    tag,
    log: (c, p) => `${tag(c, p)}:log`,
    streams: (c, p) => `${tag(c, p)}:streams`,
    ids: (c, p, id) => `${tag(c, p)}:ids:${id}`,
    list: (c, p, id) => `${tag(c, p)}:s:${id}`,
    notice: (c, p, id) => `${tag(c, p)}:appended:${id}`,
    partitionNotice: (c, p) => `${tag(c, p)}:appended`,
    category: (c) => `${prefix}:category:${c}`,
    categories: `${prefix}:categories`
  }
}
