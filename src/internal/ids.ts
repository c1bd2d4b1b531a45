/**
 * Identifiers, hashing and sizes shared by every backend.
 *
 * @internal
 */
import { createHash } from "node:crypto"

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** Whether `s` is a UUID in its canonical 8-4-4-4-12 hex form (any version). */
export const isUuid = (s: unknown): s is string => typeof s === "string" && s.length === 36 && UUID.test(s)

let prefixMillis = -1
let prefix = ""

/**
 * A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits from
 * the platform's CSPRNG (those of a v4 UUID, whose variant bits are the same), so ids
 * minted by one process sort roughly by time.
 */
export const uuidv7 = (millis: number): string => {
  const ms = Math.max(0, Math.floor(millis))
  if (ms !== prefixMillis) {
    const hex = ms.toString(16).padStart(12, "0").slice(-12)
    prefix = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7`
    prefixMillis = ms
  }
  // a v4 UUID is xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx: keep what follows its version
  return prefix + crypto.randomUUID().slice(15)
}

/**
 * FNV-1a (32 bit) over the UTF-8 bytes of `s`. It fixes which partition an entity lives
 * in, so it must never change: every process and every version maps an id the same way.
 */
export const fnv1a32 = (s: string): number => {
  let h = 0x811c9dc5
  const byte = (b: number) => {
    h ^= b
    h = Math.imul(h, 0x01000193)
  }
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00)
        i++
      }
    }
    if (c < 0x80) byte(c)
    else if (c < 0x800) {
      byte(0xc0 | (c >> 6))
      byte(0x80 | (c & 0x3f))
    } else if (c < 0x10000) {
      byte(0xe0 | (c >> 12))
      byte(0x80 | ((c >> 6) & 0x3f))
      byte(0x80 | (c & 0x3f))
    } else {
      byte(0xf0 | (c >> 18))
      byte(0x80 | ((c >> 12) & 0x3f))
      byte(0x80 | ((c >> 6) & 0x3f))
      byte(0x80 | (c & 0x3f))
    }
  }
  return h >>> 0
}

/** The partition (0 ≤ p < partitions) of an entity id. */
export const partitionOf = (entityId: string, partitions: number): number =>
  partitions === 1 ? 0 : fnv1a32(entityId) % partitions

/** Splits a stream entry id `ms-seq` into its two numbers; `undefined` when malformed. */
export const parseEntryId = (id: string): readonly [number, number] | undefined => {
  const dash = id.indexOf("-")
  if (dash <= 0) return undefined
  const ms = Number(id.slice(0, dash))
  const seq = Number(id.slice(dash + 1))
  if (!Number.isSafeInteger(ms) || !Number.isSafeInteger(seq) || ms < 0 || seq < 0) return undefined
  return [ms, seq]
}

/** Whether `id` is a well-formed stream entry id `ms-seq`. */
export const isEntryId = (id: unknown): id is string => typeof id === "string" && parseEntryId(id) !== undefined

/** Orders two well-formed entry ids: negative, zero or positive. */
export const compareEntryIds = (a: string, b: string): number => {
  if (a === b) return 0
  const x = parseEntryId(a)!
  const y = parseEntryId(b)!
  return x[0] !== y[0] ? x[0] - y[0] : x[1] - y[1]
}

/** The milliseconds part of an entry id (its commit time). */
export const entryIdMillis = (id: string): number => {
  const dash = id.indexOf("-")
  return Number(dash < 0 ? id : id.slice(0, dash))
}

const uuidBytes = (uuid: string): Buffer => Buffer.from(uuid.replace(/-/g, ""), "hex")

/** The namespace of the follow-up ids this library derives. */
const FOLLOW_UP_NAMESPACE = uuidBytes("6f2c1a3e-8b7d-4e59-a1c0-3d5e7f9b2a41")

/** A UUID version 5 (RFC 9562): SHA-1 of a namespace and a name, so the same inputs give the same id. */
export const uuidv5 = (name: string, namespace: Buffer = FOLLOW_UP_NAMESPACE): string => {
  const hash = createHash("sha1").update(namespace).update(name, "utf8").digest()
  hash[6] = (hash[6]! & 0x0f) | 0x50
  hash[8] = (hash[8]! & 0x3f) | 0x80
  const hex = hash.toString("hex", 0, 16)
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`
}

/**
 * The id of the `index`-th event a handler of `group` produces to `targetStream` while
 * handling the event `causeEventId` of `causeStream` (docs/semantics.md §2): the same on every
 * rerun. An event id is unique only within its stream, so the cause is named by both.
 */
export const followUpId = (group: string, causeStream: string, causeEventId: string, targetStream: string, index: number): string =>
  uuidv5(JSON.stringify([group, causeStream, causeEventId, targetStream, index]))
