/**
 * Subscribers: consumer groups over a contract's category.
 *
 * Every group receives every event once (at least once, exactly once in effect for
 * follow-up events produced through the handler's context). Within a group, each
 * partition has one owner at a time, so one entity's events are handled in order even
 * with many consumers; inside a consumer, different entities run in parallel. A handler
 * that fails is retried on a `Schedule`, then parked as a dead letter: never lost, never
 * silently dropped (SEMANTICS §5–6).
 *
 * @since 0.1.0
 */
import {
  Cause,
  Clock,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Metric,
  MetricLabel,
  Option,
  Queue,
  Schedule,
  Scope,
  Stream
} from "effect"
import {
  assign,
  ConsumerGroups,
  type Delivery,
  type GroupConflict,
  type GroupError,
  type GroupInfo,
  type GroupStatus,
  type Lease,
  type StartFrom
} from "./ConsumerGroups.js"
import * as Contract from "./Contract.js"
import type { Envelope } from "./Envelope.js"
import {
  EventStore,
  InvalidArgument,
  InvalidContract,
  type RecordedEvent,
  typedStore
} from "./EventStore.js"
import { followUpId, uuidv7 } from "./internal/ids.js"
import { timedSpan } from "./internal/tracing.js"
import { liveClock, messageOf } from "./internal/util.js"
import * as Producer from "./Producer.js"

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
  /** Deliveries of this entry, this one included. */
  readonly deliveries: number
  /** Handler invocations for this delivery, this one included. */
  readonly attempt: number
  /** The group handling the event. */
  readonly group: string
  /**
   * A producer whose event ids derive from this event (UUIDv5 over cause id, group,
   * target stream and index): a handler that runs again writes nothing twice.
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
  /** How long a partition's lease and a membership last without renewal. Default 10 seconds. */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /** How often leases and membership are renewed. Default a third of `leaseTtl`. */
  readonly heartbeat?: Duration.DurationInput | undefined
  /** Entries read at once; events in flight never exceed twice this. Default 500. */
  readonly readCount?: number | undefined
  /** What to do with an event type the contract does not know: `"dead-letter"` (default) or `"skip"`. */
  readonly onUnknownType?: "dead-letter" | "skip" | undefined
  /** On shutdown, how long in-flight handlers may finish before they are interrupted. Default 10 seconds. */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
}

/**
 * The default retry: exponential from 100 ms, jittered, 5 recurrences.
 *
 * @since 0.1.0
 * @category retries
 */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("100 millis").pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(5))
)

/**
 * What a subscriber can fail with at start (a bad option, a group used for another
 * category, a backend that cannot be reached).
 *
 * @since 0.1.0
 * @category errors
 */
export type SubscriberError = GroupError | GroupConflict | InvalidContract | InvalidArgument

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/** @since 0.1.0 @category metrics */
export const deliveredCounter = Metric.counter("chronicle_subscriber_delivered", { description: "events handled and acknowledged" })
/** @since 0.1.0 @category metrics */
export const retriedCounter = Metric.counter("chronicle_subscriber_retried", { description: "handler invocations retried" })
/** @since 0.1.0 @category metrics */
export const deadLetteredCounter = Metric.counter("chronicle_subscriber_dead_lettered", { description: "events parked as dead letters" })
/** @since 0.1.0 @category metrics */
export const inFlightGauge = Metric.gauge("chronicle_subscriber_in_flight", { description: "events being handled" })

// ---------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------

/** Wakes waiters; a version number makes a wake-up between a check and a wait impossible to miss. */
const makeNotifier = () => {
  let version = 0
  let waiters: Array<() => void> = []
  return {
    get version() {
      return version
    },
    notify: () => {
      version++
      const ws = waiters
      waiters = []
      for (const w of ws) w()
    },
    /** Resolves once the version differs from `seen`. */
    changed: (seen: number): Effect.Effect<void> =>
      Effect.async<void>((resume) => {
        if (version !== seen) return resume(Effect.void)
        const w = () => resume(Effect.void)
        waiters.push(w)
        return Effect.sync(() => {
          waiters = waiters.filter((x) => x !== w)
        })
      })
  }
}

