/**
 * Projections: read models built from a category's events, that can be rebuilt at any
 * time (docs/semantics.md §7).
 *
 * A projection runs single-active under a lease; it reads its category from its
 * checkpoint (one entry id per partition, plus a generation), catches up, then follows
 * live. `rebuild` bumps the generation: the running instance (or the next one) runs the
 * projection's `reset`, then replays from the start. Delivery is at least once: a
 * runner that stops between applying an event and saving its checkpoint applies it
 * again; key idempotent updates on `ctx.idempotencyKey` (stream and version).
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Effect, Either, Fiber, Layer, Option, Schedule, Schema, Stream } from "effect"
import * as Contract from "./Contract.js"
import { advance, type CategoryCursor, type Envelope, isCursor, startCursor } from "./Envelope.js"
import { KeyStore } from "./PersonalData.js"
import {
  type EventDecodeError,
  EventStore,
  InvalidArgument,
  InvalidContract,
  isCaughtUp,
  type ReadError,
  type RecordedEvent,
  isRetryable,
  type StoreError,
  type UnknownEventType
} from "./EventStore.js"
import { uuidv7 } from "./internal/ids.js"
import { hasPersonal, unsealData, whileKeyStoreAway } from "./internal/personal.js"
import { envelopeOf } from "./internal/record.js"
import { timedSpan } from "./internal/tracing.js"
import { liveClock, messageOf } from "./internal/util.js"

// ---------------------------------------------------------------------------
// The store of checkpoints and leases
// ---------------------------------------------------------------------------

/**
 * A projection's stored state.
 *
 * @since 0.1.0
 * @category models
 */
export interface Checkpoint {
  /** Bumped by `rebuild`. */
  readonly generation: number
  /** What the projection has applied, per partition (undefined: nothing yet). */
  readonly cursor: CategoryCursor | undefined
  /** The generation whose reset has run (a new generation resets before it replays). */
  readonly resetDone: number
  /** The category the projection reads (recorded by its runner, for tools). */
  readonly category?: string | undefined
}

/**
 * The projection's lease is held by another runner now, or its generation changed.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointRejected extends Schema.TaggedError<CheckpointRejected>()("CheckpointRejected", {
  projection: Schema.String,
  reason: Schema.Literal("LeaseLost", "GenerationChanged")
}) {
  override get message() {
    return `projection ${this.projection}: checkpoint rejected (${this.reason})`
  }
}

/**
 * @since 0.1.0
 */
export declare namespace ProjectionStore {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /** Takes the projection's lease if free (or renews it for the same member); the token, or undefined. */
    readonly acquire: (name: string, member: string, ttlMillis: number) => Effect.Effect<string | undefined, StoreError | InvalidArgument>
    /** Extends the lease; false when it is no longer held. */
    readonly renew: (name: string, token: string, ttlMillis: number) => Effect.Effect<boolean, StoreError | InvalidArgument>
    readonly release: (name: string, token: string) => Effect.Effect<void, StoreError | InvalidArgument>
    readonly load: (name: string) => Effect.Effect<Checkpoint, StoreError | InvalidArgument>
    /** Saves a checkpoint, only under the lease `token` and while `generation` is current. */
    readonly save: (name: string, token: string, checkpoint: Checkpoint) => Effect.Effect<void, StoreError | InvalidArgument | CheckpointRejected>
    /** Starts a new generation (no cursor); returns it. */
    readonly rebuild: (name: string) => Effect.Effect<number, StoreError | InvalidArgument>
  }
}

/**
 * Checkpoints and leases of projections. `Chronicle.layerMemory`,
 * `RedisChronicle.layer` and `PostgresChronicle.layer` provide it.
 *
 * @since 0.1.0
 * @category tags
 */
export class ProjectionStore extends Context.Tag("effect-chronicle/ProjectionStore")<ProjectionStore, ProjectionStore.Service>() {}

const NAME = /^[A-Za-z0-9_.-]{1,128}$/

const checkName = (name: string) =>
  NAME.test(name) ? Effect.void : Effect.fail(new InvalidArgument({ argument: "projection", reason: `${JSON.stringify(name)} must be 1 to 128 of [A-Za-z0-9_.-]` }))

