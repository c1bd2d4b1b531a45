/**
 * Membership and leases (docs/semantics.md §5): the heartbeat renews this member and every lease
 * it holds, computes the sticky assignment, acquires what is now its own and hands over
 * what is not. A hand-over starts no new handler, waits for the running ones at most
 * `revokeTimeout`, then interrupts them unacknowledged (their entries stay pending for
 * the next owner) and releases the lease. Shutdown is a hand-over of everything, bounded
 * by `shutdownTimeout`.
 *
 * @internal
 */
import { Duration, Effect, Either, Fiber, Option, type Scope } from "effect"
import type { Lanes } from "./lanes.js"
import { assign } from "./assignment.js"
import { isHeld, isLive, make as makePartition, type PartitionState, renewed } from "./partition.js"
import type { Resilience } from "./resilience.js"
import { type EngineState, nowOf } from "./state.js"

export interface Ownership {
  /** One heartbeat: renewals, membership, assignment, acquisitions and hand-overs. */
  readonly beat: Effect.Effect<void, unknown>
  /** The lease is gone: stop the partition at once (its work stays pending for the next owner). */
  readonly markLost: (st: PartitionState) => Effect.Effect<void>
  /** Hands every partition over (bounded by `shutdownTimeout`) and leaves the group. */
  readonly shutdown: Effect.Effect<void>
}

export const makeOwnership = (
  state: EngineState,
  lanes: Lanes,
  resilience: Resilience,
  scope: Scope.Scope
): Ownership => {
  const { config, groups, info, member } = state
  const group = config.group
  const revoking = new Map<PartitionState, Fiber.RuntimeFiber<void>>()

  const markLost = (st: PartitionState): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (!isHeld(st)) return Effect.void
      const was = st.phase
      st.phase = "lost"
      st.acks = []
      lanes.drop(st)
      if (state.owned.get(st.partition) === st) state.owned.delete(st.partition)
      state.changed.unsafeOpen()
      return Effect.zipRight(
        lanes.interrupt(st),
        Effect.logWarning(`subscriber ${group}: lost the lease on partition ${st.partition} (${st.lease.token}) while ${was}; stopped it`)
      )
    })

  /** Hands a partition over: no new handler, running ones for at most `timeout`, then release. */
  const handOver = (st: PartitionState, timeout: number): Effect.Effect<void> =>
    Effect.gen(function*() {
      if (!isLive(st)) return
      st.phase = "revoking"
      lanes.drop(st)
      state.changed.unsafeOpen()
      const drained = yield* st.idle.await.pipe(Effect.timeout(Duration.millis(timeout)), Effect.option)
      if (Option.isNone(drained) && isHeld(st)) {
        const n = yield* lanes.interrupt(st)
        yield* Effect.logWarning(`subscriber ${group}: partition ${st.partition}: interrupted ${n} handler(s) still running after ${timeout} ms; their entries stay pending for the next owner`)
        // interrupted workers settle their deliveries as they stop; acks of what completed may still be on their way
        yield* st.idle.await.pipe(Effect.timeout(Duration.millis(Math.max(1000, config.heartbeat))), Effect.ignore)
      }
      if (!isHeld(st)) return
      yield* Effect.ignore(resilience.retrying("release", groups.release(st.lease), () => isHeld(st)).pipe(
        Effect.timeout(Duration.millis(config.leaseTtl))
      ))
      if (!isHeld(st)) return
      st.phase = "released"
      if (state.owned.get(st.partition) === st) state.owned.delete(st.partition)
      state.changed.unsafeOpen()
      yield* Effect.logDebug(`subscriber ${group}: released partition ${st.partition} (${st.lease.token})`)
    }).pipe(Effect.ensuring(Effect.sync(() => revoking.delete(st))))

  const startHandOver = (st: PartitionState, timeout: number) =>
    Effect.suspend(() => {
      if (revoking.has(st) || !isLive(st)) return Effect.void
      // interruptible: a shutdown forks hand-overs from a finalizer, whose fibers would
      // otherwise inherit its uninterruptibility (and a timeout could not stop what it waits on)
      return Effect.map(Effect.forkIn(Effect.interruptible(resilience.supervised("a hand-over", handOver(st, timeout))), scope), (fiber) => {
        revoking.set(st, fiber)
      })
    })

  const renewAll = Effect.suspend(() => {
    const held = Array.from(state.owned.values()).filter(isHeld)
    return Effect.forEach(held, (st) => {
      const sentAt = nowOf(state)
      return Effect.either(groups.renew(st.lease, config.leaseTtl)).pipe(
        Effect.flatMap((r): Effect.Effect<unknown, unknown> => {
          if (Either.isRight(r)) {
            renewed(st, sentAt, config.leaseTtl, config.margin)
            lanes.unpark(st)
            return Effect.void
          }
          return r.left._tag === "LeaseLost" ? markLost(st) : Effect.fail(r.left)
        })
      )
    }, { concurrency: "unbounded", discard: true })
  })

  const acquire = (p: number) =>
    Effect.suspend(() => {
      const sentAt = nowOf(state)
      return Effect.map(groups.acquire(info, p, member, config.leaseTtl), (lease) => {
        if (lease === undefined || state.stopping || state.owned.has(p)) return
        state.owned.set(p, makePartition(lease, sentAt + config.leaseTtl - config.margin))
        state.changed.unsafeOpen()
      })
    })

  const inFlight = () => new Map(Array.from(state.owned.values()).filter(isHeld).map((st) => [st.partition, st.inFlight] as const))

  const beat = Effect.gen(function*() {
    // renewals first: they are what keeps work going
    const renewal = yield* Effect.either(renewAll)
    if (state.stopping) {
      // draining: keep the leases, but never announce the membership again
      if (Either.isLeft(renewal)) return yield* Effect.fail(renewal.left)
      return
    }
    const membership = yield* groups.heartbeat(group, member, config.leaseTtl, inFlight())
    if (Either.isLeft(renewal)) return yield* Effect.fail(renewal.left)
    const members = membership.members.includes(member) ? membership.members : [...membership.members, member]
    const target = assign(members, info.partitions, membership.owners)
    const wanted: Array<number> = []
    for (let p = 0; p < info.partitions; p++) {
      const st = state.owned.get(p)
      if (st !== undefined) {
        if (target[p] !== member && isLive(st)) yield* startHandOver(st, config.revokeTimeout)
      } else if (target[p] === member && membership.owners[p] === undefined) {
        wanted.push(p)
      }
    }
    yield* Effect.forEach(wanted, acquire, { concurrency: "unbounded", discard: true })
  })

  const shutdown = Effect.gen(function*() {
    state.stopping = true
    state.changed.unsafeOpen()
    for (const st of Array.from(state.owned.values())) {
      const running = revoking.get(st)
      if (running !== undefined) continue
      if (isLive(st)) yield* startHandOver(st, config.shutdownTimeout)
    }
    yield* Fiber.joinAll(Array.from(revoking.values())).pipe(
      Effect.timeout(Duration.millis(config.shutdownTimeout + config.leaseTtl)),
      Effect.ignore
    )
    yield* groups.leave(group, member).pipe(Effect.ignore)
  })

  return { beat, markLost, shutdown }
}
