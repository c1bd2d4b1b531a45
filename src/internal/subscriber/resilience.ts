/**
 * How a subscriber's background work survives failures (docs/semantics.md §5): a failure the
 * backend marks retryable (a dropped connection, a restart, a busy server) is retried
 * under an exponential schedule, for as long as the work is still wanted; any other
 * failure (a deleted group, a permission, a wrong key type) is retried a few times more
 * slowly, then ends the subscriber with that typed error. Each loop's change of state is
 * reported once (a log line, and the consumer's health in `Subscriber.status`), not each
 * attempt. `LeaseLost` is not a failure here: callers handle it.
 *
 * @internal
 */
import { Cause, Deferred, Duration, Effect, Either, Exit } from "effect"
import { isRetryable } from "../../EventStore.js"
import { messageOf } from "../util.js"
import type { EngineState } from "./state.js"

/** Delay before the n-th retry (1-based) of a passing failure: 20 ms doubling, at most 1 s. */
export const retryDelay = (attempt: number): number => Math.min(1000, 20 * 2 ** Math.min(attempt - 1, 10))

/** Delay before the n-th retry of a failure that should not pass: 1 s doubling. */
export const giveUpDelay = (attempt: number): number => 1000 * 2 ** (attempt - 1)

/** Failures of another kind than "passing" tolerated in a row before the subscriber ends. */
export const GIVE_UP_AFTER = 4

/** One background activity's health, as reported. */
export interface LoopHealth {
  readonly loop: string
  /** Consecutive failures. */
  readonly failures: number
  readonly since: number
  readonly error: string
  readonly retryable: boolean
  /** When the count last grew: failures of several partitions at once count as one. */
  readonly countedAt: number
}

export interface Resilience {
  /**
   * Runs `effect`, retrying its failures as described above while `wanted()` holds;
   * fails with the last error when it gives up (and then the subscriber is ending).
   */
  readonly retrying: <A, E>(loop: string, effect: Effect.Effect<A, E>, wanted?: () => boolean) => Effect.Effect<A, E>
  /**
   * For loops that manage their own attempts: report one failure and wait before the
   * next; true when it gave up (the subscriber is ending).
   */
  readonly failed: (loop: string, error: unknown) => Effect.Effect<boolean>
  /** For loops that manage their own attempts: report success (a recovery is logged once). */
  readonly succeeded: (loop: string) => Effect.Effect<void>
  /** Ends the subscriber with `error` (after the backoff that led here). */
  readonly fatal: (loop: string, error: unknown) => Effect.Effect<void>
  /** The loops failing now. */
  readonly health: () => ReadonlyArray<LoopHealth>
  /**
   * A background loop (or a step forked from one) that ends by a failure or a defect, not
   * an interruption, ends the subscriber with that cause: a member whose reader died
   * would otherwise go on renewing its leases and never read again.
   */
  readonly supervised: <A, E, R>(loop: string, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

const isLeaseLost = (e: unknown) => typeof e === "object" && e !== null && (e as { _tag?: unknown })._tag === "LeaseLost"

export const makeResilience = (state: EngineState): Resilience => {
  const group = state.config.group
  const failing = new Map<string, LoopHealth>()

  const fatal = (loop: string, error: unknown) =>
    Effect.zipRight(
      Effect.logError(`subscriber ${group}: ${loop} cannot go on, stopping: ${messageOf(error)}`),
      Deferred.fail(state.fatal, error)
    ).pipe(Effect.asVoid)

  const failed = (loop: string, error: unknown): Effect.Effect<boolean> =>
    Effect.suspend(() => {
      const retryable = isRetryable(error)
      const before = failing.get(loop)
      const now = Date.now()
      const delay = (n: number) => (retryable ? retryDelay(n) : giveUpDelay(n))
      // a change of kind starts the count again; failures within one backoff (several
      // partitions failing at once) count once
      const same = before !== undefined && before.retryable === retryable
      const failures = !same ? 1 : now - before.countedAt >= delay(before.failures) * 0.9 ? before.failures + 1 : before.failures
      const countedAt = same && failures === before.failures ? before.countedAt : now
      failing.set(loop, { loop, failures, since: before?.since ?? now, error: messageOf(error), retryable, countedAt })
      const log = before === undefined || before.retryable !== retryable
        ? (retryable
          ? Effect.logWarning(`subscriber ${group}: ${loop} failing, retrying: ${messageOf(error)}`)
          : Effect.logError(`subscriber ${group}: ${loop} failing (${messageOf(error)}); retrying ${GIVE_UP_AFTER - 1} more time(s) before stopping`))
        : Effect.void
      if (!retryable && failures >= GIVE_UP_AFTER) return Effect.as(Effect.zipRight(log, fatal(loop, error)), true)
      return Effect.as(Effect.zipRight(log, Effect.sleep(Duration.millis(delay(failures)))), false)
    })

  const succeeded = (loop: string): Effect.Effect<void> =>
    Effect.suspend(() => {
      const before = failing.get(loop)
      if (before === undefined) return Effect.void
      failing.delete(loop)
      return Effect.logInfo(`subscriber ${group}: ${loop} recovered after ${before.failures} failure(s)`)
    })

  const retrying = <A, E>(loop: string, effect: Effect.Effect<A, E>, wanted: () => boolean = () => true): Effect.Effect<A, E> =>
    Effect.gen(function*() {
      for (;;) {
        const result = yield* Effect.either(effect)
        if (Either.isRight(result)) {
          if (failing.size > 0) yield* succeeded(loop)
          return result.right
        }
        const e = result.left
        if (isLeaseLost(e) || !wanted()) return yield* Effect.fail(e)
        if (yield* failed(loop, e)) return yield* Effect.fail(e)
      }
    })

  const supervised = <A, E, R>(loop: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.onExit(effect, (exit) =>
      Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)
        ? Effect.void
        : Effect.zipRight(
          Effect.logError(`subscriber ${group}: ${loop} stopped unexpectedly; stopping the subscriber`, exit.cause),
          Deferred.failCause(state.fatal, exit.cause)
        ))

  return { retrying, failed, succeeded, fatal, health: () => Array.from(failing.values()), supervised }
}
