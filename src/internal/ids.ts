/**
 * Identifiers, hashing and sizes shared by every backend.
 *
 * @internal
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** Whether `s` is a UUID in its canonical 8-4-4-4-12 hex form (any version). */
export const isUuid = (s: unknown): s is string => typeof s === "string" && s.length === 36 && UUID.test(s)

const HEX: Array<string> = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))

const formatUuid = (b: Uint8Array): string => {
  let s = ""
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += "-"
    s += HEX[b[i]!]
  }
  return s
}

/**
 * A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, so ids
 * minted by one process sort roughly by time.
 */
export const uuidv7 = (millis: number): string => {
  const b = new Uint8Array(16)
  crypto.getRandomValues(b)
  const ms = Math.max(0, Math.floor(millis))
  const high = Math.floor(ms / 0x100000000)
  const low = ms >>> 0
  b[0] = (high >>> 8) & 0xff
  b[1] = high & 0xff
  b[2] = (low >>> 24) & 0xff
  b[3] = (low >>> 16) & 0xff
  b[4] = (low >>> 8) & 0xff
  b[5] = low & 0xff
  b[6] = (b[6]! & 0x0f) | 0x70
  b[8] = (b[8]! & 0x3f) | 0x80
  return formatUuid(b)
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

/** The UTF-8 length of `s` in bytes, without allocating. */
export const utf8Length = (s: string): number => {
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) n += 1
    else if (c < 0x800) n += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4
        i++
      } else n += 3
    } else n += 3
  }
  return n
}

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
