/**
 * The event store: append with an expected version, idempotent by event id; read a
 * stream; read a category in commit order, catching up and then following live.
 *
 * `EventStore` is raw (encoded payloads and envelopes), so one service serves every
 * contract; {@link forContract} gives the typed view of one contract.
 *
 * @since 0.1.0
 */
import { Context, Effect, Either, Option, Schema, Stream } from "effect"
import * as Contract from "./Contract.js"
import { KeyStore, type KeyStoreError, type PersonalDataError } from "./PersonalData.js"
import type { CategoryCursor, Envelope, Position } from "./Envelope.js"
import { uuidv7 } from "./internal/ids.js"
import { jsonProblem } from "./internal/json.js"
import { notAList, readItem, Unreadable } from "./internal/items.js"
import { hasPersonal, sealData, unsealData } from "./internal/personal.js"
import { envelopeOf } from "./internal/record.js"
import { timedSpan } from "./internal/tracing.js"
import { isWellFormed } from "./internal/util.js"

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/**
 * The expected version of an append: `"any"`, `"no-stream"` (≡ 0), `"exists"` (version
 * above 0) or an exact version.
 *
 * @since 0.1.0
 * @category models
 */
export const ExpectedVersion = Schema.Union(Schema.Literal("any", "no-stream", "exists"), Schema.NonNegativeInt)

/**
 * @since 0.1.0
 * @category models
 */
export type ExpectedVersion = "any" | "no-stream" | "exists" | number

/**
 * The stream's version is not the one the append expected. `actual` is 0 for a
 * missing stream.
 *
 * @since 0.1.0
 * @category errors
 */
export class WrongExpectedVersion extends Schema.TaggedError<WrongExpectedVersion>()("WrongExpectedVersion", {
  stream: Schema.String,
  expected: ExpectedVersion,
  actual: Schema.Int
}) {
  override get message() {
    return `stream ${this.stream}: expected version ${this.expected}, found ${this.actual}`
  }
}

/**
 * An append reuses event ids in a way that is not an exact replay of an earlier append
 * (a later id differs, an id repeats within the batch, or an unknown first id is followed
 * by a known one). Nothing was written.
 *
 * @since 0.1.0
 * @category errors
 */
export class IdempotencyMismatch extends Schema.TaggedError<IdempotencyMismatch>()("IdempotencyMismatch", {
  stream: Schema.String,
  eventId: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `stream ${this.stream}: event ${this.eventId}: ${this.reason}`
  }
}

/**
 * The append may or may not have been written (a timeout, or the connection was lost
 * after the request was sent). Retrying with the same event ids is safe: the store
 * either writes the batch or recognises it as a replay.
 *
 * @since 0.1.0
 * @category errors
 */
export class AppendOutcomeUnknown extends Schema.TaggedError<AppendOutcomeUnknown>()("AppendOutcomeUnknown", {
  stream: Schema.String,
  eventIds: Schema.Array(Schema.String),
  reason: Schema.String
}) {
  override get message() {
    return `stream ${this.stream}: the outcome of appending ${this.eventIds.length} event(s) is unknown (${this.reason}); retry with the same event ids`
  }
}

/**
 * The events were written on the primary, but fewer replicas (or disks) confirmed them
 * within the durability timeout than the store requires. A same-id retry is safe: it is
 * recognised as a replay and waits for confirmation again.
 *
 * @since 0.1.0
 * @category errors
 */
export class ReplicationTimeout extends Schema.TaggedError<ReplicationTimeout>()("ReplicationTimeout", {
  stream: Schema.String,
  eventIds: Schema.Array(Schema.String),
  required: Schema.Int,
  confirmed: Schema.Int
}) {
  override get message() {
    return `stream ${this.stream}: ${this.eventIds.length} event(s) written on the primary, but ${this.confirmed} of ${this.required} required confirmation(s) came in time; retry with the same event ids`
  }
}

/**
 * An append with no events.
 *
 * @since 0.1.0
 * @category errors
 */
export class EmptyBatch extends Schema.TaggedError<EmptyBatch>()("EmptyBatch", {
  stream: Schema.String
}) {
  override get message() {
    return `stream ${this.stream}: an append needs at least one event`
  }
}

/**
 * A batch over `maxBatchEvents` events or `maxBatchBytes` bytes; checked before any I/O.
 *
 * @since 0.1.0
 * @category errors
 */
export class BatchTooLarge extends Schema.TaggedError<BatchTooLarge>()("BatchTooLarge", {
  stream: Schema.String,
  events: Schema.Int,
  bytes: Schema.Int,
  maxEvents: Schema.Int,
  maxBytes: Schema.Int
}) {
  override get message() {
    return `stream ${this.stream}: a batch of ${this.events} event(s), ${this.bytes} bytes, is over the limit of ${this.maxEvents} events and ${this.maxBytes} bytes`
  }
}

