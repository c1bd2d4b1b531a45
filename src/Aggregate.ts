/**
 * Aggregates, as deciders: state is rebuilt from events (`initialState`, `evolve`),
 * commands are decided against it (`decide`), and the resulting events are appended with
 * the loaded version as expected version, so two writers cannot both act on the same
 * state. Snapshots keep loading flat as streams grow (docs/semantics.md §2, §8).
 *
 * @since 0.1.0
 */
import { Effect, Either, Option, Schedule, Schema, Stream } from "effect"
import * as Contract from "./Contract.js"
import {
  type AppendError,
  EventStore,
  InvalidArgument,
  InvalidContract,
  type ReadError,
  typedStore,
  type UnknownEventType
} from "./EventStore.js"
import { uuidv5 } from "./internal/ids.js"
import { hasAnyPersonal } from "./internal/personal.js"
import { KeyStore, type KeyStoreError, type PersonalDataError } from "./PersonalData.js"
import { isWellFormed } from "./internal/util.js"
import { SnapshotStore } from "./Snapshots.js"

/**
 * @since 0.1.0
 * @category symbols
 */
export const TypeId: unique symbol = Symbol.for("effect-chronicle/Aggregate")

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<C extends Contract.Any, S, SI, Cmd, CmdI, E, R> {
  /** The events of the aggregate; its name is the category of its streams. */
  readonly contract: C
  /** Commands, decoded at the boundary. */
  readonly command: Schema.Schema<Cmd, CmdI>
  readonly initialState: S
  /** The state after one more event. Pure. */
  readonly evolve: (state: S, event: Contract.Event<C>) => S
  /** The events a command produces in a state, or a domain error. */
  readonly decide: (command: Cmd, state: S) => Effect.Effect<ReadonlyArray<Contract.Event<C>>, E, R>
  /**
   * Take a snapshot each time an append crosses a multiple of this many events (needs
   * `stateSchema`). An aggregate whose contract has personal fields takes none: its state
   * would hold personal data in clear, out of reach of `PersonalData.forget`.
   */
  readonly snapshotEvery?: number | undefined
  /** How the state is stored in a snapshot. */
  readonly stateSchema?: Schema.Schema<S, SI> | undefined
  /** Bump when `evolve` or the state's shape changes: older snapshots are then ignored. Default 1. */
  readonly stateVersion?: number | undefined
}

/**
 * An aggregate definition.
 *
 * @since 0.1.0
 * @category models
 */
export interface Aggregate<C extends Contract.Any, S, SI, Cmd, CmdI, E, R> extends Options<C, S, SI, Cmd, CmdI, E, R> {
  readonly [TypeId]: TypeId
  readonly stateVersion: number
}

/**
 * @since 0.1.0
 * @category symbols
 */
export type TypeId = typeof TypeId

/**
 * Any aggregate.
 *
 * @since 0.1.0
 * @category models
 */
export interface Any extends Aggregate<Contract.Any, any, any, any, any, any, any> {}

/**
 * A command that does not decode with the aggregate's command schema.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidCommand extends Schema.TaggedError<InvalidCommand>()("InvalidCommand", {
  aggregate: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `invalid command for ${this.aggregate}: ${this.reason}`
  }
}

/**
 * Defines an aggregate. The domain errors and services of `decide` are inferred from
 * every value it can return.
 *
 * @example
 * ```ts
 * const Counter = Aggregate.make({
 *   contract: Counters,
 *   command: Schema.Struct({ _tag: Schema.Literal("Add"), amount: Schema.Int }),
 *   initialState: 0,
 *   evolve: (total, event) => total + event.amount,
 *   decide: (command) => Effect.succeed([Counters.make.Added({ amount: command.amount })]),
 *   snapshotEvery: 100,
 *   stateSchema: Schema.Int
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <
  C extends Contract.Any,
  S,
  SI,
  Cmd,
  CmdI,
  D extends (command: Cmd, state: S) => Effect.Effect<ReadonlyArray<Contract.Event<C>>, any, any>
>(
  options: Omit<Options<C, S, SI, Cmd, CmdI, never, never>, "decide"> & { readonly decide: D }
): Aggregate<C, S, SI, Cmd, CmdI, Effect.Effect.Error<ReturnType<D>>, Effect.Effect.Context<ReturnType<D>>> =>
  ({ ...options, [TypeId]: TypeId, stateVersion: options.stateVersion ?? 1 }) as Aggregate<
    C,
    S,
    SI,
    Cmd,
    CmdI,
    Effect.Effect.Error<ReturnType<D>>,
    Effect.Effect.Context<ReturnType<D>>
  >

/**
 * What loading failed with.
 *
 * @since 0.1.0
 * @category errors
 */