interface PartitionState {
  readonly partition: number
  readonly lease: Lease
  status: "claiming" | "active" | "revoking" | "lost"
  /** Deliveries dispatched and not yet settled. */
  inFlight: number
  /** Handled deliveries waiting for their ack. */
  acks: Array<Delivery>
  /** Deliveries dispatched and not yet acknowledged, dead-lettered or dropped ("source:id"). */
  readonly tracked: Set<string>
}

const trackKey = (d: Delivery) => `${d.source}:${d.id}`

/** Heartbeats between an owner's routine claims of its partitions' pending lists. */
const RECLAIM_EVERY = 10

/** Failures that pass by themselves (a restart, a dropped connection, a busy or loading server). */
const TRANSIENT = /Connection is closed|Stream isn't writeable|connect E|ECONNRESET|EPIPE|ETIMEDOUT|no reply|not ready|not sent|LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|OOM|the connection is/i

interface Work {
  readonly st: PartitionState
  readonly delivery: Delivery
}

type Outcome =
  | { readonly _tag: "Ack" }
  | { readonly _tag: "DeadLetter"; readonly errorTag: string; readonly message: string; readonly attempts: number }
  | { readonly _tag: "Drop" }


const errorTagOf = (e: unknown): string =>
  typeof e === "object" && e !== null && typeof (e as { _tag?: unknown })._tag === "string" ? (e as { _tag: string })._tag : "HandlerFailed"


/**
 * The engine behind `run`, `layer` and `stream`: everything but the handler record.
 */