/**
 * One event over `maxEventBytes` (the UTF-8 length of its encoded fields' JSON);
 * checked before any I/O.
 *
 * @since 0.1.0
 * @category errors
 */
export class EventTooLarge extends Schema.TaggedError<EventTooLarge>()("EventTooLarge", {
  stream: Schema.String,
  eventId: Schema.String,
  type: Schema.String,
  bytes: Schema.Int,
  limit: Schema.Int
}) {
  override get message() {
    return `stream ${this.stream}: event ${this.type} (${this.eventId}) is ${this.bytes} bytes, over the limit of ${this.limit}`
  }
}

/**
 * An event that fails its schema (or is not a valid raw event), rejected before any I/O.
 * `path` names the field.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidEvent extends Schema.TaggedError<InvalidEvent>()("InvalidEvent", {
  stream: Schema.String,
  type: Schema.String,
  path: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `stream ${this.stream}: event ${this.type}${this.path ? ` field ${this.path}` : ""}: ${this.reason}`
  }
}

/**
 * An argument the store cannot accept (a malformed stream name, expected version,
 * cursor or option).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidArgument extends Schema.TaggedError<InvalidArgument>()("InvalidArgument", {
  argument: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `invalid ${this.argument}: ${this.reason}`
  }
}

/**
 * A contract whose definition has problems (see `Contract.make`).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidContract extends Schema.TaggedError<InvalidContract>()("InvalidContract", {
  contract: Schema.String,
  issues: Schema.Array(Schema.String)
}) {
  override get message() {
    return `contract ${this.contract} is invalid: ${this.issues.join("; ")}`
  }
}

/**
 * A stored event whose type its contract does not know (written by a newer producer).
 *
 * @since 0.1.0
 * @category errors
 */
export class UnknownEventType extends Schema.TaggedError<UnknownEventType>()("UnknownEventType", {
  stream: Schema.String,
  version: Schema.Int,
  type: Schema.String
}) {
  override get message() {
    return `stream ${this.stream} version ${this.version}: unknown event type ${this.type}`
  }
}

/**
 * A stored event that cannot be read: corrupt data, missing metadata, or fields that fail
 * the contract's schema. `stream` and `version` are given when they could be read;
 * `position` always.
 *
 * @since 0.1.0
 * @category errors
 */
export class EventDecodeError extends Schema.TaggedError<EventDecodeError>()("EventDecodeError", {
  stream: Schema.optional(Schema.String),
  version: Schema.optional(Schema.Int),
  partition: Schema.optional(Schema.Int),
  entryId: Schema.optional(Schema.String),
  type: Schema.optional(Schema.String),
  reason: Schema.String
}) {
  override get message() {
    const where = this.stream !== undefined
      ? `stream ${this.stream} version ${this.version ?? "?"}`
      : `partition ${this.partition ?? "?"} entry ${this.entryId ?? "?"}`
    return `${where}: cannot decode${this.type ? ` event ${this.type}` : ""}: ${this.reason}`
  }
}

/**
 * The category was first written with another partition count than this process is
 * configured with. Partition counts are fixed when a category is first written.
 *
 * @since 0.1.0
 * @category errors
 */
export class PartitionCountMismatch extends Schema.TaggedError<PartitionCountMismatch>()("PartitionCountMismatch", {
  category: Schema.String,
  recorded: Schema.Int,
  configured: Schema.Int
}) {
  override get message() {
    return `category ${this.category} has ${this.recorded} partition(s), this process is configured with ${this.configured}`
  }
}

/**
 * A key the store uses already holds a value of another type. Nothing was written.
 *
 * @since 0.1.0
 * @category errors
 */
export class WrongKeyType extends Schema.TaggedError<WrongKeyType>()("WrongKeyType", {
  key: Schema.String,
  expected: Schema.String,
  actual: Schema.String
}) {
  override get message() {
    return `key ${this.key} holds a ${this.actual}, expected a ${this.expected}; nothing was written`
  }
}

/**
 * The backend did not perform the operation, or its reply did not come (unreachable, a
 * dropped connection, out of memory, not ready, a server error). For an append nothing
 * was written (a lost reply is `AppendOutcomeUnknown` instead); every other operation is
 * safe to repeat.
 *
 * `retryable` is the backend's judgement: true when the failure passes by itself (a
 * restart, a dropped connection, a busy or loading server), false when repeating the
 * same call cannot succeed (a server error such as a deleted consumer group). Background
 * loops retry the first kind under a schedule and give up on the second.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()("StoreUnavailable", {
  operation: Schema.String,
  reason: Schema.String,
  retryable: Schema.optionalWith(Schema.Boolean, { default: () => true })
}) {
  override get message() {
    return `${this.operation}: the store is unavailable: ${this.reason}`
  }
}

/**
 * Whether a failure passes by itself, so that the same call may succeed later: a
 * retryable `StoreUnavailable`, an `AppendOutcomeUnknown` or a `ReplicationTimeout` (both
 * safe to retry with the same event ids). The backend decides; nothing here reads error
 * texts.
 *
 * @since 0.2.0
 * @category errors
 */
