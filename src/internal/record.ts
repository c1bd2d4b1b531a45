/**
 * Turns a stored log entry into a `RecordedEvent`. Both backends store the same fields:
 * `e` event id, `i` entity id, `v` version, `t` type, `d` data (JSON), `m` metadata
 * (JSON, or "" when there is none). The commit time is the entry id's milliseconds.
 *
 * @internal
 */
import { DateTime } from "effect"
import { EventDecodeError, type RecordedEvent } from "../EventStore.js"
import { decodeMeta } from "./append.js"
import { entryIdMillis } from "./ids.js"

export interface StoredFields {
  e?: string | undefined
  i?: string | undefined
  v?: string | undefined
  t?: string | undefined
  d?: string | undefined
  m?: string | undefined
}

/** Reads a Redis field list `[k1, v1, k2, v2, …]` into named fields. */
export const fieldsOf = (list: ReadonlyArray<string>): StoredFields => {
  const f: StoredFields = {}
  for (let i = 0; i + 1 < list.length; i += 2) {
    const key = list[i]
    switch (key) {
      case "e":
      case "i":
      case "v":
      case "t":
      case "d":
      case "m":
        f[key] = list[i + 1]
    }
  }
  return f
}

export const toRecorded = (
  category: string,
  partition: number,
  entryId: string,
  f: StoredFields
): RecordedEvent | EventDecodeError => {
  const stream = f.i === undefined ? undefined : `${category}-${f.i}`
  const version = f.v === undefined ? NaN : Number(f.v)
  const fail = (reason: string) =>
    new EventDecodeError({
      stream,
      version: Number.isSafeInteger(version) ? version : undefined,
      partition,
      entryId,
      type: f.t,
      reason
    })
  if (stream === undefined || f.i === "") return fail("the entry has no entity id")
  if (!Number.isSafeInteger(version) || version < 1) return fail(`the entry's version ${JSON.stringify(f.v)} is not a version`)
  if (f.e === undefined || f.e === "") return fail("the entry has no event id")
  if (f.t === undefined || f.t === "") return fail("the entry has no type")
  if (f.d === undefined) return fail("the entry has no data")
  const meta = decodeMeta(f.m)
  if (meta === undefined) return fail(`the entry's metadata ${JSON.stringify(f.m?.slice(0, 80))} is not valid`)
  let data: unknown
  try {
    data = JSON.parse(f.d)
  } catch {
    // the parser's message quotes the data, which may be personal: say only what is wrong
    return fail("the data is not JSON")
  }
  return {
    eventId: f.e,
    type: f.t,
    stream,
    version,
    position: { partition, entryId },
    time: DateTime.unsafeMake(entryIdMillis(entryId)),
    eventVersion: meta.ev ?? 1,
    correlationId: meta.c,
    causationId: meta.k,
    traceparent: meta.tp,
    data
  }
}
