/**
 * Subscribers: consumer groups over a contract's category.
 *
 * Every group receives every event once (at least once, exactly once in effect for
 * follow-up events produced through the handler's context). Within a group, each
 * partition has one owner at a time, so one entity's events are handled in order even
 * with many consumers; inside a consumer, different entities run in parallel. A handler
 * that fails is retried on a `Schedule`, then parked as a dead letter: never lost, never
 * silently dropped (docs/semantics.md §5–6).
 *
 * @since 0.1.0
 */
import { Duration, Effect, Fiber, Layer, Queue, type Schedule, Stream } from "effect"
import { ConsumerGroups, type GroupConflict, type GroupError, type GroupStatus, type StartFrom } from "./ConsumerGroups.js"
import type * as Contract from "./Contract.js"
import type { Envelope } from "./Envelope.js"
import { type EventStore, type InvalidArgument, InvalidContract, isRetryable } from "./EventStore.js"
import * as Config from "./internal/subscriber/config.js"
import * as Engine from "./internal/subscriber/engine.js"
import { type ConsumerHealth, local } from "./internal/subscriber/health.js"
export type { OwnedPartition, ReaderActivity } from "./internal/subscriber/health.js"
import { liveClock } from "./internal/util.js"
import type * as Producer from "./Producer.js"

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

/**
 * What a handler gets besides the event.
 *
 * @since 0.1.0
 * @category models
 */
export interface HandlerContext {
  /** The event's metadata. */
  readonly envelope: Envelope
  /** True when the event was delivered before (a retry after a crash or lease change) or replayed from the dead letters. */
  readonly redelivered: boolean
  /** True when the event was replayed from the dead letters (`DeadLetters.replay`). */
  readonly replayed: boolean
  /** Deliveries of this entry, this one included. */
  readonly deliveries: number
  /** Handler invocations for this delivery, this one included. */
  readonly attempt: number
  /** The group handling the event. */
  readonly group: string
  /** This consumer's member id (its name and an incarnation id). */
  readonly member: string
  /** The partition of the category the event belongs to. */
  readonly partition: number
  /**
   * The epoch of the lease under which the handler runs: it grows each time the partition
   * changes hands, so it can fence side effects outside the log (a store that rejects
   * writes tagged with an older epoch for the same partition).
   */
  readonly epoch: number
  /**
   * A producer whose event ids derive from this event (UUIDv5 over group, cause stream,
   * cause id, target stream and index): a handler that runs again writes nothing twice.
   */
  readonly produce: <C2 extends Contract.Any>(contract: C2) => Producer.Producer<C2>
}

/**
 * One handler per event of the contract.
 *
 * @since 0.1.0
 * @category models
 */
export type Handlers<C extends Contract.Any> = {
  readonly [K in Contract.Tag<C>]: (event: Contract.EventOf<C, K>, ctx: HandlerContext) => Effect.Effect<unknown, any, any>
}

/**
 * A handler record that covers every event of the contract and nothing else: a missing
 * event or a misspelled key does not compile.
 *
 * @since 0.1.0
 * @category models
 */
export type ExactHandlers<C extends Contract.Any, H> = Handlers<C> & Record<Exclude<keyof H, Contract.Tag<C>>, never>

/**
 * The errors the handlers of a record can fail with.
 *
 * @since 0.1.0
 * @category type-level
 */
export type HandlerError<H> = {
  [K in keyof H]: H[K] extends (...args: ReadonlyArray<any>) => Effect.Effect<any, infer E, any> ? E : never
}[keyof H]

/**
 * The services the handlers of a record need.
 *
 * @since 0.1.0
 * @category type-level
 */
