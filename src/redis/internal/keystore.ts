/**
 * The key store of personal data on Redis: one string per data subject,
 * `<keyPrefix>:key:<subject>` = `<key id>:<32 bytes, base64>`, under a prefix of its own
 * (an ACL can then give the event data and the keys to different users, and the keys a
 * backup policy of their own). Made with `SET … NX GET`, so two processes writing for a
 * new subject at once end with one key. Keys are cached for `cacheTtl` (internal/keyCache.ts):
 * a subject forgotten here is forgotten at once (a lookup under way while it is forgotten
 * caches nothing); forgotten by another process, within `cacheTtl` (until then this
 * process still reads the subject's fields, and what it writes for the subject goes under
 * the destroyed key, so it reads as forgotten too).
 *
 * @internal
 */
import { type Duration, Effect } from "effect"
import { makeCachedKeyStore } from "../../internal/keyCache.js"
import { type KeyStore, KeyStoreError } from "../../PersonalData.js"
import type { RedisClient } from "../RedisClient.js"

export const makeRedisKeyStore = (client: RedisClient.Service, keyPrefix: string, cacheTtl: Duration.Duration): KeyStore.Service => {
  const keyOf = (subject: string) => `${keyPrefix}:key:${subject}`
  const failed = (operation: string) => (e: { readonly message: string }) => new KeyStoreError({ operation, reason: e.message })
  return makeCachedKeyStore({
    // GET, then SET NX GET for a subject without one
    getOrCreate: (subject, fresh) =>
      client.call("keyStore.getOrCreate", (r) =>
        (r.get(keyOf(subject)) as Promise<string | null>).then((stored) => {
          if (stored !== null) return stored
          const encoded = fresh()
          return (r.call("SET", keyOf(subject), encoded, "NX", "GET") as Promise<string | null>).then((previous) => previous ?? encoded)
        })).pipe(Effect.mapError(failed("getOrCreate"))),
    get: (subject) =>
      client.call("keyStore.get", (r) => r.get(keyOf(subject))).pipe(
        Effect.mapError(failed("get")),
        Effect.map((stored) => stored ?? undefined)
      ),
    forget: (subject) => client.call("keyStore.forget", (r) => r.del(keyOf(subject))).pipe(Effect.mapError(failed("forget")), Effect.asVoid)
  }, cacheTtl)
}
