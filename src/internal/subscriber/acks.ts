/**
 * Acknowledgements, batched per partition: handled deliveries gather while one ack call
 * of their partition is under way, and go together in the next. An ack that fails for a
 * passing reason is retried with the same entries (acknowledging twice is harmless) until
 * it succeeds or the lease is gone: a handled entry is never forgotten unacknowledged.
 *
 * @internal
 */
import { Effect, Either, Metric, type Scope } from "effect"
import type { Delivery } from "../../ConsumerGroups.js"
import { checkIdle, isHeld, type PartitionState } from "./partition.js"
import type { Resilience } from "./resilience.js"
import type { EngineState } from "./state.js"

export interface Acks {
  /** Queues a handled delivery of `st` for acknowledgement. */
  readonly acknowledge: (st: PartitionState, d: Delivery) => void
  /** Runs until interrupted, sending what is queued. */
  readonly run: (scope: Scope.Scope) => Effect.Effect<never>
}

export const makeAcks = (
  state: EngineState,
  resilience: Resilience,
  markLost: (st: PartitionState) => Effect.Effect<void>
): Acks => {
  const waiting = new Set<PartitionState>()
  const signal = Effect.unsafeMakeLatch(false)
  const { groups, metrics } = state

  const flush = (st: PartitionState): Effect.Effect<void> =>
    Effect.gen(function*() {
      while (st.acks.length > 0 && isHeld(st)) {
        const batch = st.acks
        st.acks = []
        st.sending = batch
        const result = yield* Effect.either(resilience.retrying("acknowledge", groups.ack(st.lease, batch), () => isHeld(st)))
        st.sending = undefined
        if (Either.isRight(result)) {
          st.finished += batch.length
          yield* Metric.incrementBy(metrics.delivered, batch.length)
        } else if (result.left._tag === "LeaseLost") {
          yield* markLost(st)
        } else {
          // given up (the subscriber is ending) or no longer held: these stay pending
          break
        }
      }
    }).pipe(Effect.ensuring(Effect.sync(() => {
      st.acking = false
      st.sending = undefined
      if (!isHeld(st)) st.acks = []
      checkIdle(st)
      if (st.acks.length > 0) {
        waiting.add(st)
        signal.unsafeOpen()
      }
    })))

  return {
    acknowledge: (st, d) => {
      st.acks.push(d)
      if (!st.acking && !waiting.has(st)) {
        waiting.add(st)
        signal.unsafeOpen()
      }
    },
    run: (scope) =>
      Effect.forever(Effect.gen(function*() {
        signal.unsafeClose()
        if (waiting.size === 0) yield* signal.await
        const sts = Array.from(waiting)
        waiting.clear()
        for (const st of sts) {
          if (st.acking || st.acks.length === 0) continue
          st.acking = true
          yield* Effect.forkIn(Effect.interruptible(resilience.supervised("acknowledgements", flush(st))), scope)
        }
      }))
  }
}