/**
 * Projection checkpoints in memory (leases expire by the Effect `Clock`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemoryStore = (): ProjectionStore.Service => {
  const states = new Map<string, Checkpoint>()
  const leases = new Map<string, { token: string; member: string; expiry: number }>()
  let epoch = 0
  const stateOf = (name: string): Checkpoint => states.get(name) ?? { generation: 0, cursor: undefined, resetDone: 0 }
  const held = (name: string, token: string, now: number) => {
    const l = leases.get(name)
    return l !== undefined && l.token === token && l.expiry > now
  }
  return ProjectionStore.of({
    acquire: (name, member, ttlMillis) =>
      Effect.zipRight(checkName(name), Effect.map(Clock.currentTimeMillis, (now) => {
        const l = leases.get(name)
        if (l !== undefined && l.expiry > now && l.member !== member) return undefined
        if (l !== undefined && l.expiry > now) {
          l.expiry = now + ttlMillis
          return l.token
        }
        const token = `${member}:${++epoch}`
        leases.set(name, { token, member, expiry: now + ttlMillis })
        return token
      })),
    renew: (name, token, ttlMillis) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (!held(name, token, now)) return false
        leases.get(name)!.expiry = now + ttlMillis
        return true
      }),
    release: (name, token) =>
      Effect.sync(() => {
        if (leases.get(name)?.token === token) leases.delete(name)
      }),
    load: (name) => Effect.zipRight(checkName(name), Effect.sync(() => stateOf(name))),
    save: (name, token, checkpoint) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (!held(name, token, now)) return Effect.fail(new CheckpointRejected({ projection: name, reason: "LeaseLost" }))
        if (stateOf(name).generation !== checkpoint.generation) {
          return Effect.fail(new CheckpointRejected({ projection: name, reason: "GenerationChanged" }))
        }
        states.set(name, checkpoint)
        return Effect.void
      }),
    rebuild: (name) =>
      Effect.zipRight(checkName(name), Effect.sync(() => {
        const next = stateOf(name).generation + 1
        states.set(name, { ...stateOf(name), generation: next, cursor: undefined })
        return next
      }))
  })
}

/**
 * Projection checkpoints in memory, as a Layer (included in `Chronicle.layerMemory`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemoryStore: Layer.Layer<ProjectionStore> = Layer.sync(ProjectionStore, makeMemoryStore)

// ---------------------------------------------------------------------------
// Projections
// ---------------------------------------------------------------------------

/**
 * What a projection handler gets besides the event.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProjectionContext {
  readonly envelope: Envelope
  /** The generation being built. */
  readonly generation: number
  /**
   * `stream@version`: the same for every application of this event, so that an update
   * keyed on it is idempotent (delivery to a projection is at least once).
   */
  readonly idempotencyKey: string
}

/**
 * Handlers of a projection: any subset of the contract's events (the rest are skipped),
 * and nothing else.
 *
 * @since 0.1.0
 * @category models
 */
