/**
 * Handling one delivery (docs/semantics.md §5–6): decode it, count a redelivery's start, run the
 * handler under the retry schedule, and turn what happened into an outcome. No handler
 * (first attempt or retry) starts past the partition's local lease deadline.
 *
 * @internal
 */
import { Cause, Effect, Either, Exit, Metric, Option, Schedule } from "effect"
import type { Delivery, DeadLetterReason } from "../../ConsumerGroups.js"
import * as Contract from "../../Contract.js"
import { hasPersonal, unsealData, whileKeyStoreAway } from "../personal.js"
import type { KeyStore } from "../../PersonalData.js"
import type { Envelope } from "../../Envelope.js"
import type { RecordedEvent } from "../../EventStore.js"
import { typedStore } from "../../EventStore.js"
import { followUpId } from "../ids.js"
import { envelopeOf } from "../record.js"
import { timedSpan } from "../tracing.js"
import { messageOf } from "../util.js"
import * as Producer from "../../Producer.js"
import type { HandlerContext } from "../../Subscriber.js"
import type { Step } from "./lanes.js"
import { canStart, isLive, type PartitionState } from "./partition.js"
import type { Resilience } from "./resilience.js"
import { type EngineState, nowOf } from "./state.js"

/** How one delivery ends, before its effect on the group is applied. */
export type Outcome =
  | { readonly _tag: "Ack" }
  | { readonly _tag: "DeadLetter"; readonly reason: DeadLetterReason }
  /** The lease deadline passed before the handler could start: wait for a renewal. */
  | { readonly _tag: "Park" }
  /** Not for this member any more (revoked, lost, shut down): the entry stays pending. */
  | { readonly _tag: "Drop" }

const ack: Outcome = { _tag: "Ack" }
const drop: Outcome = { _tag: "Drop" }
const deadLetter = (errorTag: string, message: string, attempts: number): Outcome => ({
  _tag: "DeadLetter",
  reason: { errorTag, message, attempts }
})

/** What a handler's exit means: success, an interruption, a defect, or a failure to retry. */
export type Ended =
  | { readonly _tag: "Success" }
  | { readonly _tag: "Interrupted" }
  | { readonly _tag: "Defect"; readonly message: string }
  | { readonly _tag: "Failure"; readonly error: unknown }

export const ended = (exit: Exit.Exit<unknown, unknown>): Ended => {
  if (Exit.isSuccess(exit)) return { _tag: "Success" }
  if (Cause.isInterruptedOnly(exit.cause)) return { _tag: "Interrupted" }
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) return { _tag: "Defect", message: messageOf(Cause.squash(exit.cause)) }
  return { _tag: "Failure", error: failure.value }
}

/** Why a stored entry cannot be handled, before any handler runs (the slow path of decoding). */
export const undecodable = (contract: Contract.Any, raw: RecordedEvent, onUnknownType: "dead-letter" | "skip"): Outcome | undefined => {
  const decoded = Contract.decodeEvent(contract, raw.type, raw.eventVersion, raw.data)
  if (decoded._tag === "UnknownType") {
    return onUnknownType === "skip" ? ack : deadLetter("UnknownEventType", `unknown event type ${raw.type}`, 0)
  }
  if (decoded._tag === "Invalid") {
    const paths = decoded.paths.filter((p) => p)
    return deadLetter("DecodeError", `${raw.type} v${raw.eventVersion} does not decode${paths.length > 0 ? ` (fields: ${paths.join(", ")})` : ""}`, 0)
  }
  return undefined
}

const errorTagOf = (e: unknown): string =>
  typeof e === "object" && e !== null && typeof (e as { _tag?: unknown })._tag === "string" ? (e as { _tag: string })._tag : "HandlerFailed"

export interface HandleEnv<R> {
  readonly state: EngineState
  readonly contract: Contract.Any
  readonly handle: (event: any, ctx: HandlerContext) => Effect.Effect<unknown, unknown, R>
  readonly resilience: Resilience
  readonly markLost: (st: PartitionState) => Effect.Effect<void>
  /** Queues a handled delivery for its (batched) acknowledgement. */
  readonly acknowledge: (st: PartitionState, d: Delivery) => void
  /** The key store personal fields are opened with (none: such events fail typed). */
  readonly keys: KeyStore.Service | undefined
}

/** A stored event with personal fields that does not decode once opened: the paths only, never a value. */
class PersonalDecodeError {
  readonly _tag = "DecodeError"
  constructor(readonly message: string) {}
}

/**
 * The context a handler gets. `produce` is made on first use: most handlers never call it,
 * and a closure per event is not free.
 */
