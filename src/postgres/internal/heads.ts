/**
 * Following partitions for live reads: one poller per followed category reads the heads
 * of its partitions (one small query) with an adaptive sleep, from `min` after a change up
 * to `max` (doubling while nothing moves), and wakes the readers of the partitions that
 * moved. Appends made by this process wake their readers at once, without waiting for a
 * poll. Nothing depends on LISTEN/NOTIFY.
 *
 * A wake-up only says "read again": readers read by cursor or version, so a wake-up that
 * is late costs latency, one that is spurious a read, and none loses an event. The first
 * poll of a category wakes every reader (nothing is known yet).
 *
 * @internal
 */
import type { PgClient } from "@effect/sql-pg/PgClient"
import { Clock, Duration, Effect, Fiber, type Scope } from "effect"
import { makeRun } from "./deadline.js"
import { headsQuery } from "./schema.js"

export interface Watch {
  /** Opened when a followed partition may have moved; the reader closes it before it reads. */
  readonly latch: Effect.Latch
  /** The partition's head as last seen (a lower bound of the real one), or undefined when not known yet. */
  readonly head: (partition: number) => number | undefined
}

export interface Heads {
  /**
   * Follows partitions of a category for the scope's lifetime: all of them, or those
   * listed; with `entityId`, this process's own appends wake the watch only for that
   * entity (other processes' appends wake it for any move of its partitions).
   */
  readonly watch: (category: string, partitions: ReadonlyArray<number> | undefined, entityId: string | undefined) => Effect.Effect<Watch, never, Scope.Scope>
  /** An append of this process wrote positions `first..last` of a partition. */
  readonly appended: (category: string, partition: number, first: number, last: number, entityId: string) => void
}

interface Watcher {
  readonly partitions: ReadonlySet<number> | undefined
  readonly entityId: string | undefined
  readonly latch: Effect.Latch
}

interface Followed {
  readonly watchers: Set<Watcher>
  /** Heads as last seen, by partition. */
  readonly last: Map<number, number>
  fiber: Fiber.RuntimeFiber<never> | undefined
}

export interface PollOptions {
  readonly min: Duration.Duration
  readonly max: Duration.Duration
  /** The longest a poll waits for its reply (then it counts as a failed poll). */
  readonly timeout: Duration.Duration
}

export const makeHeads = (sql: PgClient, schema: string, options: PollOptions): Effect.Effect<Heads, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const followed = new Map<string, Followed>()
    const pollSql = headsQuery(schema)
    const run = makeRun(sql, options.timeout, "background")
    // the poller's pace is the store's business: a test clock in the reader's fiber must not stop it
    const wallClock = Clock.make()
    const minMs = Duration.toMillis(options.min)
    const maxMs = Duration.toMillis(options.max)

    const poll = (category: string, f: Followed) =>
      Effect.gen(function*() {
        let delay = minMs
        for (;;) {
          // not interruptible (a poll is short, and bounded by its deadline): the driver's own
          // interruption, where it is all there is, sends pg_cancel_backend for the
          // connection, which can reach the server after the poll ended and cancel whatever
          // statement runs on that connection next (someone else's)
          const result = yield* Effect.either(Effect.uninterruptible(run("poll", pollSql, [category])))
          if (result._tag === "Right") {
            const moved = new Set<number>()
            for (const row of result.right) {
              const p = Number(row[0])
              const head = Number(row[1])
              const was = f.last.get(p)
              if (was === undefined || head > was) {
                f.last.set(p, head)
                moved.add(p)
              }
            }
            if (moved.size > 0) {
              for (const w of f.watchers) {
                if (w.partitions === undefined || [...w.partitions].some((p) => moved.has(p))) w.latch.unsafeOpen()
              }
              delay = minMs
            } else {
              delay = Math.min(maxMs, delay * 2)
            }
          } else {
            // readers see the failure on their own next read; the poller waits and tries again
            yield* Effect.logDebug("effect-chronicle: polling partition heads failed", result.left)
            delay = maxMs
          }
          yield* Effect.withClock(Effect.sleep(Duration.millis(delay)), wallClock)
        }
      })

    const watch: Heads["watch"] = (category, partitions, entityId) =>
      Effect.acquireRelease(
        Effect.gen(function*() {
          let f = followed.get(category)
          if (f === undefined) {
            f = { watchers: new Set(), last: new Map(), fiber: undefined }
            followed.set(category, f)
          }
          const w: Watcher = { partitions: partitions === undefined ? undefined : new Set(partitions), entityId, latch: yield* Effect.makeLatch(false) }
          f.watchers.add(w)
          // forked from an uninterruptible region (acquire): made interruptible, or it could never be stopped
          if (f.fiber === undefined) f.fiber = yield* Effect.forkIn(Effect.interruptible(poll(category, f)), scope)
          return { f, w }
        }),
        ({ f, w }) =>
          Effect.suspend(() => {
            f.watchers.delete(w)
            if (f.watchers.size > 0) return Effect.void
            if (followed.get(category) === f) followed.delete(category)
            const fiber = f.fiber
            f.fiber = undefined
            return fiber === undefined ? Effect.void : Fiber.interruptFork(fiber)
          })
      ).pipe(Effect.map(({ f, w }): Watch => ({ latch: w.latch, head: (p) => f.last.get(p) })))

    const appended: Heads["appended"] = (category, partition, first, last, entityId) => {
      const f = followed.get(category)
      if (f === undefined) return
      // advanced only when nothing lies between: a gap is another process's, for the poller to see
      if (f.last.get(partition) === first - 1) f.last.set(partition, last)
      for (const w of f.watchers) {
        if ((w.partitions === undefined || w.partitions.has(partition)) && (w.entityId === undefined || w.entityId === entityId)) w.latch.unsafeOpen()
      }
    }

    return { watch, appended }
  })
