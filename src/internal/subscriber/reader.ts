/**
 * Reading (docs/semantics.md §5): for each owned partition, first its pending list, claimed page
 * by page, then new entries by fenced reads. Each partition's next read goes as soon as
 * its last one is back and there is room, so pages arrive while the workers still have
 * work (no round waits for its slowest partition). In flight never exceeds 2 × readCount:
 * reads start once in flight (dispatched, plus asked for and not yet back) falls below
 * `refill` and ask for what is left of the window, shared among the partitions to read.
 *
 * A drained partition (its last read took everything) is read again when something
 * arrives: while every partition is drained, one wait, whose fenced reads run as soon as
 * it ends (on one server they are queued behind the blocking read on the same
 * connection, so waking up costs no round trip), cut short by any local change; while
 * others are busy, at most every few milliseconds. A wait interrupted at shutdown may
 * have had its reads run: what they took stays pending for the partitions' next owner.
 *
 * A read or claim that fails for a passing reason may still have moved entries to this
 * member (its reply was lost): the partition claims its pending list again, so those
 * entries are handled, in order, instead of stranded. So does a partition whose read says
 * (where the backend counts it in the same step) that more entries are pending for this
 * member than it has in hand: an acknowledgement lost in a failover without durability
 * leaves an entry pending on the server that the member has no record of.
 *
 * @internal
 */
import { Effect, Either } from "effect"
import { type ClaimPage, type Delivery, LeaseLost, type ReadResult, type Watch } from "../../ConsumerGroups.js"
import { isRetryable } from "../../EventStore.js"
import type { Lanes } from "./lanes.js"
import { type PartitionState, reclaim, stranded } from "./partition.js"
import type { Resilience } from "./resilience.js"
import { type EngineState, nowOf } from "./state.js"

type Task =
  | { readonly _tag: "claim"; readonly st: PartitionState }
  | { readonly _tag: "read"; readonly st: PartitionState }

/** How often a drained partition is read again while other partitions keep the reader busy. */
export const POLL_DRAINED_MS = 5

/**
 * What to do next, from the owned partitions and the room left: pure.
 * `inFlight` counts deliveries dispatched and entries asked for and not yet back.
 */
export const plan = (
  owned: Iterable<PartitionState>,
  inFlight: number,
  readCount: number,
  refill: number,
  now: number
): {
  readonly tasks: ReadonlyArray<Task>
  readonly count: number
  readonly watches: ReadonlyArray<PartitionState>
  /** Reads or claims are under way (the reader waits for them, not on the server). */
  readonly busy: boolean
  /** Drained partitions wait to be looked at again while the reader is busy. */
  readonly polling: boolean
} => {
  const tasks: Array<Task> = []
  const drained: Array<PartitionState> = []
  let busy = false
  for (const st of owned) {
    if (st.busy) {
      busy = true
      continue
    }
    if (st.phase === "claiming" && st.claim !== undefined) tasks.push({ _tag: "claim", st })
    else if (st.phase === "active" && st.readable) tasks.push({ _tag: "read", st })
    else if (st.phase === "active" && st.tail !== undefined) drained.push(st)
  }
  if (inFlight >= refill) return { tasks: [], count: 0, watches: [], busy: true, polling: false }
  // the reader is busy anyway: look at drained partitions now and then instead of waiting
  if (tasks.length > 0 || busy) {
    for (const st of drained) if (now - st.drainedAt >= POLL_DRAINED_MS) tasks.push({ _tag: "read", st })
  }
  const room = 2 * readCount - inFlight
  const count = tasks.length === 0 ? 0 : Math.max(1, Math.min(readCount, Math.floor(room / tasks.length)))
  const active = busy || tasks.length > 0
  return { tasks, count, watches: active ? [] : drained, busy: active, polling: active && drained.length > tasks.filter((t) => t.st.tail !== undefined).length }
}