class Context implements HandlerContext {
  private envelope_: Envelope | undefined
  constructor(
    readonly redelivered: boolean,
    readonly replayed: boolean,
    readonly deliveries: number,
    readonly attempt: number,
    readonly group: string,
    readonly member: string,
    readonly partition: number,
    readonly epoch: number,
    private readonly recorded: RecordedEvent,
    private readonly store: EngineState["store"],
    private readonly keys: KeyStore.Service | undefined
  ) {}
  get envelope(): Envelope {
    return (this.envelope_ ??= envelopeOf(this.recorded))
  }
  private produce_: HandlerContext["produce"] | undefined
  get produce(): HandlerContext["produce"] {
    return (this.produce_ ??= this.producer())
  }
  /** One count per target stream for the whole attempt: the n-th event to a stream gets the n-th derived id. */
  private producer(): HandlerContext["produce"] {
    const { group, keys, recorded, store } = this
    const counts = new Map<string, number>()
    return (target) =>
      Producer.fromStore(typedStore(store, target, keys), {
        eventId: (stream) => {
          const index = counts.get(stream) ?? 0
          counts.set(stream, index + 1)
          return followUpId(group, recorded.stream, recorded.eventId, stream, index)
        },
        correlationId: recorded.correlationId ?? recorded.eventId,
        causationId: recorded.eventId,
        traceparent: recorded.traceparent
      })
  }
}

/**
 * Runs deliveries to their end and applies each outcome to the group: the workers' step.
 * Each worker gets a runner of its own, which holds the delivery it runs now and
 * continuations made once, so the common case (a first attempt that succeeds) allocates
 * no closure and no generator.
 */
