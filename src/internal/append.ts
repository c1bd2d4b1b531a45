/**
 * Everything an append checks before any I/O, shared by every backend: the stream
 * name, the expected version, the batch and event limits, event ids and JSON encoding.
 *
 * @internal
 */
import {
  BatchTooLarge,
  EmptyBatch,
  EventTooLarge,
  type ExpectedVersion,
  IdempotencyMismatch,
  InvalidArgument,
  InvalidEvent,
  type Limits,
  type NewEvent,
  parseStream
} from "../EventStore.js"
import { isUuid } from "./ids.js"
import { isWellFormed } from "./util.js"

/** An event ready to store: its id, type, JSON data and JSON metadata ("" when none). */
export interface PreparedEvent {
  readonly eventId: string
  readonly type: string
  readonly data: string
  /** The UTF-8 length of `data`. */
  readonly dataBytes: number
  readonly meta: string
}

/** A checked append. `expected` is -1 for "any", -2 for "exists", else the exact version. */
export interface PreparedAppend {
  readonly stream: string
  readonly category: string
  readonly entityId: string
  readonly expectedVersion: ExpectedVersion
  readonly expected: number
  readonly events: ReadonlyArray<PreparedEvent>
}

export type PrepareError = EmptyBatch | BatchTooLarge | EventTooLarge | InvalidEvent | InvalidArgument | IdempotencyMismatch

/** Stored metadata of an event, with short keys. */
export interface Meta {
  readonly ev?: number
  readonly c?: string
  readonly k?: string
  readonly tp?: string
  /** The names of the fields marked personal (for tools that show events). */
  readonly pf?: ReadonlyArray<string>
}

const MAX_META_STRING = 1024
const UPPER = /[A-F]/
const EMPTY = new Set<string>()

export const encodeExpected = (expected: unknown): number | undefined => {
  if (expected === undefined || expected === "any") return -1
  if (expected === "exists") return -2
  if (expected === "no-stream") return 0
  if (typeof expected === "number" && Number.isSafeInteger(expected) && expected >= 0) return expected
  return undefined
}

const invalid = (stream: string, type: string, path: string, reason: string) => new InvalidEvent({ stream, type, path, reason })

const optionalString = (value: unknown): value is string | undefined =>
  value === undefined || (typeof value === "string" && value.length <= MAX_META_STRING)

/** Checks and encodes an append; returns the prepared batch or the first problem. Never throws. */
export const prepareAppend = (
  stream: string,
  events: ReadonlyArray<NewEvent>,
  expectedVersion: ExpectedVersion | undefined,
  limits: Limits
): PreparedAppend | PrepareError => {
  try {
    return prepare(stream, events, expectedVersion, limits)
  } catch (cause) {
    // a getter or a proxy in the input that throws: a bad input, reported as one
    return new InvalidArgument({ argument: "events", reason: `the events could not be read: ${cause instanceof Error ? cause.message : String(cause)}` })
  }
}

