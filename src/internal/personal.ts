/**
 * Sealing personal fields: each value marked `Contract.personal` is stored as
 * `{ "$pd": 1, "s": subject, "k": key id, "iv": …, "ct": … }` (base64; the GCM tag at the
 * end of `ct`), the plaintext being the value's JSON. The associated data is the event id
 * and the field name, so a ciphertext moved to another event or field fails to open.
 *
 * @internal
 */
import { Effect, Option, Redacted, Schedule } from "effect"
import { liveClock } from "./util.js"
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto"
import * as Contract from "../Contract.js"
import { type DataKey, type KeyStore, type KeyStoreError, PersonalDataError } from "../PersonalData.js"

export interface Sealed {
  readonly $pd: 1
  readonly s: string
  readonly k: string
  readonly iv: string
  readonly ct: string
}

export const isSealed = (u: unknown): u is Sealed => {
  if (typeof u !== "object" || u === null) return false
  const o = u as Record<string, unknown>
  return o.$pd === 1 && typeof o.s === "string" && typeof o.k === "string" && typeof o.iv === "string" && typeof o.ct === "string"
}

// the store keeps event ids lower-case: the associated data uses the id as it will be read
const aadOf = (eventId: string, field: string) => Buffer.from(`${eventId.toLowerCase()}\u0000${field}`, "utf8")

// IVs come from a pool of random bytes filled 4 KiB at a time: one call to the system's
// generator per 341 values instead of one per value (measured: 14% of a personal
// append's CPU went to generating 12 bytes at a time)
const POOL = 4096
let pool = randomBytes(POOL)
let used = 0
const freshIv = (): Buffer => {
  if (used + 12 > POOL) {
    pool = randomBytes(POOL)
    used = 0
  }
  const iv = pool.subarray(used, used + 12)
  used += 12
  return iv
}

const KEY_BYTES = 32

/** Whether a key store's key can be used: AES-256 takes 32 bytes. */
export const isUsable = (key: DataKey): boolean => Redacted.value(key.material).length === KEY_BYTES

export const seal = (key: DataKey, subject: string, eventId: string, field: string, value: unknown): Sealed => {
  const iv = freshIv()
  const cipher = createCipheriv("aes-256-gcm", Redacted.value(key.material), iv)
  cipher.setAAD(aadOf(eventId, field))
  const ct = Buffer.concat([cipher.update(JSON.stringify(value), "utf8"), cipher.final(), cipher.getAuthTag()])
  return { $pd: 1, s: subject, k: key.id, iv: iv.toString("base64"), ct: ct.toString("base64") }
}

/** The value, or undefined when the ciphertext does not authenticate under `key`. */
export const open = (key: DataKey, sealed: Sealed, eventId: string, field: string): { readonly value: unknown } | undefined => {
  try {
    const iv = Buffer.from(sealed.iv, "base64")
    const all = Buffer.from(sealed.ct, "base64")
    if (iv.length !== 12 || all.length < 16) return undefined
    const decipher = createDecipheriv("aes-256-gcm", Redacted.value(key.material), iv)
    decipher.setAAD(aadOf(eventId, field))
    decipher.setAuthTag(all.subarray(all.length - 16))
    const text = Buffer.concat([decipher.update(all.subarray(0, all.length - 16)), decipher.final()]).toString("utf8")
    return { value: JSON.parse(text) }
  } catch {
    return undefined
  }
}

type Definition = Contract.EventDefinition<string, any>

const definitionOf = (contract: Contract.Any, type: string): Definition | undefined =>
  Object.prototype.hasOwnProperty.call(contract.events, type) ? contract.events[type] as Definition : undefined

/** Whether any event of the contract carries personal fields. */
export const hasAnyPersonal = (contract: Contract.Any): boolean =>
  Object.values(contract.events).some((def) => (def as Definition).personalFields.length > 0)

/** Whether events of `type` carry personal fields (nothing to do otherwise). */
export const hasPersonal = (contract: Contract.Any, type: string): boolean => (definitionOf(contract, type)?.personalFields.length ?? 0) > 0

