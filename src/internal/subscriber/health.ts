/**
 * The health of the subscribers running in this process, for `Subscriber.status`: which
 * of their background loops are failing now, since when, and why.
 *
 * @internal
 */
import { Effect } from "effect"
import { globalValue } from "effect/GlobalValue"
import type { LoopHealth, Resilience } from "./resilience.js"
import type { EngineState } from "./state.js"

/** One partition this member owns, as its engine sees it. */
export interface OwnedPartition {
  readonly partition: number
  /** The epoch of the lease it is held under. */
  readonly epoch: number
  /** `claiming` its pending list, `active` (reading new entries), `revoking` (being handed over). */
  readonly phase: "claiming" | "active" | "revoking" | "released" | "lost"
  /** A read or claim page of it is under way. */
  readonly reading: boolean
  /** While claiming: where its next claim page starts (`redelivery:0-0` for the first). */
  readonly claimFrom: string | undefined
  /** Its deliveries dispatched and not settled. */
  readonly inFlight: number
  /** Its handled deliveries waiting for their acknowledgement, the call under way included. */
  readonly toAcknowledge: number
}

/** What the reader of a subscriber is doing, and since when (epoch milliseconds). */
export interface ReaderActivity {
  /**
   * `starting` (not reading yet: waiting for a first heartbeat to succeed),
   * `reading` (reads or claims under way), `waiting` (a wait for new entries),
   * `polling` (drained partitions looked at again shortly), `full` (as many events in
   * flight as allowed), `idle` (nothing to read), `backoff` (after a failure), `stopped`.
   */
  readonly activity: "starting" | "reading" | "waiting" | "polling" | "full" | "idle" | "backoff" | "stopped"
  readonly since: number
}

export interface ConsumerHealth {
  readonly member: string
  /** Partitions this member owns now. */
  readonly partitions: ReadonlyArray<number>
  /** The same partitions with their state in this member's engine. */
  readonly owned: ReadonlyArray<OwnedPartition>
  /** What this member's reader is doing. */
  readonly reader: ReaderActivity
  /** Events dispatched and not yet settled. */
  readonly inFlight: number
  /** Loops failing now (empty when all is well). */
  readonly failing: ReadonlyArray<LoopHealth>
  readonly stopping: boolean
}

const running = globalValue(Symbol.for("effect-chronicle/Subscriber/running"), () => new Map<string, Map<string, () => ConsumerHealth>>())

/** Lists a running subscriber for the scope's lifetime. */
export const register = (state: EngineState, resilience: Resilience) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const group = state.config.group
      let members = running.get(group)
      if (members === undefined) running.set(group, (members = new Map()))
      members.set(state.member, () => ({
        member: state.member,
        partitions: Array.from(state.owned.keys()).sort((a, b) => a - b),
        owned: Array.from(state.owned.values(), (st) => ({
          partition: st.partition,
          epoch: st.epoch,
          phase: st.phase,
          reading: st.busy,
          claimFrom: st.phase === "claiming" && st.claim !== undefined ? `${st.claim.source}:${st.claim.id}` : undefined,
          inFlight: st.inFlight,
          toAcknowledge: st.acks.length + (st.sending?.length ?? 0)
        })).sort((a, b) => a.partition - b.partition),
        reader: state.reader,
        inFlight: state.total,
        failing: resilience.health(),
        stopping: state.stopping
      }))
    }),
    () =>
      Effect.sync(() => {
        const members = running.get(state.config.group)
        members?.delete(state.member)
        if (members?.size === 0) running.delete(state.config.group)
      })
  )

/** The subscribers of `group` running in this process. */
export const local = (group: string): ReadonlyArray<ConsumerHealth> =>
  Array.from(running.get(group)?.values() ?? [], (f) => f())