const prepare = (
  stream: string,
  events: ReadonlyArray<NewEvent>,
  expectedVersion: ExpectedVersion | undefined,
  limits: Limits
): PreparedAppend | PrepareError => {
  const parsed = parseStream(stream)
  if (parsed instanceof InvalidArgument) return parsed
  const expected = encodeExpected(expectedVersion)
  if (expected === undefined) {
    return new InvalidArgument({
      argument: "expectedVersion",
      reason: `${JSON.stringify(expectedVersion)} is not "any", "no-stream", "exists" or a version ≥ 0`
    })
  }
  if (!Array.isArray(events)) return new InvalidArgument({ argument: "events", reason: "expected an array of events" })
  if (events.length === 0) return new EmptyBatch({ stream })
  if (events.length > limits.maxBatchEvents) {
    return new BatchTooLarge({ stream, events: events.length, bytes: 0, maxEvents: limits.maxBatchEvents, maxBytes: limits.maxBatchBytes })
  }
  const out: Array<PreparedEvent> = new Array(events.length)
  const seen = events.length > 1 ? new Set<string>() : EMPTY
  let bytes = 0
  for (let i = 0; i < events.length; i++) {
    const e = events[i] as NewEvent | undefined
    if (typeof e !== "object" || e === null) return invalid(stream, "?", `[${i}]`, "expected an event object")
    const type = e.type
    if (typeof type !== "string" || type.length === 0 || type.length > 256 || !isWellFormed(type)) {
      return invalid(stream, String(type), "type", "the type must be a well-formed string of 1 to 256 characters")
    }
    if (!isUuid(e.eventId)) return invalid(stream, type, "eventId", `${JSON.stringify(e.eventId)} is not a UUID`)
    const eventId = UPPER.test(e.eventId) ? e.eventId.toLowerCase() : e.eventId
    if (events.length > 1) {
      if (seen.has(eventId)) {
        return new IdempotencyMismatch({ stream, eventId, reason: "the id appears more than once in the batch" })
      }
      seen.add(eventId)
    }
    // what is stored is the data's JSON: the checks look at that, not at the JavaScript
    // value (a Date, a boxed string or an object whose toJSON says otherwise is no object)
    let json: string | undefined
    try {
      json = JSON.stringify(e.data)
    } catch (cause) {
      return invalid(stream, type, "data", `cannot be encoded as JSON: ${cause instanceof Error ? cause.message : String(cause)}`)
    }
    if (typeof json !== "string" || json.charCodeAt(0) !== 123 /* { */) {
      return invalid(stream, type, "data", `the data must encode to a JSON object, not ${json === undefined ? "nothing" : json.length > 40 ? `${json.slice(0, 40)}…` : json}`)
    }
    const size = Buffer.byteLength(json, "utf8")
    if (size > limits.maxEventBytes) {
      return new EventTooLarge({ stream, eventId, type, bytes: size, limit: limits.maxEventBytes })
    }
    bytes += size
    const ev = e.eventVersion
    if (ev !== undefined && (!Number.isSafeInteger(ev) || ev < 1)) {
      return invalid(stream, type, "eventVersion", `${String(ev)} is not an integer ≥ 1`)
    }
    if (!optionalString(e.correlationId)) return invalid(stream, type, "correlationId", "must be a string of at most 1024 characters")
    if (!optionalString(e.causationId)) return invalid(stream, type, "causationId", "must be a string of at most 1024 characters")
    if (!optionalString(e.traceparent)) return invalid(stream, type, "traceparent", "must be a string of at most 1024 characters")
    const pf = e.personalFields
    if (pf !== undefined && (!Array.isArray(pf) || !pf.every((f) => typeof f === "string" && f.length > 0 && f.length <= 128) || pf.length > 256)) {
      return invalid(stream, type, "personalFields", "must be a list of field names")
    }
    out[i] = { eventId, type, data: json, dataBytes: size, meta: encodeMeta(ev, e.correlationId, e.causationId, e.traceparent, pf) }
  }
  if (bytes > limits.maxBatchBytes) {
    return new BatchTooLarge({ stream, events: events.length, bytes, maxEvents: limits.maxBatchEvents, maxBytes: limits.maxBatchBytes })
  }
  return {
    stream,
    category: parsed.category,
    entityId: parsed.id,
    expectedVersion: expectedVersion ?? "any",
    expected,
    events: out
  }
}

const encodeMeta = (
  ev: number | undefined,
  c: string | undefined,
  k: string | undefined,
  tp: string | undefined,
  pf: ReadonlyArray<string> | undefined
): string => {
  const personal = pf !== undefined && pf.length > 0
  if ((ev === undefined || ev === 1) && c === undefined && k === undefined && tp === undefined && !personal) return ""
  const meta: { ev?: number; c?: string; k?: string; tp?: string; pf?: ReadonlyArray<string> } = {}
  if (ev !== undefined && ev !== 1) meta.ev = ev
  if (c !== undefined) meta.c = c
  if (k !== undefined) meta.k = k
  if (tp !== undefined) meta.tp = tp
  if (personal) meta.pf = pf
  return JSON.stringify(meta)
}

/** Reads stored metadata; `undefined` when it is not valid. */
const noMeta: Meta = Object.freeze({})

export const decodeMeta = (meta: string | undefined): Meta | undefined => {
  if (meta === undefined || meta === "") return noMeta
  try {
    const parsed: unknown = JSON.parse(meta)
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined
    const m = parsed as Record<string, unknown>
    if (m.ev !== undefined && (typeof m.ev !== "number" || !Number.isSafeInteger(m.ev) || m.ev < 1)) return undefined
    for (const key of ["c", "k", "tp"]) if (m[key] !== undefined && typeof m[key] !== "string") return undefined
    if (m.pf !== undefined && (!Array.isArray(m.pf) || !m.pf.every((f) => typeof f === "string"))) return undefined
    return m as Meta
  } catch {
    return undefined
  }
}