export type LoadError = ReadError | UnknownEventType | InvalidContract | PersonalDataError | KeyStoreError

/**
 * An aggregate's state and the version it includes.
 *
 * @since 0.1.0
 * @category models
 */
export interface Loaded<S> {
  readonly state: S
  readonly version: number
  /** The snapshot version loading started from (0 when it replayed the whole stream). */
  readonly fromSnapshot: number
}

const streamOf = (agg: Any, id: string) => `${agg.contract.name}-${id}`

const checkContract = (agg: Any) =>
  agg.contract.issues.length > 0
    ? Effect.fail(new InvalidContract({ contract: agg.contract.name, issues: agg.contract.issues }))
    : Effect.void

/**
 * Loads an aggregate: its latest usable snapshot (same `stateVersion`, decodable), then
 * the events after it.
 *
 * @since 0.1.0
 * @category loading
 */
export const load = <C extends Contract.Any, S, SI, Cmd, CmdI, E, R>(
  agg: Aggregate<C, S, SI, Cmd, CmdI, E, R>,
  entityId: string
): Effect.Effect<Loaded<S>, LoadError, EventStore | SnapshotStore> =>
  Effect.gen(function*() {
    yield* checkContract(agg)
    const store = yield* EventStore
    const stream = streamOf(agg, entityId)
    let state = agg.initialState
    let version = 0
    // a state built from personal data would hold it in clear: such aggregates take no snapshots
    if (agg.snapshotEvery !== undefined && agg.stateSchema !== undefined && !hasAnyPersonal(agg.contract)) {
      const snapshots = yield* SnapshotStore
      const snapshot = yield* snapshots.load(stream).pipe(Effect.orElseSucceed(() => Option.none()))
      if (Option.isSome(snapshot) && snapshot.value.stateVersion === agg.stateVersion && Number.isSafeInteger(snapshot.value.version)) {
        const decoded = Schema.decodeUnknownEither(agg.stateSchema)(snapshot.value.state)
        if (Either.isRight(decoded)) {
          state = decoded.right
          version = snapshot.value.version
        }
      }
    }
    const fromSnapshot = version
    const typed = typedStore(store, agg.contract, Option.getOrUndefined(yield* Effect.serviceOption(KeyStore)))
    const folded = yield* Stream.runFold(
      typed.read(entityId, { from: version + 1 }),
      { state, version },
      (acc, recorded) => ({ state: agg.evolve(acc.state, recorded.event), version: recorded.version })
    )
    // a snapshot never names a version beyond the stream; if one does (a store restored
    // from an older backup, say), it is not trusted
    if (fromSnapshot > 0 && folded.version === fromSnapshot) {
      const tail = yield* Stream.runCollect(store.read(stream, { direction: "backward", limit: 1 }))
      const last = Option.getOrUndefined(Option.map(Option.fromIterable(tail), (r) => r.version)) ?? 0
      if (last < fromSnapshot) return yield* load({ ...agg, snapshotEvery: undefined }, entityId)
    }
    return { ...folded, fromSnapshot }
  }).pipe(Effect.withSpan("Aggregate.load", { attributes: { aggregate: agg.contract.name, entityId } }))

/**
 * @since 0.1.0
 * @category models
 */
export interface HandleOptions {
  /** The command's id: the events' ids derive from it, so a command sent twice writes once. */
  readonly commandId?: string | undefined
  /** When another writer got there first (WrongExpectedVersion): reload and decide again. Default 3 retries. */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
}

/**
 * What a handled command did.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handled<A, S> {
  /** The events appended (empty when the command changed nothing). */
  readonly events: ReadonlyArray<A>
  /** The stream's version after the command. */
  readonly version: number
  readonly state: S
  /** True when the command had been applied before (same `commandId`) and nothing was written now. */
  readonly replayed: boolean
}

