/**
 * The state of one owned partition (docs/semantics.md §5), and the rules that read it.
 *
 *   claiming ──(pending list taken whole)──▶ active ──(assigned elsewhere, or shutdown)──▶ revoking ──▶ released
 *       │                                      │                                              │
 *       └──────────────(LeaseLost)─────────────┴─────────────────(LeaseLost)──────────────────┴──▶ lost
 *
 * A read whose reply may have been lost sends an active partition back to claiming, so
 * that what the read delivered is taken from the pending list instead of stranded there.
 *
 * @internal
 */
import { Effect } from "effect"
import type { ClaimCursor, Delivery, Lease, Tail } from "../../ConsumerGroups.js"
import { claimStart, epochOf } from "../../ConsumerGroups.js"

export type Phase = "claiming" | "active" | "revoking" | "released" | "lost"

export interface PartitionState {
  readonly partition: number
  readonly lease: Lease
  readonly epoch: number
  phase: Phase
  /**
   * Monotonic milliseconds: no handler of this partition starts at or after it. The send
   * time of the last successful renewal (or of the acquire) + leaseTtl − margin.
   */
  deadline: number
  /** While claiming: where the next page of the pending list starts. */
  claim: ClaimCursor | undefined
  /** While active: whether the partition may have unread entries. */
  readable: boolean
  /** Where its sources ended at the last read that took everything (what a wait starts after). */
  tail: Tail | undefined
  /** When (monotonic ms) the partition was last found drained. */
  drainedAt: number
  /** A read or claim of this partition is under way. */
  busy: boolean
  /** Deliveries dispatched and not settled (queued or running). */
  inFlight: number
  /**
   * While the partition claims its pending list again (after a read whose reply may have
   * been lost): the deliveries this member already has in hand, which the claim skips.
   * Computed once when the claim starts; nothing is tracked per delivery otherwise.
   */
  inHand: Set<string> | undefined
  /** Handled deliveries waiting for their acknowledgement. */
  acks: Array<Delivery>
  /** The acknowledgement call under way, if any. */
  sending: ReadonlyArray<Delivery> | undefined
  /** An acknowledgement call is under way. */
  acking: boolean
  /**
   * Deliveries the backend has taken off this member's pending list so far at its
   * request (acknowledged or dead-lettered, the reply back): what a read's pending count
   * is compared with (see `stranded`).
   */
  finished: number
  /** Opened whenever the partition has nothing in flight and nothing left to acknowledge. */
  readonly idle: Effect.Latch
}

export const make = (lease: Lease, deadline: number): PartitionState => ({
  partition: lease.partition,
  lease,
  epoch: epochOf(lease),
  phase: "claiming",
  deadline,
  claim: claimStart,
  readable: false,
  tail: undefined,
  drainedAt: 0,
  busy: false,
  inFlight: 0,
  inHand: undefined,
  acks: [],
  sending: undefined,
  acking: false,
  finished: 0,
  idle: Effect.unsafeMakeLatch(true)
})

/** The key a delivery is tracked by. */
export const trackKey = (d: Delivery): string => (d.source === "log" ? d.id : `r:${d.id}`)

/** Whether a handler of this partition may start at `now`. */
export const canStart = (st: PartitionState, now: number): boolean =>
  (st.phase === "active" || st.phase === "claiming") && now < st.deadline

/** Whether the partition still holds work of its own (not revoked, not lost). */
export const isLive = (st: PartitionState): boolean => st.phase === "active" || st.phase === "claiming"

/** Whether the lease is still held as far as this member knows. */
export const isHeld = (st: PartitionState): boolean => st.phase !== "lost" && st.phase !== "released"

/** After a renewal sent at `sentAt` succeeded. */
export const renewed = (st: PartitionState, sentAt: number, leaseTtl: number, margin: number): void => {
  const next = sentAt + leaseTtl - margin
  if (next > st.deadline) st.deadline = next
}

/**
 * Back to claiming: a read's reply may have been lost after it moved entries to this
 * member. `inHand` is what the member already has (in its lanes or waiting for an ack).
 */
export const reclaim = (st: PartitionState, inHand: Set<string>): void => {
  if (st.phase !== "active" && st.phase !== "claiming") return
  st.phase = "claiming"
  st.claim = claimStart
  st.readable = false
  st.tail = undefined
  st.inHand = inHand
}

/**
 * How many entries pending for this member, by a read's count taken at the server, the
 * member does not have in hand: 0 unless some were left behind (an acknowledgement the
 * server lost, in a failover without durability). `finishedAtSend` is `finished` when the
 * read was sent: what was acknowledged or dead-lettered since may still have been pending
 * when the read ran, so it counts as in hand (an error on the safe side: a stranded entry
 * is then found by a later read).
 */
export const stranded = (st: PartitionState, pending: number | undefined, finishedAtSend: number): number => {
  if (pending === undefined || st.phase !== "active") return 0
  const held = st.inFlight + st.acks.length + (st.sending?.length ?? 0) + (st.finished - finishedAtSend)
  return Math.max(0, pending - held)
}

/** Updates the idle latch after a change of in-flight work or acknowledgements. */
export const checkIdle = (st: PartitionState): void => {
  if (st.inFlight === 0 && st.acks.length === 0 && !st.acking) st.idle.unsafeOpen()
  else st.idle.unsafeClose()
}