export type HandlerServices<H> = {
  [K in keyof H]: H[K] extends (...args: ReadonlyArray<any>) => Effect.Effect<any, any, infer R> ? R : never
}[keyof H]

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<H> {
  /** The group: a purpose ("transit", "reporter"); every group gets every event. Unique per store. */
  readonly group: string
  /** This consumer's name within the group (default `consumer`); each run adds an incarnation id. */
  readonly consumer?: string | undefined
  /** One handler per event of the contract: exhaustive and closed (see {@link ExactHandlers}). */
  readonly handlers: H
  /**
   * Decides handler retries from the error (default: exponential from 100 ms, jittered,
   * 5 recurrences). Attempts are handler invocations: a schedule of `n` recurrences
   * allows `n + 1`.
   */
  readonly retry?: Schedule.Schedule<unknown, HandlerError<H>> | undefined
  /**
   * An entry whose handler was started more times than this across deliveries (its
   * process crashed or lost the partition each time) is dead-lettered without running
   * again: a crash loop. Default 10.
   */
  readonly maxDeliveries?: number | undefined
  /** Entities handled at once by this consumer (one entity is always handled in order). Default 16. */
  readonly concurrency?: number | undefined
  /** Where a new group starts: `"start"` (default) or `"end"`. Applies only when the group is created. */
  readonly startFrom?: StartFrom | undefined
  /** How long a partition's lease and a membership last without renewal. Default 10 seconds; at least 100 ms. */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /** How often leases and membership are renewed. Default, and at most, a third of `leaseTtl`. */
  readonly heartbeat?: Duration.DurationInput | undefined
  /**
   * The longest single wait for new entries once every owned partition is drained (the
   * wait has no effect on the group; local changes cut it short). Default the heartbeat,
   * at most 5 seconds; never more than the heartbeat.
   */
  readonly maxWait?: Duration.DurationInput | undefined
  /** Entries read at once; events in flight never exceed twice this. Default 500. */
  readonly readCount?: number | undefined
  /** What to do with an event type the contract does not know: `"dead-letter"` (default) or `"skip"`. */
  readonly onUnknownType?: "dead-letter" | "skip" | undefined
  /** On shutdown, how long in-flight handlers may finish before they are interrupted. Default 10 seconds. */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
  /**
   * When a partition moves to another consumer (a join, a leave), how long its handlers
   * that are running may finish; then they are interrupted unacknowledged (their events
   * stay pending and the next owner handles them first, in order) and the partition is
   * released. Default 5 seconds.
   */
  readonly revokeTimeout?: Duration.DurationInput | undefined
}

/**
 * The default retry: exponential from 100 ms, jittered, 5 recurrences.
 *
 * @since 0.1.0
 * @category retries
 */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Config.defaultRetry

/**
 * What a subscriber can fail with: at start (a bad option, a group used for another
 * category, a backend that cannot be reached), or later when it cannot go on (its group
 * was deleted, a permission was withdrawn), after retrying with backoff.
 *
 * @since 0.1.0
 * @category errors
 */
export type SubscriberError = GroupError | GroupConflict | InvalidContract | InvalidArgument

/** @since 0.1.0 @category metrics */
export const deliveredCounter = Engine.deliveredCounter
/** @since 0.1.0 @category metrics */
export const retriedCounter = Engine.retriedCounter
/** @since 0.1.0 @category metrics */
export const deadLetteredCounter = Engine.deadLetteredCounter
/** @since 0.1.0 @category metrics */
export const inFlightGauge = Engine.inFlightGauge

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/**
 * Runs a consumer of a group until interrupted. Handlers are a closed record, one per
 * event of the contract. On interruption it stops reading, lets running handlers finish
 * within `shutdownTimeout`, acknowledges what completed and releases its partitions;
 * interruption never dead-letters.
 *
 * @example
 * ```ts
 * const transit = Subscriber.run(Shipments, {
 *   group: "transit",
 *   handlers: {
 *     OrderPlaced: (event, ctx) => ctx.produce(Shipments).Packing({ station: "A" }, { entityId: event.orderId }),
 *     Packing: () => Effect.void,
 *     OnDelivery: () => Effect.void,
 *     OnReceived: () => Effect.void
 *   },
 *   retry: Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(5))),
 *   concurrency: 8
 * })
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const run = <C extends Contract.Any, H extends ExactHandlers<C, H>>(
  contract: C,
  options: Options<H>
): Effect.Effect<never, SubscriberError, EventStore | ConsumerGroups | HandlerServices<H>> =>
  Engine.run(contract, options, (event, ctx) => {
    const handler = (options.handlers as Record<string, (e: unknown, c: HandlerContext) => Effect.Effect<unknown, HandlerError<H>, HandlerServices<H>>>)[(event as { _tag: string })._tag]
    return handler === undefined
      ? Effect.dieMessage(`no handler for ${(event as { _tag: string })._tag}`)
      : handler(event, ctx)
  }).pipe(Effect.withSpan("Subscriber.run", { attributes: { group: options.group, category: contract.name } }))

/**
 * Runs a consumer in the background for the Layer's lifetime. The Layer is built once the
 * group exists; a failure at start fails the Layer.
 *
 * @since 0.1.0
 * @category running
 */
export const layer = <C extends Contract.Any, H extends ExactHandlers<C, H>>(
  contract: C,
  options: Options<H>
): Layer.Layer<never, SubscriberError, EventStore | ConsumerGroups | HandlerServices<H>> =>
  Layer.scopedDiscard(
    Effect.gen(function*() {
      if (contract.issues.length > 0) return yield* new InvalidContract({ contract: contract.name, issues: contract.issues })
      const groups = yield* ConsumerGroups
      yield* groups.ensureGroup(options.group, contract.name, options.startFrom ?? "start")
      yield* Effect.forkScoped(
        run(contract, options).pipe(
          Effect.tapErrorCause((cause) => Effect.logError(`subscriber ${options.group} stopped`, cause))
        )
      )
    })
  )