export const isRetryable = (error: unknown): boolean => {
  if (typeof error !== "object" || error === null) return false
  const e = error as { readonly _tag?: unknown; readonly retryable?: unknown }
  return (e._tag === "StoreUnavailable" && e.retryable === true) || e._tag === "AppendOutcomeUnknown" || e._tag === "ReplicationTimeout"
}

/**
 * The backend refused the operation for lack of permission (an ACL, say). Nothing was
 * touched.
 *
 * @since 0.1.0
 * @category errors
 */
export class PermissionDenied extends Schema.TaggedError<PermissionDenied>()("PermissionDenied", {
  operation: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `${this.operation}: permission denied: ${this.reason}`
  }
}

/**
 * Failures of a backend call shared by every operation.
 *
 * @since 0.1.0
 * @category errors
 */
export type StoreError = StoreUnavailable | PermissionDenied | WrongKeyType | PartitionCountMismatch

/**
 * Every way an append can fail.
 *
 * @since 0.1.0
 * @category errors
 */
export type AppendError =
  | WrongExpectedVersion
  | IdempotencyMismatch
  | AppendOutcomeUnknown
  | ReplicationTimeout
  | EmptyBatch
  | BatchTooLarge
  | EventTooLarge
  | InvalidEvent
  | InvalidArgument
  | StoreError

/**
 * Every way a read can fail.
 *
 * @since 0.1.0
 * @category errors
 */
export type ReadError = EventDecodeError | InvalidArgument | StoreError

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------

/**
 * An event to append, already encoded: its id, type and JSON-ready fields.
 *
 * @since 0.1.0
 * @category models
 */
