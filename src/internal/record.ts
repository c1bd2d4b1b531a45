/**
 * Turns a stored log entry into a `RecordedEvent`. Both backends store the same fields:
 * `e` event id, `i` entity id, `v` version, `t` type, `d` data (JSON), `m` metadata
 * (JSON, or "" when there is none). The commit time is the entry id's milliseconds, or given
 * apart where the entry id does not carry it (PostgreSQL's positions `pos-0`).
 *
 * @internal
 */
import { DateTime } from "effect"
import type { Envelope, Position } from "../Envelope.js"
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

/**
 * A stored event as read. Its stream name, position and commit time are made when asked
 * for (prototype getters): many consumers never look at them, and three objects per
 * event read are not free. Copy one with {@link envelopeOf}, not with a spread (which
 * would leave the getters behind).
 */
class Stored implements RecordedEvent {
  private position_: Position | undefined
  constructor(
    readonly eventId: string,
    readonly type: string,
    private readonly category: string,
    readonly entityId: string,
    readonly version: number,
    private readonly partition: number,
    private readonly entryId: string,
    readonly eventVersion: number,
    readonly correlationId: string | undefined,
    readonly causationId: string | undefined,
    readonly traceparent: string | undefined,
    readonly personalFields: ReadonlyArray<string> | undefined,
    readonly data: unknown,
    private readonly millis: number | undefined
  ) {}
  get stream(): string {
    return `${this.category}-${this.entityId}`
  }
  get position(): Position {
    return (this.position_ ??= { partition: this.partition, entryId: this.entryId })
  }
  get time(): DateTime.Utc {
    return DateTime.unsafeMake(this.millis ?? entryIdMillis(this.entryId))
  }
  /** The commit time in ms, without making a `DateTime`. */
  static millisOf(e: Stored): number {
    return e.millis ?? entryIdMillis(e.entryId)
  }
  toJSON() {
    return { ...envelopeOf(this), time: DateTime.formatIso(this.time), data: this.data }
  }
}

/** The commit time of a stored event in ms (cheaper than `time` for events this module made). */
export const commitMillis = (e: RecordedEvent): number => (e instanceof Stored ? Stored.millisOf(e) : e.time.epochMillis)

/** The envelope of a stored event: everything but its data. */
export const envelopeOf = (r: RecordedEvent): Envelope => ({
  eventId: r.eventId,
  type: r.type,
  stream: r.stream,
  entityId: r.entityId,
  version: r.version,
  position: r.position,
  time: r.time,
  eventVersion: r.eventVersion,
  correlationId: r.correlationId,
  causationId: r.causationId,
  traceparent: r.traceparent,
  personalFields: r.personalFields
})

/** A log entry as the fenced read returns it: `[id, e, i, v, t, d, m]`, null where a field is missing. */
export type EntryValues = readonly [string, string | null, string | null, string | null, string | null, string | null, string | null]

/** `toRecorded` of an entry given as its fields' values. */
export const fromValues = (category: string, partition: number, v: EntryValues): RecordedEvent | EventDecodeError =>
  recordOf(category, partition, v[0], v[1] ?? undefined, v[2] ?? undefined, v[3] ?? undefined, v[4] ?? undefined, v[5] ?? undefined, v[6] ?? undefined)

export const toRecorded = (category: string, partition: number, entryId: string, f: StoredFields): RecordedEvent | EventDecodeError =>
  recordOf(category, partition, entryId, f.e, f.i, f.v, f.t, f.d, f.m)

const undecodable = (
  category: string,
  partition: number,
  entryId: string,
  i: string | undefined,
  version: number,
  t: string | undefined,
  reason: string
) =>
  new EventDecodeError({
    stream: i === undefined ? undefined : `${category}-${i}`,
    version: Number.isSafeInteger(version) ? version : undefined,
    partition,
    entryId,
    type: t,
    reason
  })

/**
 * The event an entry holds, from its fields (`e`, `i`, `v`, `t`, `d`, `m`), or why it cannot be read.
 * `millis` is its commit time where the entry id does not carry it (PostgreSQL's `pos-0`).
 */
export const recordOf = (
  category: string,
  partition: number,
  entryId: string,
  e: string | undefined,
  i: string | undefined,
  v: string | undefined,
  t: string | undefined,
  d: string | undefined,
  m: string | undefined,
  millis?: number | undefined
): RecordedEvent | EventDecodeError => {
  const version = v === undefined ? NaN : Number(v)
  if (i === undefined || i === "") return undecodable(category, partition, entryId, i, version, t, "the entry has no entity id")
  if (!Number.isSafeInteger(version) || version < 1) {
    return undecodable(category, partition, entryId, i, version, t, `the entry's version ${JSON.stringify(v)} is not a version`)
  }
  if (e === undefined || e === "") return undecodable(category, partition, entryId, i, version, t, "the entry has no event id")
  if (t === undefined || t === "") return undecodable(category, partition, entryId, i, version, t, "the entry has no type")
  if (d === undefined) return undecodable(category, partition, entryId, i, version, t, "the entry has no data")
  const meta = decodeMeta(m)
  if (meta === undefined) {
    return undecodable(category, partition, entryId, i, version, t, `the entry's metadata ${JSON.stringify(m?.slice(0, 80))} is not valid`)
  }
  let data: unknown
  try {
    data = JSON.parse(d)
  } catch {
    // the parser's message quotes the data, which may be personal: say only what is wrong
    return undecodable(category, partition, entryId, i, version, t, "the data is not JSON")
  }
  return new Stored(e, t, category, i, version, partition, entryId, meta.ev ?? 1, meta.c, meta.k, meta.tp, meta.pf, data, millis)
}