export type Handlers<C extends Contract.Any> = {
  readonly [K in Contract.Tag<C>]?: (event: Contract.EventOf<C, K>, ctx: ProjectionContext) => Effect.Effect<unknown, any, any>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<C extends Contract.Any, H, RR> {
  /** Unique per store: the checkpoint's name. */
  readonly name: string
  readonly contract: C
  readonly handlers: H
  /** Empties the read model; run before a rebuilt generation replays. */
  readonly reset: Effect.Effect<void, unknown, RR>
  /** Retries of a failing handler before the projection stops with its error (default exponential from 100 ms, 5 recurrences). */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /** How long the single-active lease lasts without renewal (default 10 seconds). */
  readonly leaseTtl?: number | undefined
}

/**
 * A projection definition.
 *
 * @since 0.1.0
 * @category models
 */
export interface Projection<C extends Contract.Any, H, RR> extends Options<C, H, RR> {
  readonly _tag: "Projection"
}

/**
 * Defines a projection.
 *
 * @example
 * ```ts
 * const totals = new Map<string, number>()
 * const Totals = Projection.make({
 *   name: "order-totals",
 *   contract: Orders,
 *   handlers: { Placed: (event, ctx) => Effect.sync(() => totals.set(ctx.envelope.stream, event.total)) },
 *   reset: Effect.sync(() => totals.clear())
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <C extends Contract.Any, H extends Handlers<C> & Record<Exclude<keyof H, Contract.Tag<C>>, never>, RR>(
  options: Options<C, H, RR>
): Projection<C, H, RR> => ({ ...options, _tag: "Projection" })

type HandlerServices<H> = {
  [K in keyof H]: H[K] extends ((...args: ReadonlyArray<any>) => Effect.Effect<any, any, infer R>) | undefined ? R : never
}[keyof H]

/**
 * What a running projection stops with.
 *
 * @since 0.1.0
 * @category errors
 */
export class ProjectionFailed extends Schema.TaggedError<ProjectionFailed>()("ProjectionFailed", {
  projection: Schema.String,
  stream: Schema.String,
  version: Schema.Int,
  reason: Schema.String
}) {
  override get message() {
    return `projection ${this.projection} stopped at ${this.stream} v${this.version}: ${this.reason}`
  }
}

/**
 * @since 0.1.0
 * @category errors
 */
export type ProjectionError = ProjectionFailed | ReadError | UnknownEventType | EventDecodeError | InvalidContract | InvalidArgument | StoreError

/** The generation changed while running: reset and start over. */
class Restart {
  readonly _tag = "Restart"
}

/**
 * Runs a projection until interrupted: waits for its lease (so only one runner applies
 * events), resets when its generation is new, catches up from the checkpoint, then
 * follows live. A rebuild while it runs makes it reset and replay.
 *
 * @since 0.1.0
 * @category running
 */
export const run = <C extends Contract.Any, H, RR>(
  projection: Projection<C, H, RR>
): Effect.Effect<never, ProjectionError, EventStore | ProjectionStore | RR | HandlerServices<H>> =>
  Effect.gen(function*() {
    const { contract, name } = projection
    if (contract.issues.length > 0) return yield* new InvalidContract({ contract: contract.name, issues: contract.issues })
    yield* checkName(name)
    const store = yield* EventStore
    const checkpoints = yield* ProjectionStore
    const ttl = projection.leaseTtl ?? 10_000
    const member = `${name}:${uuidv7(yield* Clock.currentTimeMillis)}`
    const partitions = yield* store.partitions(contract.name)
    const keys = Option.getOrUndefined(yield* Effect.serviceOption(KeyStore))
    const retry = projection.retry ?? Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(5)))
    const handlers = projection.handlers as Record<string, ((e: unknown, ctx: ProjectionContext) => Effect.Effect<unknown, unknown, HandlerServices<H>>) | undefined>

    // the generation being built, watched by the lease renewals: a rebuild is noticed even
    // when no event arrives to be checkpointed
    let building = -1

    // one generation, from its checkpoint: fails with Restart when the generation changes
    const build = (token: string) =>
      Effect.gen(function*() {
        let state = yield* checkpoints.load(name)
        if (state.generation !== state.resetDone && state.generation > 0) {
          yield* projection.reset.pipe(Effect.mapError((e) => new ProjectionFailed({ projection: name, stream: "", version: 0, reason: `reset failed: ${String(e)}` })))
          state = { generation: state.generation, cursor: undefined, resetDone: state.generation, category: contract.name }
          yield* saveOrRestart(token, state)
        }
        const generation = state.generation
        building = generation
        let cursor: CategoryCursor = state.cursor !== undefined && isCursor(state.cursor, partitions) ? state.cursor : startCursor(partitions)
        let unsaved = 0
        const apply = (recorded: RecordedEvent) =>
          Effect.gen(function*() {
            // personal fields opened (or read as forgotten) first; a failure names the field, never its value
            const data = hasPersonal(contract, recorded.type)
              ? yield* whileKeyStoreAway(unsealData(keys, contract, recorded.type, recorded.stream, recorded.eventId, recorded.data)).pipe(
                Effect.mapError((e) => new ProjectionFailed({ projection: name, stream: recorded.stream, version: recorded.version, reason: e.message }))
              )
              : recorded.data
            const decoded = Contract.decodeEvent(contract, recorded.type, recorded.eventVersion, data)
            if (decoded._tag === "Decoded") {
              const handler = handlers[recorded.type]
              if (handler !== undefined) {
                const envelope = envelopeOf(recorded)
                const ctx: ProjectionContext = { envelope, generation, idempotencyKey: `${recorded.stream}@${recorded.version}` }
                yield* timedSpan("Projection.apply", () => ({ projection: name, stream: recorded.stream, type: recorded.type }), () => handler(decoded.event, ctx)).pipe(
                  Effect.retry(retry),
                  Effect.mapError((e) => new ProjectionFailed({ projection: name, stream: recorded.stream, version: recorded.version, reason: messageOf(e) }))
                )
              }
            } else if (decoded._tag === "Invalid") {
              return yield* new ProjectionFailed({ projection: name, stream: recorded.stream, version: recorded.version, reason: `does not decode: ${decoded.paths.join(", ")}` })
            }
            // unknown types (a newer producer) are skipped: a projection only reads what it knows
            cursor = advance(cursor, recorded.position)
            unsaved++
          })
        const checkpoint = Effect.suspend(() => {
          if (unsaved === 0) return Effect.void
          unsaved = 0
          return Effect.zipRight(saveOrRestart(token, { generation, cursor, resetDone: state.resetDone, category: contract.name }), recovered)
        })
        yield* store.readCategory(contract.name, { from: cursor, live: true }).pipe(
          Stream.runForEachChunk((chunk) =>
            Effect.zipRight(
              Effect.forEach(chunk, (item) => (isCaughtUp(item) ? Effect.void : apply(item)), { discard: true }),
              checkpoint
            )
          )
        )
      })

    const saveOrRestart = (token: string, checkpoint: Checkpoint) =>
      checkpoints.save(name, token, checkpoint).pipe(
        Effect.catchTag("CheckpointRejected", (e): Effect.Effect<never, Restart | CheckpointRejected> =>
          e.reason === "GenerationChanged" ? Effect.fail(new Restart()) : Effect.fail(e))
      )

    // failures of the store: retried while the backend says they pass (a dropped
    // connection, a restart), a few times more slowly otherwise, each change reported once
    let failures = 0
    let failingSince: string | undefined
    const failed = (error: unknown) =>
      Effect.gen(function*() {
        const passing = isRetryable(error)
        failures++
        if (failingSince === undefined) {
          failingSince = messageOf(error)
          yield* Effect.logWarning(`projection ${name}: the store failed, retrying: ${failingSince}`)
        }
        if (!passing && failures >= 4) return true
        yield* Effect.sleep(passing ? Math.min(1000, 20 * 2 ** Math.min(failures - 1, 10)) : 1000 * 2 ** (failures - 1))
        return false
      })
    const recovered = Effect.suspend(() => {
      if (failingSince === undefined) return Effect.void
      failingSince = undefined
      const n = failures
      failures = 0
      return Effect.logInfo(`projection ${name}: the store is back after ${n} failure(s)`)
    })

    for (;;) {
      const acquired = yield* Effect.either(checkpoints.acquire(name, member, ttl))
      if (Either.isLeft(acquired)) {
        if (yield* failed(acquired.left)) return yield* Effect.fail(acquired.left)
        continue
      }
      const token = acquired.right
      if (token === undefined) {
        yield* Effect.sleep(Math.max(10, Math.floor(ttl / 3)))
        continue
      }
      building = -1
      // renewals tolerate passing failures until the lease would lapse: past that, another
      // runner may hold it, so this one stops applying
      const every = Math.max(10, Math.min(1000, Math.floor(ttl / 3)))
      const renewals = yield* Effect.fork(Effect.gen(function*() {
        let renewedAt = Date.now()
        for (;;) {
          yield* Effect.sleep(every)
          const r = yield* Effect.either(Effect.gen(function*() {
            if (!(yield* checkpoints.renew(name, token, ttl))) return yield* Effect.fail(LOST)
            const current = (yield* checkpoints.load(name)).generation
            if (building >= 0 && current !== building) return yield* Effect.fail(REBUILT)
          }))
          if (Either.isRight(r)) {
            renewedAt = Date.now()
            continue
          }
          if (r.left === LOST || r.left === REBUILT) return yield* Effect.fail(r.left)
          if (!isRetryable(r.left) || Date.now() - renewedAt > ttl * 0.8) return yield* Effect.fail(LOST)
        }
      }))
      // runs until the generation changes (Restart) or the lease is lost
      type Stop = Effect.Effect.Error<ReturnType<typeof build>> | typeof LOST | typeof REBUILT
      const outcome = yield* Effect.raceFirst(
        Effect.map(Effect.either(build(token)), (e): Either.Either<void, Stop> => e),
        Effect.map(Fiber.await(renewals), (exit): Either.Either<void, Stop> =>
          Either.left(exit._tag === "Failure" && Cause.failureOption(exit.cause).pipe(Option.getOrUndefined) === REBUILT ? REBUILT : LOST))
      ).pipe(Effect.ensuring(Fiber.interrupt(renewals)))
      if (Either.isLeft(outcome)) {
        const reason = outcome.left
        if (reason === LOST || reason === REBUILT || reason instanceof Restart || reason instanceof CheckpointRejected) {
          yield* Effect.logInfo(`projection ${name}: ${reason === REBUILT || reason instanceof Restart ? "generation changed: resetting and replaying" : "lease lost"}`)
          continue
        }
        if (reason instanceof ProjectionFailed || reason._tag === "InvalidArgument" || reason._tag === "EventDecodeError") {
          yield* checkpoints.release(name, token).pipe(Effect.ignore)
          return yield* Effect.fail(reason)
        }
        // the store failed under it (a dropped connection, a restart): take the lease
        // again and go on from the checkpoint
        if (yield* failed(reason)) {
          yield* checkpoints.release(name, token).pipe(Effect.ignore)
          return yield* Effect.fail(reason)
        }
        continue
      }
    }
  }).pipe(Effect.withSpan("Projection.run", { attributes: { projection: projection.name } }))