const engine = <C extends Contract.Any, E, R>(
  contract: C,
  options: Omit<Options<unknown>, "handlers" | "retry"> & { readonly retry?: Schedule.Schedule<unknown, any> | undefined },
  handle: (event: Contract.Event<C>, ctx: HandlerContext) => Effect.Effect<unknown, E, R>
): Effect.Effect<never, SubscriberError, EventStore | ConsumerGroups | R> =>
  Effect.gen(function*() {
    if (contract.issues.length > 0) return yield* new InvalidContract({ contract: contract.name, issues: contract.issues })
    const group = options.group
    const leaseTtl = Duration.decode(options.leaseTtl ?? "10 seconds")
    const heartbeat = options.heartbeat === undefined ? Duration.divide(leaseTtl, 3).pipe(Option.getOrElse(() => leaseTtl)) : Duration.decode(options.heartbeat)
    const readCount = options.readCount ?? 500
    const concurrency = options.concurrency ?? 16
    const maxDeliveries = options.maxDeliveries ?? 10
    const shutdownTimeout = Duration.decode(options.shutdownTimeout ?? "10 seconds")
    const onUnknownType = options.onUnknownType ?? "dead-letter"
    const retry = options.retry ?? defaultRetry
    const checks: Array<[boolean, string, string]> = [
      [Number.isSafeInteger(readCount) && readCount >= 1 && readCount <= 10_000, "readCount", "an integer from 1 to 10000"],
      [Number.isSafeInteger(concurrency) && concurrency >= 1, "concurrency", "an integer ≥ 1"],
      [Number.isSafeInteger(maxDeliveries) && maxDeliveries >= 1, "maxDeliveries", "an integer ≥ 1"],
      [Duration.toMillis(leaseTtl) >= 100, "leaseTtl", "at least 100 ms"],
      [Duration.lessThan(heartbeat, leaseTtl) && Duration.toMillis(heartbeat) >= 10, "heartbeat", "at least 10 ms and shorter than leaseTtl"],
      [onUnknownType === "dead-letter" || onUnknownType === "skip", "onUnknownType", `"dead-letter" or "skip"`],
      [options.consumer === undefined || /^[A-Za-z0-9_.-]{1,64}$/.test(options.consumer), "consumer", "1 to 64 of [A-Za-z0-9_.-]"]
    ]
    for (const [ok, argument, reason] of checks) {
      if (!ok) return yield* new InvalidArgument({ argument, reason: `must be ${reason}` })
    }

    const groups = yield* ConsumerGroups
    const store = yield* EventStore
    const info: GroupInfo = yield* groups.ensureGroup(group, contract.name, options.startFrom ?? "start")
    const member = `${options.consumer ?? "consumer"}:${uuidv7(yield* Clock.currentTimeMillis)}`
    const ttlMillis = Math.ceil(Duration.toMillis(leaseTtl))
    const blockMillis = Math.max(1, Math.floor(Math.min(Duration.toMillis(heartbeat), 5_000)))
    const tags = { group, category: contract.name }
    const delivered = deliveredCounter.pipe(Metric.taggedWithLabels(labelsOf(tags)))
    const retried = retriedCounter.pipe(Metric.taggedWithLabels(labelsOf(tags)))
    const deadLettered = deadLetteredCounter.pipe(Metric.taggedWithLabels(labelsOf(tags)))
    const inFlightMetric = inFlightGauge.pipe(Metric.taggedWithLabels(labelsOf(tags)))

    const owned = new Map<number, PartitionState>()
    let total = 0
    let stopping = false
    const changes = makeNotifier() // owned partitions, capacity, revocations
    const ackSignal = yield* Queue.unbounded<void>()
    const entities = new Map<string, Array<Work>>()
    const workers = yield* Scope.make()
    const permits = yield* Effect.makeSemaphore(concurrency)

    // transient backend failures (a restart, a network blip) are retried, never fatal
    const transient = (e: { readonly _tag: string }) =>
      e._tag === "StoreUnavailable" && TRANSIENT.test((e as { readonly reason?: string }).reason ?? "")
    const resilient = <A, E2 extends { readonly _tag: string }, R2>(what: string, effect: Effect.Effect<A, E2, R2>) =>
      effect.pipe(
        Effect.tapError((e) => transient(e) ? Effect.logWarning(`subscriber ${group}: ${what} failed, retrying: ${messageOf(e)}`) : Effect.void),
        Effect.retry({
          schedule: Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced("1 second"))),
          while: transient
        })
      )

    const markLost = (st: PartitionState) =>
      Effect.suspend(() => {
        if (st.status === "lost") return Effect.void
        st.status = "lost"
        st.acks = []
        if (owned.get(st.partition) === st) owned.delete(st.partition)
        changes.notify()
        return Effect.logWarning(`subscriber ${group}: lost the lease on partition ${st.partition} (${st.lease.token}); stopped it`)
      })

    const settle = (st: PartitionState) => {
      st.inFlight--
      total--
      changes.notify()
    }

    // -- acks -----------------------------------------------------------------
    const flushPartition = (st: PartitionState) => {
      if (st.acks.length === 0 || st.status === "lost") return Effect.void
      const batch = st.acks
      st.acks = []
      return resilient("ack", groups.ack(st.lease, batch)).pipe(
        Effect.zipRight(Effect.sync(() => {
          for (const d of batch) st.tracked.delete(trackKey(d))
        })),
        Effect.zipRight(Metric.incrementBy(delivered, batch.length)),
        Effect.zipRight(Effect.logDebug(`subscriber ${group}: acked ${batch.length} on partition ${st.partition} (${st.lease.token})`)),
        Effect.catchTag("LeaseLost", () => markLost(st)),
        Effect.catchAll((e) =>
          Effect.zipRight(
            // not acknowledged: let a later claim of the pending list hand them over again
            Effect.sync(() => {
              for (const d of batch) st.tracked.delete(trackKey(d))
            }),
            Effect.logError(`subscriber ${group}: ack failed: ${messageOf(e)}`)
          ))
      )
    }
    const flushAll = Effect.suspend(() => Effect.forEach(Array.from(owned.values()), flushPartition, { discard: true, concurrency: "unbounded" }))
    const flusher = Effect.forever(Effect.zipRight(Effect.zipRight(Queue.take(ackSignal), Queue.takeAll(ackSignal)), flushAll))

    // -- handling -------------------------------------------------------------
    const handleOne = (st: PartitionState, d: Delivery): Effect.Effect<Outcome, never, EventStore | R> =>
      Effect.gen(function*() {
        const raw = d.event
        if (raw instanceof Error) {
          return { _tag: "DeadLetter", errorTag: "DecodeError", message: raw.stream === undefined ? "the stored entry cannot be read" : `the stored entry of ${raw.stream} v${raw.version} cannot be read`, attempts: 0 } as const
        }
        const recorded: RecordedEvent = raw
        if (d.deliveries > 1) {
          // a redelivery: count it as a handler start only now, when its turn has come, so
          // entries that waited behind a crashing one are not taken for the culprit
          const started = yield* resilient("begin", groups.begin(st.lease, d)).pipe(Effect.either)
          if (Either.isLeft(started)) {
            if (started.left._tag === "LeaseLost") yield* markLost(st)
            return { _tag: "Drop" } as const
          }
          if (started.right > maxDeliveries) {
            return {
              _tag: "DeadLetter",
              errorTag: "MaxDeliveries",
              message: `its handler was started ${started.right - 1} times without finishing (maxDeliveries ${maxDeliveries})`,
              attempts: 0
            } as const
          }
        }
        const decoded = Contract.decodeEvent(contract, recorded.type, recorded.eventVersion, recorded.data)
        if (decoded._tag === "UnknownType") {
          return onUnknownType === "skip"
            ? ({ _tag: "Ack" } as const)
            : ({ _tag: "DeadLetter", errorTag: "UnknownEventType", message: `unknown event type ${recorded.type}`, attempts: 0 } as const)
        }
        if (decoded._tag === "Invalid") {
          return {
            _tag: "DeadLetter",
            errorTag: "DecodeError",
            message: `${recorded.type} v${recorded.eventVersion} does not decode${decoded.paths.some((p) => p) ? ` (fields: ${decoded.paths.filter((p) => p).join(", ")})` : ""}`,
            attempts: 0
          } as const
        }
        const { data: _, ...envelope } = recorded
        const driver = yield* Schedule.driver(retry)
        let attempt = 0
        for (;;) {
          if (st.status === "lost") return { _tag: "Drop" } as const
          attempt++
          const counts = new Map<string, number>()
          const ctx: HandlerContext = {
            envelope,
            redelivered: d.deliveries > 1 || d.source === "redelivery",
            deliveries: d.deliveries,
            attempt,
            group,
            produce: (target) =>
              Producer.fromStore(typedStore(store, target), {
                eventId: (stream) => {
                  const index = counts.get(stream) ?? 0
                  counts.set(stream, index + 1)
                  return followUpId(recorded.eventId, group, stream, index)
                },
                correlationId: recorded.correlationId ?? recorded.eventId,
                causationId: recorded.eventId,
                traceparent: recorded.traceparent
              })
          }
          const exit = yield* Effect.exit(
            timedSpan("Subscriber.handle", () => ({ group, stream: recorded.stream, type: recorded.type, version: recorded.version, attempt }), () => handle(decoded.event, ctx), recorded.traceparent)
          )
          if (Exit.isSuccess(exit)) return { _tag: "Ack" } as const
          if (Cause.isInterruptedOnly(exit.cause)) {
            // shutdown interrupts the worker itself (this line is never reached then); a
            // handler whose own effect was interrupted is a defect of the handler
            if (stopping || st.status !== "active") return { _tag: "Drop" } as const
            return { _tag: "DeadLetter", errorTag: "HandlerInterrupted", message: "the handler was interrupted", attempts: attempt } as const
          }
          const failure = Cause.failureOption(exit.cause)
          if (Option.isNone(failure)) {
            const defect = Cause.squash(exit.cause)
            return { _tag: "DeadLetter", errorTag: "HandlerDefect", message: messageOf(defect), attempts: attempt } as const
          }
          const next = yield* Effect.either(driver.next(failure.value))
          if (Either.isLeft(next)) {
            return { _tag: "DeadLetter", errorTag: errorTagOf(failure.value), message: messageOf(failure.value), attempts: attempt } as const
          }
          yield* Metric.increment(retried)
        }
      })

    const processWork = (w: Work): Effect.Effect<void, never, EventStore | R> => {
      const { delivery: d, st } = w
      // a partition being handed over (or lost) takes no new work: what is left stays
      // pending, and the next owner claims it, in order
      if (st.status !== "active" && st.status !== "claiming") {
        return Effect.zipRight(Effect.sync(() => {
          st.tracked.delete(trackKey(d))
          settle(st)
        }), finishRevoke(st))
      }
      return handleOne(st, d).pipe(
        Effect.flatMap((outcome): Effect.Effect<void> => {
          switch (outcome._tag) {
            case "Ack":
              return Effect.sync(() => {
                if (st.status === "lost") return
                st.acks.push(d)
                Queue.unsafeOffer(ackSignal, undefined)
              })
            case "Drop":
              return Effect.sync(() => st.tracked.delete(trackKey(d)))
            case "DeadLetter":
              return resilient("dead-letter", groups.deadLetter(st.lease, d, outcome)).pipe(
                Effect.zipRight(Effect.sync(() => st.tracked.delete(trackKey(d)))),
                Effect.zipRight(Metric.increment(deadLettered)),
                Effect.zipRight(Effect.logWarning(`subscriber ${group}: dead-lettered ${d.event instanceof Error ? d.id : `${d.event.stream} v${d.event.version}`}: ${outcome.errorTag}: ${outcome.message}`)),
                Effect.catchTag("LeaseLost", () => markLost(st)),
                Effect.catchAll((e) => Effect.logError(`subscriber ${group}: dead-letter failed: ${messageOf(e)}`))
              )
          }
        }),
        Effect.ensuring(Effect.zipRight(Effect.sync(() => settle(st)), finishRevoke(st)))
      )
    }

    const entityKey = (d: Delivery) => (d.event instanceof Error ? `#${d.partition}:${d.source}:${d.id}` : d.event.stream)

    const runEntity = (key: string): Effect.Effect<void, never, EventStore | R> =>
      permits.withPermits(1)(
        Effect.gen(function*() {
          for (;;) {
            const next = entities.get(key)?.shift()
            if (next === undefined) {
              entities.delete(key)
              return
            }
            yield* processWork(next)
          }
        })
      )

    const dispatch = (st: PartitionState, deliveries: ReadonlyArray<Delivery>) =>
      Effect.gen(function*() {
        for (const d of deliveries) {
          if (st.tracked.has(trackKey(d))) continue
          st.tracked.add(trackKey(d))
          st.inFlight++
          total++
          const key = entityKey(d)
          const queue = entities.get(key)
          if (queue !== undefined) queue.push({ st, delivery: d })
          else {
            entities.set(key, [{ st, delivery: d }])
            yield* Effect.forkIn(runEntity(key), workers)
          }
        }
        yield* Metric.set(inFlightMetric, total)
      })

    // -- membership, leases, claims -------------------------------------------
    const inFlightByPartition = () => new Map(Array.from(owned.values()).map((st) => [st.partition, st.inFlight] as const))

    // the partitions the reader's outstanding read covers: a lease is not given up while a
    // read may still deliver that partition's entries to this member
    const reading = new Set<number>()

    const finishRevoke = (st: PartitionState) =>
      Effect.suspend(() => {
        if (st.status !== "revoking" || st.inFlight > 0 || reading.has(st.partition)) return Effect.void
        return flushPartition(st).pipe(
          Effect.zipRight(resilient("release", groups.release(st.lease))),
          Effect.ignore,
          Effect.zipRight(Effect.sync(() => {
            if (owned.get(st.partition) === st) owned.delete(st.partition)
            changes.notify()
          }))
        )
      })

    let beats = 0
    const beat = Effect.gen(function*() {
      beats++
      if (stopping) {
        // draining: keep the leases, but never announce the membership again
        for (const st of Array.from(owned.values())) {
          const renewed = yield* Effect.either(resilient("renew", groups.renew(st.lease, ttlMillis)))
          if (Either.isLeft(renewed)) yield* markLost(st)
        }
        return
      }
      const members = yield* resilient("heartbeat", groups.heartbeat(group, member, ttlMillis, inFlightByPartition()))
      const assignment = assign(members.includes(member) ? members : [...members, member], info.partitions)
      for (let p = 0; p < info.partitions; p++) {
        const mine = assignment[p] === member && !stopping
        const st = owned.get(p)
        if (st !== undefined) {
          const renewed = yield* Effect.either(resilient("renew", groups.renew(st.lease, ttlMillis)))
          if (Either.isLeft(renewed)) {
            yield* markLost(st)
            continue
          }
          if (!mine && st.status !== "revoking") {
            st.status = "revoking"
            changes.notify()
          }
          if (st.status === "revoking") yield* finishRevoke(st)
          else if (st.status === "active" && beats % RECLAIM_EVERY === 0) {
            // now and then, take over entries of this partition pending anywhere else (a
            // former owner that stalled past its lease may have read some after the claim)
            const pending = yield* Effect.either(resilient("claim", groups.claim(st.lease, member)))
            if (Either.isLeft(pending)) {
              if (pending.left._tag === "LeaseLost") yield* markLost(st)
            } else yield* dispatch(st, pending.right)
          }
        } else if (mine) {
          const lease = yield* resilient("acquire", groups.acquire(info, p, member, ttlMillis))
          if (lease === undefined) continue
          const fresh: PartitionState = { partition: p, lease, status: "claiming", inFlight: 0, acks: [], tracked: new Set() }
          owned.set(p, fresh)
          const claimed = yield* Effect.either(resilient("claim", groups.claim(lease, member)))
          if (Either.isLeft(claimed)) {
            yield* markLost(fresh)
            continue
          }
          yield* dispatch(fresh, claimed.right)
          fresh.status = "active"
          changes.notify()
        }
      }
    })

    // -- reading ----------------------------------------------------------------
    const reader = Effect.gen(function*() {
      for (;;) {
        const seen = changes.version
        const active = Array.from(owned.values()).filter((st) => st.status === "active")
        if (active.length === 0 || total >= readCount) {
          yield* changes.changed(seen)
          continue
        }
        const count = Math.min(readCount, 2 * readCount - total)
        let failed = false
        for (const st of active) reading.add(st.partition)
        const deliveries = yield* resilient("read", groups.read(active.map((st) => st.lease), member, count, blockMillis).pipe(
          Effect.tapError(() => Effect.sync(() => (failed = true)))
        )).pipe(
          Effect.catchAll((e) => Effect.as(Effect.logError(`subscriber ${group}: read failed: ${messageOf(e)}`), [])),
          Effect.ensuring(Effect.sync(() => reading.clear()))
        )
        if (failed) {
          // a read that failed may have delivered entries whose reply never came (a
          // restart, a dropped connection): they sit in this member's pending list, so take
          // the pending lists again and dispatch what is not already being handled
          for (const st of active) {
            if (st.status !== "active") continue
            const pending = yield* Effect.either(resilient("claim", groups.claim(st.lease, member)))
            if (Either.isLeft(pending)) {
              if (pending.left._tag === "LeaseLost") yield* markLost(st)
              continue
            }
            yield* dispatch(st, pending.right)
          }
        }
        const byPartition = new Map<number, Array<Delivery>>()
        for (const d of deliveries) {
          const list = byPartition.get(d.partition)
          if (list) list.push(d)
          else byPartition.set(d.partition, [d])
        }
        for (const [p, ds] of byPartition) {
          const st = owned.get(p)
          // entries read for a partition being handed over stay pending: it is released only
          // now that no read covers it, and its next owner claims them, in order
          if (st !== undefined && st.status === "active") yield* dispatch(st, ds)
        }
        for (const st of active) if (st.status === "revoking") yield* finishRevoke(st)
      }
    })

    // -- shutdown ---------------------------------------------------------------
    const shutdown = Effect.gen(function*() {
      stopping = true
      for (const st of owned.values()) if (st.status !== "lost") st.status = "revoking"
      changes.notify()
      // wait for the handlers that are running (queued work is dropped: it stays pending)
      const drained = Effect.gen(function*() {
        for (;;) {
          const seen = changes.version
          if (total === 0) return
          yield* changes.changed(seen)
        }
      })
      yield* drained.pipe(Effect.timeout(shutdownTimeout), Effect.withClock(liveClock), Effect.ignore)
      yield* Scope.close(workers, Exit.void)
      yield* Effect.forEach(Array.from(owned.values()), (st) =>
        flushPartition(st).pipe(Effect.zipRight(groups.release(st.lease)), Effect.ignore), { discard: true })
      owned.clear()
      yield* groups.leave(group, member).pipe(Effect.ignore)
    })

    return yield* Effect.scoped(
      Effect.gen(function*() {
        yield* Effect.forkScoped(flusher)
        const firstBeat = yield* Deferred.make<void, SubscriberError>()
        // the heartbeat keeps leases alive while shutdown drains, so it is forked before
        // the shutdown finalizer is added (finalizers run in reverse order)
        const heartbeats = yield* Effect.forkScoped(
          Effect.zipRight(
            Effect.flatMap(Effect.exit(beat), (exit) => Effect.zipRight(Deferred.done(firstBeat, exit), exit)),
            Effect.forever(Effect.zipRight(Effect.sleep(heartbeat), beat))
          )
        )
        yield* Effect.addFinalizer(() => shutdown)
        yield* Deferred.await(firstBeat)
        return yield* Effect.raceFirst(reader, Effect.zipRight(Fiber.join(heartbeats), Effect.never))
      })
    )
  })

const labelsOf = (tags: Record<string, string>) => Object.entries(tags).map(([k, v]) => MetricLabel.make(k, v))

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
 *     OrderPlaced: (event, ctx) => ctx.produce(Shipments).Packing({ station: "A" }, { key: event.orderId }),
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
  engine(contract, options, (event, ctx) => {
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
        engine(contract, options, (event, ctx) =>
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
 * group that does not exist yet (a consumer forked a moment ago) to be created: bound it
 * with `Effect.timeout`.
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
      const s = yield* groups.status(group).pipe(Effect.catchTag("GroupNotFound", () => Effect.succeed(undefined)))
      // pending covers what is in flight: delivered entries stay pending until acknowledged
      if (s !== undefined && s.partitionStatus.every((p) => p.lag === 0 && p.pending === 0)) return
      yield* Effect.sleep(interval).pipe(Effect.withClock(liveClock))
    }
  })

/**
 * A group's state: members, and per partition its owner, pending entries, lag, events in
 * flight and dead letters.
 *
 * @since 0.1.0
 * @category status
 */
export const status = (group: string): Effect.Effect<GroupStatus, GroupError, ConsumerGroups> =>
  Effect.flatMap(ConsumerGroups, (groups) => groups.status(group))
