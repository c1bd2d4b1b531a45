/**
 * The key store of personal data on Redis: one string per data subject,
 * `<keyPrefix>:key:<subject>` = `<key id>:<32 bytes, base64>`, under a prefix of its own
 * (an ACL can then give the event data and the keys to different users, and the keys a
 * backup policy of their own). Made with `SET … NX GET`, so two processes writing for a
 * new subject at once end with one key. Every write asks the server for the key (one
 * `SET … NX GET`), so nothing is written under a key another process has destroyed;
 * reads use keys cached for `cacheTtl`: a subject forgotten by another process is
 * forgotten by this one's reads within that time, forgotten here at once (a read under
 * way while it is forgotten caches nothing).
 *
 * @internal
 */
import { Duration, Effect, Option, Redacted } from "effect"
import { type DataKey, KeyStore, KeyStoreError, newKey } from "../../PersonalData.js"
import type { RedisClient } from "../RedisClient.js"

const encode = (key: DataKey) => `${key.id}:${Buffer.from(Redacted.value(key.material)).toString("base64")}`

const decode = (stored: string): DataKey | undefined => {
  const at = stored.indexOf(":")
  if (at <= 0) return undefined
  const material = Buffer.from(stored.slice(at + 1), "base64")
  return material.length === 32 ? { id: stored.slice(0, at), material: Redacted.make(new Uint8Array(material)) } : undefined
}

export const makeRedisKeyStore = (client: RedisClient.Service, keyPrefix: string, cacheTtl: Duration.Duration): KeyStore.Service => {
  const cache = new Map<string, { readonly key: DataKey; readonly until: number }>()
  // per subject, how many times this process forgot it: a lookup under way while it is
  // forgotten must not put the destroyed key back in the cache
  const forgets = new Map<string, number>()
  const generation = (subject: string) => forgets.get(subject) ?? 0
  const ttl = Duration.toMillis(cacheTtl)
  const keyOf = (subject: string) => `${keyPrefix}:key:${subject}`
  const failed = (operation: string) => (e: { readonly message: string }) => new KeyStoreError({ operation, reason: e.message })
  const cached = (subject: string) => {
    const hit = cache.get(subject)
    if (hit === undefined) return undefined
    if (hit.until > Date.now()) return hit.key
    cache.delete(subject)
    return undefined
  }
  const remember = (subject: string, key: DataKey, asOf: number) => {
    if (generation(subject) === asOf) cache.set(subject, { key, until: Date.now() + ttl })
    return key
  }
  // the subject is not named: it may itself be personal (an email used as an id, say)
  const unreadable = (operation: string) => new KeyStoreError({ operation, reason: "a stored key is not a key" })

  return KeyStore.of({
    // never from the cache: a key destroyed elsewhere must not take new writes
    getOrCreate: (subject) =>
      Effect.suspend(() => {
        const asOf = generation(subject)
        const made = newKey()
        return client.call("keyStore.getOrCreate", (r) => r.call("SET", keyOf(subject), encode(made), "NX", "GET") as Promise<string | null>).pipe(
          Effect.mapError(failed("getOrCreate")),
          Effect.flatMap((previous) => {
            if (previous === null) return Effect.succeed(remember(subject, made, asOf))
            const key = decode(previous)
            return key === undefined ? Effect.fail(unreadable("getOrCreate")) : Effect.succeed(remember(subject, key, asOf))
          })
        )
      }),
    get: (subject) =>
      Effect.suspend(() => {
        const hit = cached(subject)
        if (hit !== undefined) return Effect.succeed(Option.some(hit))
        const asOf = generation(subject)
        return client.call("keyStore.get", (r) => r.get(keyOf(subject))).pipe(
          Effect.mapError(failed("get")),
          Effect.flatMap((stored) => {
            if (stored === null) return Effect.succeed(Option.none())
            const key = decode(stored)
            return key === undefined ? Effect.fail(unreadable("get")) : Effect.succeed(Option.some(remember(subject, key, asOf)))
          })
        )
      }),
    forget: (subject) =>
      Effect.suspend(() => {
        forgets.set(subject, generation(subject) + 1)
        cache.delete(subject)
        return client.call("keyStore.forget", (r) => r.del(keyOf(subject))).pipe(
          Effect.mapError(failed("forget")),
          // a lookup that started while the key was still there caches nothing either
          Effect.ensuring(Effect.sync(() => {
            forgets.set(subject, generation(subject) + 1)
            cache.delete(subject)
          })),
          Effect.asVoid
        )
      })
  })
}