export const makeReader = (
  state: EngineState,
  lanes: Lanes,
  resilience: Resilience,
  markLost: (st: PartitionState) => Effect.Effect<void>
): Effect.Effect<void> => {
  const { config, groups, member } = state
  let requested = 0

  /** Says what the reader does from now on (`Subscriber.status` shows it). */
  const doing = (activity: EngineState["reader"]["activity"]) => {
    if (state.reader.activity !== activity) state.reader = { activity, since: Date.now() }
  }

  const deliver = (st: PartitionState, deliveries: ReadonlyArray<Delivery>) => {
    // entries read for a partition being handed over (or lost) stay pending for its next owner
    if (st.phase === "active" || st.phase === "claiming") lanes.dispatch(st, deliveries)
  }

  const claimed = (st: PartitionState, page: ClaimPage) => {
    deliver(st, page.deliveries)
    if (st.phase !== "claiming") return
    st.claim = page.next
    if (page.next === undefined) {
      st.phase = "active"
      st.readable = true
      st.inHand = undefined
    }
  }

  /** A read's entries taken in; `finishedAtSend` is the partition's `finished` when the read was sent. */
  const read = (st: PartitionState, result: ReadResult, finishedAtSend: number): Effect.Effect<void> => {
    deliver(st, result.deliveries)
    if (st.phase !== "active") return Effect.void
    st.readable = result.tail === undefined
    st.tail = result.tail
    if (result.tail !== undefined) st.drainedAt = nowOf(state)
    // entries pending for this member that it does not hold are taken again (in order, by
    // a claim that skips what it holds), or nothing would ever handle them
    const missing = stranded(st, result.pending, finishedAtSend)
    if (missing === 0) return Effect.void
    reclaim(st, lanes.inHand(st))
    return Effect.logWarning(
      `subscriber ${config.group}: partition ${st.partition}: ${missing} entr${missing === 1 ? "y" : "ies"} pending for this member that it does not hold (an acknowledgement the server lost?); taking its pending list again`
    )
  }

  /** One read or claim page, in a fiber of its own; the reader hears when it is back. */
  const runTask = (task: Task, count: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      const st = task.st
      const loop = task._tag === "read" ? "reads" : "claims"
      const finishedAtSend = st.finished
      const call = task._tag === "claim"
        ? Effect.map(groups.claim(st.lease, member, st.claim!, count), (page) => claimed(st, page))
        : Effect.flatMap(groups.read(st.lease, member, count), (result) => read(st, result, finishedAtSend))
      return Effect.either(call).pipe(
        Effect.flatMap((r): Effect.Effect<unknown> => {
          requested -= count
          if (Either.isRight(r)) return resilience.succeeded(loop)
          if (r.left._tag === "LeaseLost") return markLost(st)
          // a reply lost on the way (a passing failure) may have moved entries to this
          // member: take them back from the pending list
          if (task._tag === "read" && isRetryable(r.left)) reclaim(st, lanes.inHand(st))
          // the partition waits out the backoff (the others go on)
          return resilience.failed(loop, r.left)
        }),
        Effect.ensuring(Effect.sync(() => {
          st.busy = false
          state.changed.unsafeOpen()
        }))
      )
    })

  /**
   * One wait over the drained partitions, with the fenced reads of what arrives taken in
   * the same step; cut short by any local change (its reads' entries are still taken in).
   */
  const waitFor = (sts: ReadonlyArray<PartitionState>) => {
    const watches: Array<Watch> = sts.map((st) => ({ lease: st.lease, tail: st.tail! }))
    const finishedAtSend = sts.map((st) => st.finished)
    const room = 2 * config.readCount - state.total
    const count = Math.max(1, Math.min(config.readCount, Math.floor(room / sts.length)))
    return Effect.either(groups.wait(member, watches, { blockMillis: config.maxWait, count, until: state.changed.await })).pipe(
      Effect.flatMap((r): Effect.Effect<unknown> => {
        if (Either.isLeft(r)) {
          // whatever the failure, the wait's reads may have run (or may still run): the
          // partitions take their pending lists again (a claim also fences those reads off)
          for (const st of sts) reclaim(st, lanes.inHand(st))
          doing("backoff")
          return resilience.failed("waits", r.left)
        }
        if (r.right.length === 0) {
          // nothing arrived within the wait: each partition is read once anyway. A wait
          // looks for entries after the tails the member last saw; should the group's own
          // position fall behind them (a failover that lost the last reads, a restart
          // that replayed an older AOF), only a read finds what is undelivered before them
          for (const st of sts) if (st.phase === "active") st.readable = true
          return resilience.succeeded("waits")
        }
        let dispatched = false
        return Effect.forEach(r.right, ({ lease, result }) => {
          const i = sts.findIndex((x) => x.lease === lease)
          if (i < 0) return Effect.void
          const st = sts[i]!
          // a partition being handed over may see its lease released first: that is not a loss
          if (result instanceof LeaseLost) return st.phase === "active" ? markLost(st) : Effect.void
          dispatched ||= result.deliveries.length > 0
          return read(st, result, finishedAtSend[i]!)
        }, { discard: true }).pipe(
          Effect.zipRight(resilience.succeeded("waits")),
          // the workers just woken start their handlers before this fiber sends the next wait
          Effect.zipRight(Effect.suspend(() => (dispatched ? Effect.yieldNow() : Effect.void)))
        )
      })
    )
  }

  return Effect.gen(function*() {
    while (!state.stopping) {
      state.changed.unsafeClose()
      const next = plan(state.owned.values(), state.total + requested, config.readCount, config.refill, nowOf(state))
      for (const task of next.tasks) {
        task.st.busy = true
        requested += next.count
        yield* Effect.fork(resilience.supervised(task._tag === "read" ? "reads" : "claims", runTask(task, next.count)))
      }
      if (next.tasks.length > 0) continue
      if (next.watches.length > 0) {
        doing("waiting")
        yield* waitFor(next.watches)
      } else if (next.polling) {
        doing("polling")
        yield* Effect.raceFirst(state.changed.await, Effect.sleep(POLL_DRAINED_MS))
      } else {
        doing(next.busy ? (state.total + requested >= config.refill && requested === 0 ? "full" : "reading") : "idle")
        yield* state.changed.await
      }
    }
  }).pipe(Effect.ensuring(Effect.sync(() => doing("stopped"))))
}
