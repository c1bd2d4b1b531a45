/**
 * Event metadata: what the store records beside every event's fields.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { compareEntryIds, isEntryId } from "./internal/ids.js"

/**
 * An entry id in a partition's category log, `ms-seq` as in Redis Streams; `ms` is the
 * commit time in Unix milliseconds.
 *
 * @since 0.1.0
 * @category schemas
 */
export const EntryId = Schema.String.pipe(
  Schema.filter((s) => isEntryId(s) || "an entry id is `<ms>-<seq>`")
).annotations({ identifier: "EntryId" })

/**
 * @since 0.1.0
 * @category models
 */
export type EntryId = string

/**
 * Where an event sits in its category: a partition and an entry id. Positions are
 * ordered only within their partition.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Position = Schema.Struct({
  partition: Schema.NonNegativeInt,
  entryId: EntryId
}).annotations({ identifier: "Position" })

/**
 * @since 0.1.0
 * @category models
 */
export interface Position {
  readonly partition: number
  readonly entryId: string
}

/**
 * Event metadata as a Schema: identity, place, time and causality.
 *
 * - `eventId`: a UUID, unique per stream and permanent (idempotency key)
 * - `type`: the event's tag in its contract
 * - `stream`: `category-id`
 * - `entityId`: the entity the stream belongs to (the `id` of `category-id`)
 * - `version`: 1 for a stream's first event
 * - `position`: partition and entry id in the category log
 * - `time`: commit time (the entry id's milliseconds)
 * - `eventVersion`: the version of the event's schema it was written with
 * - `correlationId`, `causationId`, `traceparent`: causality and W3C trace context
 * - `personalFields`: the fields of the data marked `Contract.personal`, when any
 *
 * @since 0.1.0
 * @category schemas
 */
export const Envelope = Schema.Struct({
  eventId: Schema.UUID,
  type: Schema.String,
  stream: Schema.String,
  entityId: Schema.String,
  version: Schema.Int.pipe(Schema.greaterThanOrEqualTo(1)),
  position: Position,
  time: Schema.DateTimeUtc,
  eventVersion: Schema.Int.pipe(Schema.greaterThanOrEqualTo(1)),
  correlationId: Schema.optional(Schema.String),
  causationId: Schema.optional(Schema.String),
  traceparent: Schema.optional(Schema.String),
  personalFields: Schema.optional(Schema.Array(Schema.String))
}).annotations({ identifier: "Envelope" })

/**
 * @since 0.1.0
 * @category models
 */
export interface Envelope extends Schema.Schema.Type<typeof Envelope> {}

/**
 * A position in every partition of a category: entry `i` is the last entry id read in
 * partition `i` (`"0-0"` before the first). Reading a category `from` a cursor returns
 * what comes after it.
 *
 * @since 0.1.0
 * @category models
 */
export type CategoryCursor = ReadonlyArray<string>

/**
 * The cursor before the first event of every partition.
 *
 * @since 0.1.0
 * @category cursors
 */
export const startCursor = (partitions: number): CategoryCursor => Array.from({ length: partitions }, () => "0-0")

/**
 * The cursor moved past `position` (unchanged when it is already past it).
 *
 * @since 0.1.0
 * @category cursors
 */
export const advance = (cursor: CategoryCursor, position: Position): CategoryCursor => {
  const current = cursor[position.partition]
  if (current !== undefined && compareEntryIds(current, position.entryId) >= 0) return cursor
  const next = cursor.slice()
  next[position.partition] = position.entryId
  return next
}

/**
 * Whether a cursor has the right shape for `partitions` partitions.
 *
 * @since 0.1.0
 * @category cursors
 */
export const isCursor = (u: unknown, partitions: number): u is CategoryCursor =>
  Array.isArray(u) && u.length === partitions && u.every(isEntryId)