/** The data with its personal fields sealed under their subject's key. */
export const sealData = (
  keys: KeyStore.Service | undefined,
  contract: Contract.Any,
  type: string,
  stream: string,
  entityId: string,
  eventId: string,
  data: Readonly<Record<string, unknown>>
): Effect.Effect<Record<string, unknown>, PersonalDataError | KeyStoreError> =>
  Effect.suspend((): Effect.Effect<Record<string, unknown>, PersonalDataError | KeyStoreError> => {
    const def = definitionOf(contract, type)
    const fields = def?.personalFields.filter((f) => data[f] !== undefined) ?? []
    if (def === undefined || fields.length === 0) return Effect.succeed(data as Record<string, unknown>)
    if (keys === undefined) {
      return Effect.fail(new PersonalDataError({ stream, field: fields[0]!, reason: "personal fields are encrypted, and no KeyStore is provided" }))
    }
    const named = def.subjectField === undefined ? entityId : data[def.subjectField]
    if (typeof named !== "string" || named.length === 0) {
      return Effect.fail(new PersonalDataError({ stream, field: def.subjectField ?? "", reason: "the subject field must hold a non-empty string" }))
    }
    return Effect.flatMap(keys.getOrCreate(named), (key) => {
      if (!isUsable(key)) return Effect.fail(new PersonalDataError({ stream, field: fields[0]!, reason: `the key store gave a key of ${Redacted.value(key.material).length} bytes, not 32` }))
      const out: Record<string, unknown> = { ...data }
      for (const f of fields) out[f] = seal(key, named, eventId, f, data[f])
      return Effect.succeed(out)
    })
  })

/**
 * The stored data with its personal fields opened, or replaced by their forgotten value
 * when their subject's key is gone. Data without sealed values is returned as it is.
 */
export const unsealData = (
  keys: KeyStore.Service | undefined,
  contract: Contract.Any,
  type: string,
  stream: string,
  eventId: string,
  data: unknown
): Effect.Effect<unknown, PersonalDataError | KeyStoreError> =>
  Effect.suspend((): Effect.Effect<unknown, PersonalDataError | KeyStoreError> => {
    const def = definitionOf(contract, type)
    if (def === undefined || typeof data !== "object" || data === null) return Effect.succeed(data)
    const record = data as Record<string, unknown>
    const sealed = def.personalFields.filter((f) => isSealed(record[f]))
    if (sealed.length === 0) return Effect.succeed(data)
    if (keys === undefined) {
      return Effect.fail(new PersonalDataError({ stream, field: sealed[0]!, reason: "the field is encrypted, and no KeyStore is provided" }))
    }
    const out: Record<string, unknown> = { ...record }
    return Effect.as(
      Effect.forEach(sealed, (field) =>
        Effect.flatMap(openSealed(keys, record[field] as Sealed, eventId, field), (o): Effect.Effect<void, PersonalDataError> => {
          switch (o._tag) {
            case "Opened":
              out[field] = o.value
              return Effect.void
            case "Unreadable":
              return Effect.fail(new PersonalDataError({ stream, field, reason: "the encrypted value fails authentication (altered, or not written for this event)" }))
            case "Forgotten": {
              const forgotten = Contract.forgottenOf(def, field)
              if (forgotten === undefined) {
                return Effect.fail(new PersonalDataError({ stream, field, reason: "forgotten, and the contract gives no forgotten value for the field" }))
              }
              out[field] = forgotten.value
              return Effect.void
            }
          }
        }), { discard: true }),
      out
    )
  })

type Opening = { readonly _tag: "Opened"; readonly value: unknown } | { readonly _tag: "Forgotten" } | { readonly _tag: "Unreadable" }

/** One sealed value under its subject's key: opened, forgotten (no key, or another one), or unreadable. */
const openSealed = (keys: KeyStore.Service, sealed: Sealed, eventId: string, field: string): Effect.Effect<Opening, KeyStoreError> =>
  Effect.map(keys.get(sealed.s), (found): Opening => {
    if (Option.isNone(found) || found.value.id !== sealed.k) return { _tag: "Forgotten" }
    const opened = open(found.value, sealed, eventId, field)
    return opened === undefined ? { _tag: "Unreadable" } : { _tag: "Opened", value: opened.value }
  })

/**
 * The named fields of stored data opened where they are sealed, for tools that have no
 * contract (the chronicle command): a forgotten subject's field reads "(forgotten)", one
 * that does not authenticate "(unreadable)".
 */
export const openFields = (
  keys: KeyStore.Service,
  eventId: string,
  data: unknown,
  fields: ReadonlyArray<string>
): Effect.Effect<unknown, KeyStoreError> => {
  if (typeof data !== "object" || data === null) return Effect.succeed(data)
  const record = data as Record<string, unknown>
  const out: Record<string, unknown> = { ...record }
  return Effect.as(
    Effect.forEach(fields.filter((f) => isSealed(record[f])), (field) =>
      Effect.map(openSealed(keys, record[field] as Sealed, eventId, field), (o) => {
        out[field] = o._tag === "Opened" ? o.value : o._tag === "Forgotten" ? "(forgotten)" : "(unreadable)"
      }), { discard: true }),
    out
  )
}

/**
 * For background loops (subscribers, projections): a key store that cannot answer now is
 * asked again, backing off to every 5 s, for as long as it takes; what it says otherwise
 * stays a failure.
 */
export const whileKeyStoreAway = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.retry(effect, {
    while: (e) => (e as { readonly _tag?: unknown } | null)?._tag === "KeyStoreError",
    schedule: Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced("5 seconds")))
  }).pipe(Effect.withClock(liveClock))