export const makeRunners = <R>(env: HandleEnv<R>) => {
  const { contract, resilience, state } = env
  const { config, groups, metrics } = state
  const group = config.group
  // spans only under a tracer that records them (see internal/tracing): decided once
  const traced = state.traced

  /** Retries a backend call while it fails for a passing reason and the partition is still this member's. */
  const surely = <A, E>(st: PartitionState, what: string, effect: Effect.Effect<A, E>) =>
    resilience.retrying(what, effect, () => isLive(st))

  const call = (recorded: RecordedEvent, event: unknown, ctx: HandlerContext) =>
    traced
      ? timedSpan(
        "Subscriber.handle",
        () => ({ group, stream: recorded.stream, type: recorded.type, version: recorded.version, attempt: ctx.attempt }),
        () => env.handle(event, ctx),
        recorded.traceparent
      )
      : env.handle(event, ctx)

  const park_ = (st: PartitionState, d: Delivery, reason: DeadLetterReason): Effect.Effect<Step> =>
    surely(st, "dead-letter", groups.deadLetter(st.lease, d, reason)).pipe(
      Effect.zipRight(Effect.sync(() => {
        st.finished++
      })),
      Effect.zipRight(Metric.increment(metrics.deadLettered)),
      Effect.zipRight(Effect.logWarning(`subscriber ${group}: dead-lettered ${d.event instanceof Error ? d.id : `${d.event.stream} v${d.event.version}`}: ${reason.errorTag}: ${reason.message}`)),
      Effect.as("settled" as const),
      Effect.catchAll((e) =>
        e._tag === "LeaseLost"
          ? Effect.as(env.markLost(st), "settled" as const)
          : Effect.as(resilience.fatal("dead-letter", e), "settled" as const)
      )
    )

  /**
   * What an outcome does to the group (the ack queued, the dead letter written, or
   * nothing), then the worker's continuation `k`: called directly on the common path, so
   * a delivery that is acknowledged costs no further step of the fiber.
   */
  const apply = <R2>(st: PartitionState, d: Delivery, o: Outcome, k: (step: Step) => Effect.Effect<void, never, R2>): Effect.Effect<void, never, R2> => {
    switch (o._tag) {
      case "Ack":
        if (isLive(st) || st.phase === "revoking") env.acknowledge(st, d)
        return k("settled")
      case "Park":
        return k("park")
      case "Drop":
        return k("settled")
      case "DeadLetter":
        return Effect.flatMap(park_(st, d, o.reason), k)
    }
  }

  return (k: (step: Step) => Effect.Effect<void, never, R>): ((st: PartitionState, d: Delivery) => Effect.Effect<void, never, R>) => {
    // the delivery this worker runs now; `k` is what the worker does after each
    let st: PartitionState
    let d: Delivery
    let recorded: RecordedEvent
    let event: unknown
    // for an event with personal fields: opening and decoding it, part of every attempt
    // (a key store away is waited for; a value that does not open fails as a handler would)
    let opening: Effect.Effect<unknown, unknown> | undefined
    let n = 1
    let driver: Schedule.ScheduleDriver<unknown, unknown, never> | undefined
    // the decoder of the last type and version seen: a category's events are mostly of a few
    let lastType = ""
    let lastVersion = -1
    let lastDecoder: ReturnType<typeof Contract.decoderOf>
    let lastPersonal = false

    const failed = (cause: Cause.Cause<unknown>): Effect.Effect<void, never, R> => {
      const end = ended(Exit.failCause(cause))
      switch (end._tag) {
        case "Success":
          return apply(st, d, ack, k)
        case "Interrupted":
          // a revoked or lost partition's worker is interrupted from outside (its
          // interruption ends the worker before this line); a handler whose own effect
          // was interrupted is a defect of the handler
          return apply(st, d, !isLive(st) || state.stopping ? drop : deadLetter("HandlerInterrupted", "the handler was interrupted", n), k)
        case "Defect":
          return apply(st, d, deadLetter("HandlerDefect", end.message, n), k)
        case "Failure":
          return Effect.gen(function*() {
            driver ??= (yield* Schedule.driver(config.retry)) as Schedule.ScheduleDriver<unknown, unknown, never>
            const delay = yield* Effect.either(driver.next(end.error))
            if (Either.isLeft(delay)) return yield* apply(st, d, deadLetter(errorTagOf(end.error), messageOf(end.error), n), k)
            yield* Metric.increment(metrics.retried)
            n++
            return yield* start()
          })
      }
    }
    const onEnd = { onSuccess: () => apply(st, d, ack, k), onFailure: failed }

    /**
     * One attempt of the current delivery. The first attempt of a first delivery is started
     * by the worker in the same step as its own check of the deadline, so it skips this one.
     */
    const start = (checked = false): Effect.Effect<void, never, R> => {
      if (!checked && !canStart(st, nowOf(state))) return isLive(st) ? k("park") : apply(st, d, drop, k)
      const ctx = new Context(d.deliveries > 1 || d.source === "redelivery", d.source === "redelivery", d.deliveries, n, group, state.member, st.partition, st.epoch, recorded, state.store, env.keys)
      if (opening !== undefined) return Effect.matchCauseEffect(Effect.flatMap(opening, (opened) => call(recorded, opened, ctx)), onEnd)
      return Effect.matchCauseEffect(call(recorded, event, ctx), onEnd)
    }

    /** A redelivery: count it as a handler start only now, when its turn has come, so entries that waited behind a crashing one are not taken for the culprit. */
    const redelivered = (): Effect.Effect<void, never, R> =>
      Effect.gen(function*() {
        const started = yield* Effect.either(surely(st, "begin", groups.begin(st.lease, d)))
        if (Either.isLeft(started)) {
          if (started.left._tag === "LeaseLost") yield* env.markLost(st)
          return yield* apply(st, d, drop, k)
        }
        if (started.right > config.maxDeliveries) {
          return yield* apply(st, d, deadLetter("MaxDeliveries", `its handler was started ${started.right - 1} times without finishing (maxDeliveries ${config.maxDeliveries})`, 0), k)
        }
        return yield* start()
      })

    /** Runs a delivery the worker has just checked it may start (its partition's deadline not passed). */
    return (st_, d_) => {
      st = st_
      d = d_
      n = 1
      driver = undefined
      opening = undefined
      const raw = d.event
      if (raw instanceof Error) {
        return apply(st, d, deadLetter("DecodeError", raw.stream === undefined ? "the stored entry cannot be read" : `the stored entry of ${raw.stream} v${raw.version} cannot be read`, 0), k)
      }
      if (raw.type !== lastType || raw.eventVersion !== lastVersion) {
        lastType = raw.type
        lastVersion = raw.eventVersion
        lastDecoder = Contract.decoderOf(contract, raw.type, raw.eventVersion)
        lastPersonal = hasPersonal(contract, raw.type)
      }
      const decoder = lastDecoder
      const data = raw.data
      if (decoder !== undefined && lastPersonal) {
        recorded = raw
        opening = Effect.flatMap(whileKeyStoreAway(unsealData(env.keys, contract, raw.type, raw.stream, raw.eventId, data)), (opened) => {
          const result = typeof opened === "object" && opened !== null ? decoder({ ...opened, _tag: raw.type }) : undefined
          if (result !== undefined && Either.isRight(result)) return Effect.succeed(result.right)
          const paths = result === undefined ? [] : Contract.pathsOf(result.left)
          return Effect.fail(new PersonalDecodeError(`${raw.type} v${raw.eventVersion} does not decode${paths.length > 0 ? ` (fields: ${paths.join(", ")})` : ""}`))
        })
        return d.deliveries > 1 ? redelivered() : start(true)
      }
      if (decoder !== undefined && typeof data === "object" && data !== null && !Array.isArray(data)) {
        // a fresh literal with the tag decodes faster than the parsed object given one
        const result = decoder({ ...data, _tag: raw.type })
        if (Either.isRight(result)) {
          recorded = raw
          event = result.right
          return d.deliveries > 1 ? redelivered() : start(true)
        }
      }
      return apply(st, d, undecodable(contract, raw, config.onUnknownType) ?? deadLetter("DecodeError", `${raw.type} v${raw.eventVersion} does not decode`, 0), k)
    }
  }
}