export interface NewEvent {
  /** A UUID; permanent per stream; the idempotency key. */
  readonly eventId: string
  readonly type: string
  /** The encoded fields: a JSON object (the envelope is kept apart). */
  readonly data: unknown
  /** The version of the event's schema the data was encoded with (default 1). */
  readonly eventVersion?: number | undefined
  readonly correlationId?: string | undefined
  readonly causationId?: string | undefined
  readonly traceparent?: string | undefined
  /**
   * The names of the fields that hold personal data (the typed path fills it from the
   * contract's `Contract.personal` marks), stored with the event so that tools which show
   * events (the `chronicle` command) can mask them.
   */
  readonly personalFields?: ReadonlyArray<string> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface AppendOptions {
  /** Default `"any"`. */
  readonly expectedVersion?: ExpectedVersion | undefined
}

/**
 * One append of {@link EventStore.Service.appendMany}: a stream, its batch and the
 * batch's expected version.
 *
 * @since 0.2.0
 * @category models
 */
export interface AppendRequest extends AppendOptions {
  readonly stream: string
  readonly events: ReadonlyArray<NewEvent>
}

/**
 * What an append did: the versions and positions of its events. `replayed` is true when
 * the batch had already been written by an earlier append with the same ids: nothing was
 * written and the original versions and positions are returned.
 *
 * @since 0.1.0
 * @category models
 */
export interface AppendResult {
  readonly stream: string
  readonly firstVersion: number
  readonly lastVersion: number
  readonly positions: ReadonlyArray<Position>
  readonly replayed: boolean
}

/**
 * A stored event: its envelope and its encoded fields.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecordedEvent extends Envelope {
  readonly data: unknown
}

/**
 * A stored event decoded with its contract.
 *
 * @since 0.1.0
 * @category models
 */
export interface Recorded<A> extends Envelope {
  readonly event: A
}

/**
 * Emitted once by a live category read when it has read everything that was committed
 * when it started; what follows was committed later.
 *
 * @since 0.1.0
 * @category models
 */
export interface CaughtUp {
  readonly _tag: "CaughtUp"
  /** The cursor at the switch from catching up to following. */
  readonly cursor: CategoryCursor
}

/**
 * Emitted once by a live read of one stream when it has read what the stream held when
 * it started; what follows was appended later.
 *
 * @since 0.2.0
 * @category models
 */
export interface StreamCaughtUp {
  readonly _tag: "CaughtUp"
  /** The last version read before the switch (`from - 1` when nothing was read: 0 for an empty stream). */
  readonly version: number
}

/**
 * @since 0.1.0
 * @category guards
 */
export const isCaughtUp = (u: unknown): u is CaughtUp =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "CaughtUp" && "cursor" in u

/**
 * Whether an element of a live read of one stream is its `CaughtUp` marker.
 *
 * @since 0.2.0
 * @category guards
 */
export const isStreamCaughtUp = (u: unknown): u is StreamCaughtUp =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "CaughtUp" && "version" in u

/**
 * @since 0.1.0
 * @category models
 */
export interface ReadOptions {
  /** The first version to read: default 1 forwards, the last version backwards. */
  readonly from?: number | undefined
  readonly direction?: "forward" | "backward" | undefined
  /** At most this many events (not with `live`). */
  readonly limit?: number | undefined
  /**
   * Catch up, emit `CaughtUp`, then follow the stream as it grows, with no gap and no
   * duplicate (forward only). Default false.
   */
  readonly live?: boolean | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ReadCategoryOptions {
  /** `"start"` (default), `"end"`, or a cursor: what comes after it is read. */
  readonly from?: "start" | "end" | CategoryCursor | undefined
  /** Page size of each read from the backend (default 256). */
  readonly pageSize?: number | undefined
}

/**
 * Limits on what one append can carry, checked before any I/O (docs/semantics.md §3).
 *
 * @since 0.1.0
 * @category models
 */
export interface Limits {
  readonly maxBatchEvents: number
  readonly maxBatchBytes: number
  readonly maxEventBytes: number
}

/**
 * 1,000 events and 1 MiB per batch, 256 KiB per event.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultLimits: Limits = {
  maxBatchEvents: 1000,
  maxBatchBytes: 1024 * 1024,
  maxEventBytes: 256 * 1024
}

/**
 * The partition count of a category when none is configured: 8, so that the consumers of
 * a group share its work (each partition has one owner at a time). One partition gives
 * one total order per category, for whoever needs it, at the price of one active
 * consumer per group.
 *
 * @since 0.2.0
 * @category models
 */
export const defaultPartitions = 8

/**
 * Partition counts: one number for every category, or a default with exceptions.
 *
 * @since 0.1.0
 * @category models
 */
export type PartitionsConfig = number | { readonly default: number; readonly byCategory?: Readonly<Record<string, number>> | undefined }

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 */
export declare namespace EventStore {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /**
     * Appends a batch to a stream, atomically: all of it or nothing. The batch is
     * checked against `expectedVersion` and the stream's permanent id map (docs/semantics.md §1–2).
     */
    readonly append: (
      stream: string,
      events: ReadonlyArray<NewEvent>,
      options?: AppendOptions
    ) => Effect.Effect<AppendResult, AppendError>
    /**
     * Appends several batches, each to its own stream, sent together: each is checked
     * and applied on its own, exactly as `append` would (atomic per batch, nothing
     * atomic across them), and its outcome is in its place in the result. Batches to the
     * same stream are applied in the order given. On Redis, the batches bound for one
     * partition go in one call of the append script (the way concurrent `append`s are
     * coalesced, without a fiber per append): for a producer that gathers what it sends
     * per tick, this is the cheapest way to send it. Fails only when `appends` is not an
     * array. Like `append`, a call interrupted after it was sent is not recalled: the
     * outcome of what it sent is then unknown to the caller (retry with the same ids).
     */
    readonly appendMany: (
      appends: ReadonlyArray<AppendRequest>
    ) => Effect.Effect<ReadonlyArray<Either.Either<AppendResult, AppendError>>, InvalidArgument>
    /**
     * Reads one stream, forwards (default) or backwards, in pages. With `live: true` it
     * emits `CaughtUp` once it has read what was there, then follows the stream (without
     * reading the rest of its category).
     */
    readonly read: {
      (stream: string, options: ReadOptions & { readonly live: true }): Stream.Stream<RecordedEvent | StreamCaughtUp, ReadError>
      (stream: string, options?: ReadOptions & { readonly live?: false | undefined }): Stream.Stream<RecordedEvent, ReadError>
      (stream: string, options?: ReadOptions): Stream.Stream<RecordedEvent | StreamCaughtUp, ReadError>
    }
    /**
     * Reads a category's log in commit order within each partition, merging partitions
     * by commit time. With `live: true` it emits `CaughtUp` once it has read what was
     * there, then follows new appends with no gap and no duplicate.
     */
    readonly readCategory: {
      (category: string, options: ReadCategoryOptions & { readonly live: true }): Stream.Stream<RecordedEvent | CaughtUp, ReadError>
      (category: string, options?: ReadCategoryOptions & { readonly live?: false | undefined }): Stream.Stream<RecordedEvent, ReadError>
      (category: string, options?: ReadCategoryOptions & { readonly live?: boolean | undefined }): Stream.Stream<RecordedEvent | CaughtUp, ReadError>
    }
    /** The partition count of a category, as recorded (or as configured, for a new one). */
    readonly partitions: (category: string) => Effect.Effect<number, StoreError | InvalidArgument>
    /**
     * The category's end now: a cursor at the last entry of every partition. Reading from
     * it (live) gives exactly what is appended after this call.
     */
    readonly end: (category: string) => Effect.Effect<CategoryCursor, StoreError | InvalidArgument>
    /** The limits this store enforces. */
    readonly limits: Limits
  }
}

/**
 * The event store service.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Chronicle, EventStore } from "effect-chronicle"
 *
 * const program = Effect.gen(function* () {
 *   const store = yield* EventStore.EventStore
 *   yield* store.append("orders-1", [{ eventId: crypto.randomUUID(), type: "Placed", data: { total: 3 } }], { expectedVersion: "no-stream" })
 * }).pipe(Effect.provide(Chronicle.layerMemory))
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class EventStore extends Context.Tag("effect-chronicle/EventStore")<EventStore, EventStore.Service>() {}

// ---------------------------------------------------------------------------
// Stream names
// ---------------------------------------------------------------------------

const CATEGORY = /^[A-Za-z0-9_]+$/

/**
 * The maximum length of an entity id, in UTF-16 code units.
 *
 * @since 0.1.0
 * @category models
 */
export const maxEntityIdLength = 512

/**
 * A stream name split into its category and entity id.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamId {
  readonly category: string
  readonly id: string
}

/**
 * Splits `category-id` at its first `-`, checking both parts.
 *
 * @since 0.1.0
 * @category streams
 */
export const parseStream = (stream: unknown): StreamId | InvalidArgument => {
  if (typeof stream !== "string") return new InvalidArgument({ argument: "stream", reason: `expected a string, got ${typeof stream}` })
  const dash = stream.indexOf("-")
  if (dash <= 0) {
    return new InvalidArgument({ argument: "stream", reason: `${JSON.stringify(stream)} is not <category>-<id>` })
  }
  const category = stream.slice(0, dash)
  const id = stream.slice(dash + 1)
  if (!CATEGORY.test(category)) {
    return new InvalidArgument({ argument: "stream", reason: `category ${JSON.stringify(category)} must match [A-Za-z0-9_]+` })
  }
  if (id.length === 0 || id.length > maxEntityIdLength) {
    return new InvalidArgument({ argument: "stream", reason: `the id of ${JSON.stringify(stream.slice(0, 80))} must have 1 to ${maxEntityIdLength} characters` })
  }
  // a lone surrogate has no UTF-8 form: Redis would store U+FFFD, and two ids would share keys
  if (!isWellFormed(id)) {
    return new InvalidArgument({ argument: "stream", reason: `the id of ${JSON.stringify(stream.slice(0, 80))} is not well-formed Unicode (a lone surrogate)` })
  }
  return { category, id }
}

/**
 * Checks a category name.
 *
 * @since 0.1.0
 * @category streams
 */
export const checkCategory = (category: unknown): InvalidArgument | undefined =>
  typeof category === "string" && CATEGORY.test(category)
    ? undefined
    : new InvalidArgument({ argument: "category", reason: `${JSON.stringify(category)} must match [A-Za-z0-9_]+` })

/**
 * The name of an entity's stream: `category-id`.
 *
 * @since 0.1.0
 * @category streams
 */
export const streamName = (category: string, id: string): string => `${category}-${id}`

// ---------------------------------------------------------------------------
// Typed view of one contract
// ---------------------------------------------------------------------------

/**
 * Per-append options of the typed view.
 *
 * @since 0.1.0
 * @category models
 */
export interface TypedAppendOptions extends AppendOptions {
  /** One id per event; minted (UUIDv7) when absent. */
  readonly eventIds?: ReadonlyArray<string> | undefined
  readonly correlationId?: string | undefined
  readonly causationId?: string | undefined
  readonly traceparent?: string | undefined
}

/**
 * One append of {@link TypedStore.appendMany}: an entity, its events and the options of a
 * typed append.
 *
 * @since 0.2.0
 * @category models
 */
export interface TypedAppendRequest<A> extends TypedAppendOptions {
  readonly entityId: string
  readonly events: ReadonlyArray<A>
}

/**
 * What a typed append can fail with: the store's errors, an event type the contract
 * lacks, and the personal-data errors (no key store, the key store away).
 *
 * @since 0.2.0
 * @category errors
 */
export type TypedAppendError = AppendError | UnknownEventType | PersonalDataError | KeyStoreError

/**
 * What a typed read can fail with: the store's errors, an event type the contract lacks,
 * and the personal-data errors (a value that fails authentication, the key store away).
 *
 * @since 0.2.0
 * @category errors
 */
export type TypedReadError = ReadError | UnknownEventType | PersonalDataError | KeyStoreError

/**
 * The event store seen through one contract: events are validated and encoded on the
 * way in, decoded (and upcast) on the way out.
 *
 * @since 0.1.0
 * @category models
 */
export interface TypedStore<C extends Contract.Any> {
  readonly contract: C
  /** Appends events to the stream of `entityId` in the contract's category. */
  readonly append: (
    entityId: string,
    events: ReadonlyArray<Contract.Event<C>>,
    options?: TypedAppendOptions
  ) => Effect.Effect<AppendResult, TypedAppendError>
  /**
   * Appends to several entities' streams, sent together (see `EventStore.appendMany`):
   * each append checked, encoded and applied on its own, its outcome in its place;
   * appends to the same entity applied in the order given.
   */
  readonly appendMany: (
    appends: ReadonlyArray<TypedAppendRequest<Contract.Event<C>>>
  ) => Effect.Effect<ReadonlyArray<Either.Either<AppendResult, TypedAppendError>>, InvalidArgument>
  /** Reads the stream of `entityId`; with `live: true`, then follows it. */
  readonly read: {
    (entityId: string, options: ReadOptions & { readonly live: true }): Stream.Stream<Recorded<Contract.Event<C>> | StreamCaughtUp, TypedReadError>
    (entityId: string, options?: ReadOptions & { readonly live?: false | undefined }): Stream.Stream<Recorded<Contract.Event<C>>, TypedReadError>
    (entityId: string, options?: ReadOptions): Stream.Stream<Recorded<Contract.Event<C>> | StreamCaughtUp, TypedReadError>
  }
  /** Reads the contract's category. */
  readonly readCategory: {
    (options: ReadCategoryOptions & { readonly live: true }): Stream.Stream<Recorded<Contract.Event<C>> | CaughtUp, TypedReadError>
    (options?: ReadCategoryOptions & { readonly live?: false | undefined }): Stream.Stream<Recorded<Contract.Event<C>>, TypedReadError>
    (options?: ReadCategoryOptions & { readonly live?: boolean | undefined }): Stream.Stream<Recorded<Contract.Event<C>> | CaughtUp, TypedReadError>
  }
}

/**
 * Decodes a stored event with a contract.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeRecorded = <C extends Contract.Any>(
  contract: C,
  recorded: RecordedEvent,
  keys?: KeyStore.Service | undefined
): Effect.Effect<Recorded<Contract.Event<C>>, EventDecodeError | UnknownEventType | PersonalDataError | KeyStoreError> =>
  hasPersonal(contract, recorded.type)
    ? Effect.flatMap(
      unsealData(keys, contract, recorded.type, recorded.stream, recorded.eventId, recorded.data),
      (data) => decodeOpened(contract, recorded, data, true)
    )
    : decodeOpened(contract, recorded, recorded.data, false)

const decodeOpened = <C extends Contract.Any>(
  contract: C,
  recorded: RecordedEvent,
  data: unknown,
  personal: boolean
): Effect.Effect<Recorded<Contract.Event<C>>, EventDecodeError | UnknownEventType> => {
  const decoded = Contract.decodeEvent(contract, recorded.type, recorded.eventVersion, data)
  switch (decoded._tag) {
    case "Decoded": {
      return Effect.succeed({ ...envelopeOf(recorded), event: decoded.event })
    }
    case "UnknownType":
      return Effect.fail(new UnknownEventType({ stream: recorded.stream, version: recorded.version, type: recorded.type }))
    case "Invalid":
      return Effect.fail(
        new EventDecodeError({
          stream: recorded.stream,
          version: recorded.version,
          partition: recorded.position.partition,
          entryId: recorded.position.entryId,
          type: recorded.type,
          // a schema's message may quote a value: with personal data, only the paths
          reason: personal ? `the stored data does not decode at ${decoded.paths.map((p) => p || "(root)").join(", ") || "(root)"}` : decoded.message
        })
      )
  }
}

/**
 * Encodes a contract's events for an append: validates each against its schema and
 * mints ids (UUIDv7, from `now`) where none are given. Returns the events, or the first
 * problem.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeEvents = <C extends Contract.Any>(
  contract: C,
  stream: string,
  events: ReadonlyArray<Contract.Event<C>>,
  options: TypedAppendOptions | undefined,
  now: number
): ReadonlyArray<NewEvent> | InvalidEvent | InvalidArgument | UnknownEventType => {
  if (!Array.isArray(events)) return new InvalidArgument({ argument: "events", reason: "expected an array of events" })
  const ids = options?.eventIds
  if (ids !== undefined && (!Array.isArray(ids) || ids.length !== events.length)) {
    return new InvalidArgument({ argument: "eventIds", reason: `${Array.isArray(ids) ? ids.length : "no list of"} id(s) for ${events.length} event(s)` })
  }
  const out: Array<NewEvent> = new Array(events.length)
  for (let i = 0; i < events.length; i++) {
    let encoded: Contract.Encoded
    try {
      encoded = Contract.encodeEvent(contract, events[i]!)
    } catch (cause) {
      return new InvalidEvent({ stream, type: String((events[i] as { _tag?: unknown } | undefined)?._tag), path: "", reason: `could not be encoded: ${cause instanceof Error ? cause.message : String(cause)}` })
    }
    if (encoded._tag === "UnknownType") return new UnknownEventType({ stream, version: 0, type: encoded.type })
    if (encoded._tag === "Invalid") {
      const first = encoded.issues[0]
      return new InvalidEvent({
        stream,
        type: encoded.type,
        path: first?.path ?? "",
        // a schema's message may quote the value: with personal fields, the paths only
        reason: hasPersonal(contract, encoded.type)
          ? `does not match its schema at ${encoded.issues.map((x) => x.path || "(root)").join(", ")}`
          : encoded.issues.map((x) => (x.path && x.path !== first?.path ? `${x.path}: ${x.message}` : x.message)).join("; ")
      })
    }
    // what is stored must read back as the same event: its encoded form must be JSON as it is
    const problem = jsonProblem(encoded.data)
    if (problem !== undefined) return new InvalidEvent({ stream, type: encoded.type, path: problem.path, reason: problem.reason })
    const personal = contract.events[encoded.type]?.personalFields
    out[i] = {
      eventId: ids?.[i] ?? uuidv7(now),
      type: encoded.type,
      data: encoded.data,
      eventVersion: encoded.version,
      correlationId: options?.correlationId,
      causationId: options?.causationId,
      traceparent: options?.traceparent,
      personalFields: personal !== undefined && personal.length > 0 ? personal : undefined
    }
  }
  return out
}

/**
 * The typed view of the event store for one contract.
 *
 * @example
 * ```ts
 * const program = Effect.gen(function* () {
 *   const orders = yield* EventStore.forContract(Orders)
 *   yield* orders.append("o-1", [Orders.make.Placed({ sku: "book", quantity: 1 })], { expectedVersion: "no-stream" })
 *   const events = yield* Stream.runCollect(orders.read("o-1"))
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const forContract = <C extends Contract.Any>(contract: C): Effect.Effect<TypedStore<C>, InvalidContract, EventStore> =>
  contract.issues.length > 0
    ? Effect.fail(new InvalidContract({ contract: contract.name, issues: contract.issues }))
    : Effect.map(Effect.all([EventStore, Effect.serviceOption(KeyStore)]), ([store, keys]) => typedStore(store, contract, Option.getOrUndefined(keys)))

/** An append of `TypedStore.appendMany` encoded: its entity, stream, events and options. */
interface EncodedAppend {
  readonly id: string
  readonly stream: string
  readonly events: ReadonlyArray<NewEvent>
  readonly options: TypedAppendOptions
}

/**
 * The typed view of a store for a contract already known to be valid (see
 * {@link forContract}, which checks it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const typedStore = <C extends Contract.Any>(store: EventStore.Service, contract: C, keys?: KeyStore.Service | undefined): TypedStore<C> => {
  const category = contract.name
  const readCategory = (options?: ReadCategoryOptions & { readonly live?: boolean | undefined }) =>
    Stream.mapEffect(
      options?.live === true
        ? store.readCategory(category, { ...options, live: true })
        : store.readCategory(category, { ...options, live: false }) as Stream.Stream<RecordedEvent | CaughtUp, ReadError>,
      (r): Effect.Effect<Recorded<Contract.Event<C>> | CaughtUp, EventDecodeError | UnknownEventType | PersonalDataError | KeyStoreError> =>
        isCaughtUp(r) ? Effect.succeed(r) : decodeRecorded(contract, r, keys)
    )
  const personalIn = (encoded: ReadonlyArray<NewEvent>) => encoded.some((e) => hasPersonal(contract, e.type))
  /** Appends encoded events; personal fields leave the process encrypted, under their subject's key. */
  const appendEncoded = (stream: string, id: string, encoded: ReadonlyArray<NewEvent>, options: AppendOptions | undefined): Effect.Effect<AppendResult, TypedAppendError> => {
    if (!personalIn(encoded)) return store.append(stream, encoded, options)
    if (encoded.length === 1) {
      const e = encoded[0]!
      return Effect.flatMap(
        sealData(keys, contract, e.type, stream, id, e.eventId, e.data as Record<string, unknown>),
        (data) => store.append(stream, [{ ...e, data }], options)
      )
    }
    return Effect.flatMap(
      Effect.forEach(encoded, (e) =>
        hasPersonal(contract, e.type)
          ? Effect.map(sealData(keys, contract, e.type, stream, id, e.eventId, e.data as Record<string, unknown>), (data): NewEvent => ({ ...e, data }))
          : Effect.succeed(e)),
      (sealed) => store.append(stream, sealed, options)
    )
  }
  const withTrace = <O extends TypedAppendOptions>(options: O | undefined, traceparent: string | undefined): O | undefined =>
    traceparent === undefined || options?.traceparent !== undefined ? options : { ...options, traceparent } as O
  /** An item of `appendMany` read once (its fields then checked by its encoding and its append). */
  const typedRequestOf = (a: unknown): TypedAppendRequest<Contract.Event<C>> | InvalidArgument => {
    const r = readItem(a, "an entity id and events", (item) => ({ ...(item as TypedAppendRequest<Contract.Event<C>>) }))
    return r instanceof Unreadable ? new InvalidArgument({ argument: "appends", reason: r.reason }) : r
  }
  /** Reads and encodes each append of `appendMany`; one that fails has its outcome in `out` at once. */
  const encodeAll = (
    appends: ReadonlyArray<unknown>,
    out: Array<Either.Either<AppendResult, TypedAppendError>>,
    now: number,
    traceparent: string | undefined
  ): Array<EncodedAppend | undefined> => {
    const encoded: Array<EncodedAppend | undefined> = new Array(appends.length)
    for (let i = 0; i < appends.length; i++) {
      const request = typedRequestOf(appends[i])
      if (request instanceof InvalidArgument) {
        out[i] = Either.left(request)
        continue
      }
      const stream = streamName(category, request.entityId)
      const events = encodeEvents(contract, stream, request.events, withTrace(request, traceparent), now)
      if (events instanceof Error) out[i] = Either.left(events)
      else encoded[i] = { id: request.entityId, stream, events, options: request }
    }
    return encoded
  }
  /**
   * The encoded appends that go together in one `appendMany` of the store, and, per
   * entity with personal fields in any of its appends, the indices of all its appends:
   * those are sealed and sent one after the other, in order.
   */
  const splitBySealing = (encoded: ReadonlyArray<EncodedAppend | undefined>) => {
    const sealedStreams = new Set<string>()
    for (const e of encoded) if (e !== undefined && personalIn(e.events)) sealedStreams.add(e.stream)
    const plain: Array<AppendRequest> = []
    const plainAt: Array<number> = []
    const sealed = new Map<string, Array<number>>()
    for (let i = 0; i < encoded.length; i++) {
      const e = encoded[i]
      if (e === undefined) continue
      if (!sealedStreams.has(e.stream)) {
        plain.push({ stream: e.stream, events: e.events, expectedVersion: e.options.expectedVersion })
        plainAt.push(i)
      } else {
        const list = sealed.get(e.stream)
        if (list === undefined) sealed.set(e.stream, [i])
        else list.push(i)
      }
    }
    return { plain, plainAt, sealed: Array.from(sealed.values()), encoded }
  }
  return {
    contract,
    append: (id, events, options) => {
      const stream = streamName(category, id)
      return timedSpan(
        "EventStore.append",
        () => ({ stream, events: events.length }),
        (now, traceparent): Effect.Effect<AppendResult, TypedAppendError> => {
          const encoded = encodeEvents(contract, stream, events, withTrace(options, traceparent), now)
          if (encoded instanceof Error) return Effect.fail(encoded)
          return appendEncoded(stream, id, encoded, options)
        }
      )
    },
    appendMany: (appends) =>
      timedSpan(
        "EventStore.appendMany",
        () => ({ category, appends: Array.isArray(appends) ? appends.length : 0 }),
        (now, traceparent): Effect.Effect<ReadonlyArray<Either.Either<AppendResult, TypedAppendError>>, InvalidArgument> => {
          const reason = notAList(appends)
          if (reason !== undefined) return Effect.fail(new InvalidArgument({ argument: "appends", reason }))
          const out: Array<Either.Either<AppendResult, TypedAppendError>> = new Array(appends.length)
          const { plain, plainAt, sealed, encoded } = splitBySealing(encodeAll(appends, out, now, traceparent))
          const sent = Effect.map(plain.length === 0 ? Effect.succeed([]) : store.appendMany(plain), (results) => {
            for (let j = 0; j < results.length; j++) out[plainAt[j]!] = results[j]!
          })
          if (sealed.length === 0) return Effect.as(sent, out)
          // an entity's sealed appends one after the other, in order; entities side by side
          const each = sealed.map((indices) =>
            Effect.forEach(indices, (i) => {
              const e = encoded[i]!
              return Effect.map(Effect.either(appendEncoded(e.stream, e.id, e.events, e.options)), (r) => {
                out[i] = r
              })
            }, { discard: true }))
          return Effect.as(Effect.all([sent, ...each], { concurrency: "unbounded", discard: true }), out)
        }
      ),
    read: ((id: string, options?: ReadOptions) =>
      Stream.mapEffect(
        store.read(streamName(category, id), options as ReadOptions & { readonly live?: false }) as Stream.Stream<RecordedEvent | StreamCaughtUp, ReadError>,
        (r): Effect.Effect<Recorded<Contract.Event<C>> | StreamCaughtUp, EventDecodeError | UnknownEventType | PersonalDataError | KeyStoreError> =>
          isStreamCaughtUp(r) ? Effect.succeed(r) : decodeRecorded(contract, r, keys)
      )) as TypedStore<C>["read"],
    readCategory: readCategory as TypedStore<C>["readCategory"]
  }
}
