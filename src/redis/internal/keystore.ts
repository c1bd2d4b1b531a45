/**
 * The key store of personal data on Redis: one string per data subject,
 * `<keyPrefix>:key:<subject>` = `<key id>:<32 bytes, base64>`, under a prefix of its own
 * (an ACL can then give the event data and the keys to different users, and the keys a
 * backup policy of their own). Made with `SET … NX GET`, so two processes writing for a
 * new subject at once end with one key. Keys read are cached in the process for
 * `cacheTtl`: a subject forgotten by another process is forgotten here within that time;
 * forgotten by this process, at once.
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
  const remember = (subject: string, key: DataKey) => {
    cache.set(subject, { key, until: Date.now() + ttl })
    return key
  }
  const unreadable = (operation: string, subject: string) =>
    new KeyStoreError({ operation, reason: `the stored key of subject ${JSON.stringify(subject.slice(0, 80))} is not a key` })

  return KeyStore.of({
    getOrCreate: (subject) =>
      Effect.suspend(() => {
        const hit = cached(subject)
        if (hit !== undefined) return Effect.succeed(hit)
        const made = newKey()
        return client.call("keyStore.getOrCreate", (r) => r.call("SET", keyOf(subject), encode(made), "NX", "GET") as Promise<string | null>).pipe(
          Effect.mapError(failed("getOrCreate")),
          Effect.flatMap((previous) => {
            if (previous === null) return Effect.succeed(remember(subject, made))
            const key = decode(previous)
            return key === undefined ? Effect.fail(unreadable("getOrCreate", subject)) : Effect.succeed(remember(subject, key))
          })
        )
      }),
    get: (subject) =>
      Effect.suspend(() => {
        const hit = cached(subject)
        if (hit !== undefined) return Effect.succeed(Option.some(hit))
        return client.call("keyStore.get", (r) => r.get(keyOf(subject))).pipe(
          Effect.mapError(failed("get")),
          Effect.flatMap((stored) => {
            if (stored === null) return Effect.succeed(Option.none())
            const key = decode(stored)
            return key === undefined ? Effect.fail(unreadable("get", subject)) : Effect.succeed(Option.some(remember(subject, key)))
          })
        )
      }),
    forget: (subject) =>
      Effect.suspend(() => {
        cache.delete(subject)
        return client.call("keyStore.forget", (r) => r.del(keyOf(subject))).pipe(Effect.mapError(failed("forget")), Effect.asVoid)
      })
  })
}
