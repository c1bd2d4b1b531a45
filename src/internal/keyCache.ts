/**
 * The part of a durable key store that every backend shares: the stored form of a key
 * (`<key id>:<32 bytes, base64>`) and a cache of the keys read. Keys are cached for
 * `cacheTtl`: a subject forgotten through this store is forgotten here at once (a lookup
 * under way while it is forgotten caches nothing); forgotten by another process, within
 * `cacheTtl` (until then this process still reads the subject's fields, and what it
 * writes for the subject goes under the destroyed key, so it reads as forgotten too).
 *
 * @internal
 */
import { Duration, Effect, Option, Redacted } from "effect"
import { type DataKey, KeyStore, KeyStoreError, newKey } from "../PersonalData.js"

/** A key as a backend stores it. */
export const encodeKey = (key: DataKey) => `${key.id}:${Buffer.from(Redacted.value(key.material)).toString("base64")}`

/** A stored key, or undefined when what is stored is not one. */
export const decodeKey = (stored: string): DataKey | undefined => {
  const at = stored.indexOf(":")
  if (at <= 0) return undefined
  const material = Buffer.from(stored.slice(at + 1), "base64")
  return material.length === 32 ? { id: stored.slice(0, at), material: Redacted.make(new Uint8Array(material)) } : undefined
}

/** What a backend does, on stored forms (`encodeKey`'s). */
export interface KeyTable {
  /** The subject's stored key, or undefined. */
  readonly get: (subject: string) => Effect.Effect<string | undefined, KeyStoreError>
  /**
   * The subject's stored key; when it has none, stores `fresh()` unless another process
   * stored one meanwhile, and returns the one that is stored (one key per subject).
   */
  readonly getOrCreate: (subject: string, fresh: () => string) => Effect.Effect<string, KeyStoreError>
  /** Destroys the subject's key. */
  readonly forget: (subject: string) => Effect.Effect<void, KeyStoreError>
}

export const makeCachedKeyStore = (table: KeyTable, cacheTtl: Duration.Duration): KeyStore.Service => {
  const cache = new Map<string, { readonly key: DataKey; readonly until: number }>()
  // per subject, how many times this process forgot it: a lookup under way while it is
  // forgotten must not put the destroyed key back in the cache
  const forgets = new Map<string, number>()
  const generation = (subject: string) => forgets.get(subject) ?? 0
  const ttl = Duration.toMillis(cacheTtl)
  const cached = (subject: string) => {
    const hit = cache.get(subject)
    if (hit === undefined) return undefined
    if (hit.until > Date.now()) return hit.key
    cache.delete(subject)
    return undefined
  }
  // the last stored value seen per subject and its key: a write that finds the same value decodes nothing
  const decoded = new Map<string, { readonly stored: string; readonly key: DataKey }>()
  const decodeCached = (subject: string, stored: string): DataKey | undefined => {
    const seen = decoded.get(subject)
    if (seen !== undefined && seen.stored === stored) return seen.key
    const key = decodeKey(stored)
    if (key !== undefined) decoded.set(subject, { stored, key })
    return key
  }
  const remember = (subject: string, key: DataKey, asOf: number) => {
    if (generation(subject) === asOf) cache.set(subject, { key, until: Date.now() + ttl })
    return key
  }
  // the subject is not named: it may itself be personal (an email used as an id, say)
  const unreadable = (operation: string) => new KeyStoreError({ operation, reason: "a stored key is not a key" })

  return KeyStore.of({
    // from the cache when it has the key (a write per round trip to the key store would
    // cut personal appends to an eighth, measured)
    getOrCreate: (subject) =>
      Effect.suspend(() => {
        const hit = cached(subject)
        if (hit !== undefined) return Effect.succeed(hit)
        const asOf = generation(subject)
        return Effect.flatMap(table.getOrCreate(subject, () => encodeKey(newKey())), (stored) => {
          const key = decodeCached(subject, stored)
          return key === undefined ? Effect.fail(unreadable("getOrCreate")) : Effect.succeed(remember(subject, key, asOf))
        })
      }),
    get: (subject) =>
      Effect.suspend(() => {
        const hit = cached(subject)
        if (hit !== undefined) return Effect.succeed(Option.some(hit))
        const asOf = generation(subject)
        return Effect.flatMap(table.get(subject), (stored) => {
          if (stored === undefined) return Effect.succeed(Option.none())
          const key = decodeCached(subject, stored)
          return key === undefined ? Effect.fail(unreadable("get")) : Effect.succeed(Option.some(remember(subject, key, asOf)))
        })
      }),
    forget: (subject) =>
      Effect.suspend(() => {
        forgets.set(subject, generation(subject) + 1)
        cache.delete(subject)
        return table.forget(subject).pipe(
          // a lookup that started while the key was still there caches nothing either
          Effect.ensuring(Effect.sync(() => {
            forgets.set(subject, generation(subject) + 1)
            cache.delete(subject)
            decoded.delete(subject)
          }))
        )
      })
  })
}