/**
 * Loads the aggregate, decodes and decides the command, and appends the events with the
 * loaded version as expected version. When another writer appended in between, it
 * reloads and decides again under `retry`. Domain errors stay typed.
 *
 * @since 0.1.0
 * @category commands
 */
export const handle = <C extends Contract.Any, S, SI, Cmd, CmdI, E, R>(
  agg: Aggregate<C, S, SI, Cmd, CmdI, E, R>,
  entityId: string,
  command: CmdI,
  options: HandleOptions = {}
): Effect.Effect<
  Handled<Contract.Event<C>, S>,
  E | InvalidCommand | AppendError | LoadError | PersonalDataError | KeyStoreError,
  EventStore | SnapshotStore | R
> =>
  Effect.gen(function*() {
    yield* checkContract(agg)
    const decoded = Schema.decodeUnknownEither(agg.command)(command)
    if (Either.isLeft(decoded)) {
      // a command of an aggregate with personal data may carry it: then the paths only
      const reason = hasAnyPersonal(agg.contract)
        ? `does not match the command's schema at ${Contract.pathsOf(decoded.left).join(", ") || "(root)"}`
        : decoded.left.message
      return yield* new InvalidCommand({ aggregate: agg.contract.name, reason })
    }
    const commandId: unknown = options.commandId
    if (commandId !== undefined && (typeof commandId !== "string" || commandId.length === 0 || commandId.length > 256 || !isWellFormed(commandId))) {
      return yield* new InvalidArgument({ argument: "commandId", reason: "a well-formed string of 1 to 256 characters" })
    }
    const store = yield* EventStore
    const typed = typedStore(store, agg.contract, Option.getOrUndefined(yield* Effect.serviceOption(KeyStore)))
    const stream = streamOf(agg, entityId)
    const attempt = Effect.gen(function*() {
      const loaded = yield* load(agg, entityId)
      const events = yield* agg.decide(decoded.right, loaded.state)
      if (events.length === 0) {
        return { events, version: loaded.version, state: loaded.state, replayed: false } as Handled<Contract.Event<C>, S>
      }
      const eventIds = options.commandId === undefined ? undefined : events.map((_, i) => uuidv5(JSON.stringify([options.commandId, stream, i])))
      const result = yield* typed.append(entityId, events, { expectedVersion: loaded.version, eventIds })
      if (result.replayed) {
        return { events, version: loaded.version, state: loaded.state, replayed: true } as Handled<Contract.Event<C>, S>
      }
      const state = events.reduce(agg.evolve, loaded.state)
      yield* maybeSnapshot(agg, stream, loaded.version, result.lastVersion, state)
      return { events, version: result.lastVersion, state, replayed: false } as Handled<Contract.Event<C>, S>
    })
    return yield* Effect.retry(attempt, {
      schedule: options.retry ?? Schedule.recurs(3),
      while: (e) => (e as { _tag?: unknown })._tag === "WrongExpectedVersion"
    })
  }).pipe(Effect.withSpan("Aggregate.handle", { attributes: { aggregate: agg.contract.name, entityId } }))

/** After a successful append that crossed a multiple of `snapshotEvery`, store a snapshot; failures are logged, never fatal. */
const maybeSnapshot = <S, SI>(
  agg: { readonly contract: Contract.Any; readonly snapshotEvery?: number | undefined; readonly stateSchema?: Schema.Schema<S, SI> | undefined; readonly stateVersion: number },
  stream: string,
  before: number,
  after: number,
  state: S
) =>
  Effect.gen(function*() {
    const every = agg.snapshotEvery
    if (every === undefined || agg.stateSchema === undefined || every < 1 || hasAnyPersonal(agg.contract)) return
    if (Math.floor(before / every) === Math.floor(after / every)) return
    const encoded = Schema.encodeEither(agg.stateSchema)(state)
    if (Either.isLeft(encoded)) return yield* Effect.logWarning(`snapshot of ${stream} skipped: the state does not encode: ${encoded.left.message}`)
    const snapshots = yield* SnapshotStore
    yield* snapshots.save(stream, { version: after, stateVersion: agg.stateVersion, state: encoded.right }).pipe(
      Effect.catchAll((e) => Effect.logWarning(`snapshot of ${stream} at version ${after} not stored: ${e.message}`))
    )
  })