/**
 * One event handed to a `stream` consumer; it counts as handled once `ack` runs.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamDelivery<A> {
  readonly event: A
  readonly ctx: HandlerContext
  /** Marks the event handled; the consumer acknowledges it. */
  readonly ack: Effect.Effect<void>
  /** Marks the attempt failed: the retry schedule decides what follows, as for a handler. */
  readonly fail: (error: unknown) => Effect.Effect<void>
}

/**
 * Deliveries of a group as a Stream, acknowledged explicitly, for manual control. The
 * same ordering and ownership rules apply: the next event of an entity comes only once
 * the previous one is acknowledged (or dead-lettered).
 *
 * @since 0.1.0
 * @category running
 */
export const stream = <C extends Contract.Any>(
  contract: C,
  options: Omit<Options<Handlers<C>>, "handlers" | "retry"> & { readonly retry?: Schedule.Schedule<unknown, unknown> | undefined }
): Stream.Stream<StreamDelivery<Contract.Event<C>>, SubscriberError, EventStore | ConsumerGroups> =>
  Stream.unwrapScoped(
    Effect.gen(function*() {
      // unbounded here, bounded upstream: the engine keeps at most 2 x readCount in flight
      const queue = yield* Queue.unbounded<StreamDelivery<Contract.Event<C>>>()
      const fiber = yield* Effect.forkScoped(
        Engine.run(contract, options, (event, ctx) =>
          Effect.async<void, unknown>((resume) => {
            let done = false
            const finish = (effect: Effect.Effect<void, unknown>) =>
              Effect.sync(() => {
                if (!done) {
                  done = true
                  resume(effect)
                }
              })
            Queue.unsafeOffer(queue, { event, ctx, ack: finish(Effect.void), fail: (e) => finish(Effect.fail(e)) })
          }))
      )
      return Stream.fromQueue(queue).pipe(
        Stream.merge(Stream.fromEffect(Fiber.join(fiber)).pipe(Stream.drain), { haltStrategy: "either" })
      )
    })
  )

/**
 * Waits until a group has handled everything: no lag and nothing pending (delivered and
 * not acknowledged) on any partition. For tests and tools; it polls the group's status, and waits for a
 * group that does not exist yet (a consumer forked a moment ago) to be created, and
 * through passing store failures (a dropped connection, a server restarting: see
 * `EventStore.isRetryable`); other failures end it. Bound it with `Effect.timeout`.
 *
 * @since 0.1.0
 * @category status
 */
export const awaitIdle = (
  group: string,
  options: { readonly pollInterval?: Duration.DurationInput | undefined } = {}
): Effect.Effect<void, GroupError, ConsumerGroups> =>
  Effect.gen(function*() {
    const groups = yield* ConsumerGroups
    const interval = options.pollInterval ?? "10 millis"
    for (;;) {
      const s = yield* groups.status(group).pipe(
        Effect.catchTag("GroupNotFound", () => Effect.succeed(undefined)),
        Effect.catchIf(isRetryable, () => Effect.succeed(undefined))
      )
      // pending covers what is in flight: delivered entries stay pending until acknowledged
      if (s !== undefined && s.partitionStatus.every((p) => p.lag === 0 && p.pending === 0)) return
      yield* Effect.sleep(interval).pipe(Effect.withClock(liveClock))
    }
  })

/**
 * A consumer of the group running in this process, and its health.
 *
 * @since 0.2.0
 * @category status
 */
export type LocalConsumer = ConsumerHealth

/**
 * A group's state: members, and per partition its owner, pending entries, lag, events in
 * flight and dead letters; plus the consumers of the group running in this process, with
 * the background loops that are failing now (a dropped connection being retried, say).
 *
 * @since 0.1.0
 * @category models
 */
export interface Status extends GroupStatus {
  readonly local: ReadonlyArray<LocalConsumer>
}

/**
 * The consumers of a group running in this process and their health, without asking the
 * backend anything: for a liveness probe, or to see why a partition does not move (its
 * phase, whether a read of it is under way, what the reader waits on).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Subscriber } from "effect-chronicle"
 *
 * const probe = Effect.map(Subscriber.localHealth("billing"), (consumers) =>
 *   consumers.every((c) => c.failing.length === 0 && c.reader.activity !== "stopped"))
 * ```
 *
 * @since 0.2.0
 * @category status
 */
export const localHealth = (group: string): Effect.Effect<ReadonlyArray<LocalConsumer>> => Effect.sync(() => local(group))

/**
 * A group's state: members, and per partition its owner, pending entries, lag, events in
 * flight and dead letters; and the health of the group's consumers in this process.
 *
 * @since 0.1.0
 * @category status
 */
export const status = (group: string): Effect.Effect<Status, GroupError, ConsumerGroups> =>
  Effect.flatMap(ConsumerGroups, (groups) => Effect.map(groups.status(group), (s) => ({ ...s, local: local(group) })))