const LOST = "lost" as const
const REBUILT = "rebuilt" as const

/**
 * Runs a projection in the background for the Layer's lifetime.
 *
 * @since 0.1.0
 * @category running
 */
export const layer = <C extends Contract.Any, H, RR>(
  projection: Projection<C, H, RR>
): Layer.Layer<never, never, EventStore | ProjectionStore | RR | HandlerServices<H>> =>
  Layer.scopedDiscard(
    Effect.forkScoped(run(projection).pipe(Effect.tapErrorCause((cause) => Effect.logError(`projection ${projection.name} stopped`, cause))))
  )

/**
 * Starts a new generation: the running instance (or the next one) resets the read model
 * and replays the category from the start. Returns the new generation.
 *
 * @since 0.1.0
 * @category running
 */
export const rebuild = (projection: { readonly name: string }): Effect.Effect<number, StoreError | InvalidArgument, ProjectionStore> =>
  Effect.flatMap(ProjectionStore, (s) => s.rebuild(projection.name))

/**
 * Waits until the projection's checkpoint, in its current generation, is at the end of
 * its category (polls). For tests and tools.
 *
 * @since 0.1.0
 * @category running
 */
export const awaitCaughtUp = (
  projection: { readonly name: string; readonly contract: Contract.Any },
  options: { readonly pollInterval?: number | undefined } = {}
): Effect.Effect<void, ReadError | InvalidArgument, EventStore | ProjectionStore> =>
  Effect.gen(function*() {
    const store = yield* EventStore
    const checkpoints = yield* ProjectionStore
    const partitions = yield* store.partitions(projection.contract.name)
    for (;;) {
      const state = yield* checkpoints.load(projection.name)
      if (state.resetDone === state.generation || state.generation === 0) {
        const from = state.cursor !== undefined && isCursor(state.cursor, partitions) ? state.cursor : startCursor(partitions)
        const ahead = yield* Stream.runHead(store.readCategory(projection.contract.name, { from, pageSize: 1 }))
        if (Option.isNone(ahead)) return
      }
      yield* Effect.sleep(options.pollInterval ?? 10).pipe(Effect.withClock(liveClock))
    }
  })


