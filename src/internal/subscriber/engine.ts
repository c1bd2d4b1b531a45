/**
 * The consumer engine behind `Subscriber.run`, `Subscriber.layer` and `Subscriber.stream`:
 * the modules wired together over one explicit state.
 *
 *   ownership (heartbeat) ── acquires / renews / hands over ──▶ partitions
 *   reader ── claims, fenced reads, waits ──▶ lanes ──▶ workers (handle) ──▶ acks
 *
 * Shutdown (interruption, or the scope closing) stops the reader, hands every partition
 * over within `shutdownTimeout` (running handlers finish, what completed is acknowledged,
 * leases are released) while the heartbeat keeps the leases, then leaves the group.
 *
 * @internal
 */
import { Clock, Deferred, Effect, Either, ExecutionStrategy, Exit, Fiber, Metric, MetricLabel, Option, Schedule, Scope } from "effect"
import { ConsumerGroups, type GroupConflict, type GroupError } from "../../ConsumerGroups.js"
import type * as Contract from "../../Contract.js"
import { EventStore, type InvalidArgument, InvalidContract, isRetryable } from "../../EventStore.js"
import { uuidv7 } from "../ids.js"
import { KeyStore } from "../../PersonalData.js"
import { isTraced } from "../tracing.js"
import { makeAcks } from "./acks.js"
import { type EngineOptions, make as makeConfig } from "./config.js"
import type { HandlerContext } from "../../Subscriber.js"
import { makeRunners } from "./handle.js"
import { register } from "./health.js"
import { makeLanes } from "./lanes.js"
import { makeOwnership, type Ownership } from "./ownership.js"
import type { PartitionState } from "./partition.js"
import { makeReader } from "./reader.js"
import { makeResilience } from "./resilience.js"
import { makeState, type Metrics, nowOf } from "./state.js"

/** What a subscriber can fail with (at start, or when it cannot go on). */
export type EngineError = GroupError | GroupConflict | InvalidContract | InvalidArgument

export const deliveredCounter = Metric.counter("chronicle_subscriber_delivered", { description: "events handled and acknowledged" })
export const retriedCounter = Metric.counter("chronicle_subscriber_retried", { description: "handler invocations retried" })
export const deadLetteredCounter = Metric.counter("chronicle_subscriber_dead_lettered", { description: "events parked as dead letters" })
export const inFlightGauge = Metric.gauge("chronicle_subscriber_in_flight", { description: "events being handled" })

const metricsOf = (group: string, category: string): Metrics => {
  const labels = [MetricLabel.make("group", group), MetricLabel.make("category", category)]
  return {
    delivered: deliveredCounter.pipe(Metric.taggedWithLabels(labels)),
    retried: retriedCounter.pipe(Metric.taggedWithLabels(labels)),
    deadLettered: deadLetteredCounter.pipe(Metric.taggedWithLabels(labels)),
    inFlight: inFlightGauge.pipe(Metric.taggedWithLabels(labels))
  }
}

export const run = <E, R>(
  contract: Contract.Any,
  options: EngineOptions,
  handle: (event: any, ctx: HandlerContext) => Effect.Effect<unknown, E, R>
): Effect.Effect<never, EngineError, EventStore | ConsumerGroups | R> =>
  Effect.gen(function*() {
    if (contract.issues.length > 0) return yield* new InvalidContract({ contract: contract.name, issues: contract.issues })
    const config = yield* makeConfig(options)
    const groups = yield* ConsumerGroups
    const store = yield* EventStore
    // a store that is briefly away at start (a restart, a failover) is waited for
    let warned = false
    const info = yield* groups.ensureGroup(config.group, contract.name, config.startFrom).pipe(
      Effect.tapError((e) =>
        isRetryable(e) && !warned
          ? Effect.zipRight(Effect.sync(() => (warned = true)), Effect.logWarning(`subscriber ${config.group}: the store is not reachable yet, retrying: ${e.message}`))
          : Effect.void
      ),
      Effect.retry({ while: isRetryable, schedule: Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced("1 second"))) })
    )
    const clock = yield* Effect.clock
    const member = `${config.consumer}:${uuidv7(yield* Clock.currentTimeMillis)}`
    const traced = yield* isTraced
    const state = yield* makeState({ config, info, member, groups, store, clock, traced, metrics: metricsOf(config.group, contract.name) })
    const resilience = makeResilience(state)

    return yield* Effect.scoped(Effect.gen(function*() {
      const scope = yield* Effect.scope
      // workers, acknowledgements and hand-overs run in a scope of their own that outlives
      // the shutdown (which forks hand-overs and acknowledgements), closed right after it
      const background = yield* Scope.fork(scope, ExecutionStrategy.sequential)
      // the modules call each other through the ownership's markLost, made last
      let ownership: Ownership | undefined
      const markLost = (st: PartitionState) => Effect.suspend(() => ownership!.markLost(st))
      const acks = makeAcks(state, resilience, markLost)
      const keys = Option.getOrUndefined(yield* Effect.serviceOption(KeyStore))
      const lanes = yield* makeLanes(state, makeRunners({ state, contract, handle, resilience, markLost, acknowledge: acks.acknowledge, keys }), resilience.supervised)
      ownership = makeOwnership(state, lanes, resilience, background)
      const owner = ownership
      const reader = makeReader(state, lanes, resilience, markLost)
      yield* register(state, resilience)

      yield* lanes.start(background)
      yield* Effect.forkIn(resilience.supervised("acknowledgements", acks.run(background)), background)

      // the heartbeat keeps leases alive while shutdown hands over, so it is forked before
      // the shutdown finalizer is added (finalizers run in reverse order)
      const firstBeat = yield* Deferred.make<void, EngineError>()
      const heartbeatLoop = Effect.gen(function*() {
        // `first` holds until a beat succeeds (not only for the first attempt: a first beat
        // that fails for a passing reason, the store away at start, is retried, and the
        // reader starts at the first one that succeeds)
        for (let first = true;;) {
          const started = nowOf(state)
          const beat = yield* Effect.either(owner.beat)
          if (Either.isRight(beat)) {
            if (first) yield* Deferred.succeed(firstBeat, undefined)
            first = false
            yield* resilience.succeeded("heartbeat")
            yield* Metric.set(state.metrics.inFlight, state.total)
            yield* Effect.sleep(Math.max(0, config.heartbeat - (nowOf(state) - started)))
            continue
          }
          // a first heartbeat that cannot succeed (no permission, say) is a failure to start
          if (first && !isRetryable(beat.left)) return yield* Deferred.fail(firstBeat, beat.left as EngineError)
          if (yield* resilience.failed("heartbeat", beat.left)) return
        }
      })
      yield* Effect.forkIn(resilience.supervised("heartbeat", heartbeatLoop), scope)
      yield* Effect.addFinalizer(() =>
        ownership!.shutdown.pipe(
          Effect.zipRight(Scope.close(background, Exit.void)),
          Effect.zipRight(Effect.logDebug(`subscriber ${config.group}: ${member} stopped`))
        )
      )
      // a heartbeat loop that dies before its first beat ends the subscriber all the same
      yield* Effect.raceFirst(Deferred.await(firstBeat), Deferred.await(state.fatal) as Effect.Effect<never, EngineError>)
      const readerFiber = yield* Effect.forkIn(resilience.supervised("reader", reader), scope)
      yield* Effect.addFinalizer(() => Fiber.interrupt(readerFiber))
      return yield* (Deferred.await(state.fatal) as Effect.Effect<never, EngineError>)
    }))
  })

