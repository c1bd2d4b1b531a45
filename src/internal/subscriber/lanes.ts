/**
 * Entity lanes and the worker pool (docs/semantics.md §5: one entity strictly in order,
 * different entities in parallel up to `concurrency`).
 *
 * Every delivery joins its entity's lane; a lane is taken by one worker at a time, which
 * runs its deliveries one after the other. There is no fiber per event: a fixed pool of
 * workers takes ready lanes, and a lane that becomes ready wakes one idle worker (not
 * all of them: a worker woken for nothing costs a step of its fiber). A lane whose partition has passed its local lease deadline
 * is parked (nothing of it starts) until a renewal extends the deadline or the partition
 * is lost. A worker running a handler of a partition that is lost, or whose hand-over
 * has timed out, is interrupted and replaced; its lane keeps what belongs to live
 * partitions.
 *
 * @internal
 */
import { Effect, Fiber, type Scope } from "effect"
import type { Delivery } from "../../ConsumerGroups.js"
import { canStart, checkIdle, isLive, type PartitionState, trackKey } from "./partition.js"
import { type EngineState, nowOf } from "./state.js"

export interface Lane {
  key: string
  /** The deliveries, and beside each the partition state it was dispatched under. */
  readonly items: Array<Delivery>
  readonly owners: Array<PartitionState>
  /** The next item to run. */
  head: number
  /** Waiting in `state.ready`. */
  queued: boolean
  /** Taken by a worker. */
  running: boolean
  /** Parked: waiting for this partition's lease to be renewed. */
  parkedOn: PartitionState | undefined
}

/** What became of one delivery: settled (acknowledged, dead-lettered or left pending), or parked. */
export type Step = "settled" | "park"

/**
 * The lane of a delivery: its entity (a subscriber reads one category, so the entity id
 * alone names the stream); an entry that cannot be read is a lane of its own.
 */
const entityKey = (d: Delivery): string => (d.event instanceof Error ? `\u0000${d.partition}:${d.source}:${d.id}` : d.event.entityId)

const takeReady = (state: EngineState): Lane | undefined => {
  if (state.readyHead >= state.ready.length) return undefined
  const lane = state.ready[state.readyHead]!
  state.ready[state.readyHead++] = undefined as unknown as Lane
  if (state.readyHead === state.ready.length) {
    state.ready.length = 0
    state.readyHead = 0
  } else if (state.readyHead > 1024 && state.readyHead * 2 > state.ready.length) {
    state.ready.splice(0, state.readyHead)
    state.readyHead = 0
  }
  lane.queued = false
  return lane
}

/** One delivery of `st` is done with, however it ended. */
export const settle = (state: EngineState, st: PartitionState): void => {
  st.inFlight--
  state.total--
  checkIdle(st)
  // the reader waits for room
  if (state.total === state.config.refill - 1) state.changed.unsafeOpen()
}

/** Lets a delivery go: it stays pending in the backend (its partition was revoked or lost). */
const release = (state: EngineState, st: PartitionState, _d: Delivery): void => {
  settle(state, st)
}

/** Lanes come and go with entities: finished ones are kept for reuse, up to this many. */
const POOL = 4096

export interface Lanes {
  /** Hands deliveries of `st` to their lanes; those already in hand (claimed again) are skipped. */
  readonly dispatch: (st: PartitionState, deliveries: ReadonlyArray<Delivery>) => void
  /** The deliveries of `st` this member has in hand: in its lanes, or waiting for an ack. */
  readonly inHand: (st: PartitionState) => Set<string>
  /** Takes the queued, not yet started deliveries of `st` out of every lane (they stay pending). */
  readonly drop: (st: PartitionState) => void
  /** Lanes parked on `st` go back to the workers (its deadline moved). */
  readonly unpark: (st: PartitionState) => void
  /** Starts the workers, in `scope`. */
  readonly start: (scope: Scope.Scope) => Effect.Effect<void>
  /** Interrupts (and replaces) the workers running a handler of `st`; returns how many. */
  readonly interrupt: (st: PartitionState) => Effect.Effect<number>
}

interface Slot<R> {
  fiber: Fiber.RuntimeFiber<void, never> | undefined
  lane: Lane | undefined
  /** The partition whose handler this worker is running. */
  current: PartitionState | undefined
  /** This worker's runner (see handle.ts): runs a delivery, then continues with `stepped`. */
  run: (st: PartitionState, d: Delivery) => Effect.Effect<void, never, R>
  /** Opened when this worker, idle, is given a ready lane to take. */
  readonly wake: Effect.Latch
  /** Waits to be woken, then goes on: made once. */
  idle: Effect.Effect<void, never, R>
}

export const makeLanes = <R>(
  state: EngineState,
  makeRunner: (k: (step: Step) => Effect.Effect<void, never, R>) => (st: PartitionState, d: Delivery) => Effect.Effect<void, never, R>,
  supervised: <A, E, R2>(loop: string, effect: Effect.Effect<A, E, R2>) => Effect.Effect<A, E, R2> = (_, effect) => effect
): Effect.Effect<Lanes, never, R> =>
  Effect.map(Effect.context<R>(), (context) => {
    const parked = new Set<Lane>()
    const slots: Array<Slot<R>> = []
    const makeSlot = (): Slot<R> => {
      const slot: Slot<R> = {
        fiber: undefined,
        lane: undefined,
        current: undefined,
        run: undefined as never,
        wake: Effect.unsafeMakeLatch(false),
        idle: undefined as never
      }
      slot.run = makeRunner((step) => stepped(slot, step))
      slot.idle = Effect.flatMap(slot.wake.await, () => next(slot))
      return slot
    }
    // workers waiting for a lane, the last to go idle on top
    const idle: Array<Slot<R>> = []

    const enqueue = (lane: Lane) => {
      if (lane.queued || lane.running) return
      lane.queued = true
      state.ready.push(lane)
      // one idle worker per lane made ready; busy workers take the rest when they finish
      const slot = idle.pop()
      if (slot !== undefined) slot.wake.unsafeOpen()
    }
    const pool: Array<Lane> = []
    let scope: Scope.Scope | undefined

    const finish = (lane: Lane) => {
      if (lane.head >= lane.items.length) {
        lane.items.length = 0
        lane.owners.length = 0
        lane.head = 0
        if (state.lanes.get(lane.key) === lane) {
          state.lanes.delete(lane.key)
          if (pool.length < POOL && !lane.queued && !lane.running && lane.parkedOn === undefined) pool.push(lane)
        }
      } else if (lane.head > 64 && lane.head * 2 > lane.items.length) {
        lane.items.splice(0, lane.head)
        lane.owners.splice(0, lane.head)
        lane.head = 0
      }
    }

    const park = (lane: Lane, st: PartitionState) => {
      lane.running = false
      lane.parkedOn = st
      parked.add(lane)
    }

    /**
     * A worker's loop: take a ready lane, run its deliveries one after the other, take the
     * next lane; wait when there is none. Written as continuations made once per worker
     * (not a generator step per delivery): a delivery acknowledged on its first attempt
     * costs two steps of the fiber, its handler's and the one that starts it.
     */
    const next = (slot: Slot<R>): Effect.Effect<void, never, R> => {
      for (;;) {
        let lane = slot.lane
        if (lane === undefined) {
          lane = takeReady(state)
          if (lane === undefined) {
            slot.wake.unsafeClose()
            idle.push(slot)
            return slot.idle
          }
          lane.running = true
          slot.lane = lane
        }
        while (lane.head < lane.items.length) {
          const d = lane.items[lane.head]!
          const st = lane.owners[lane.head]!
          if (!isLive(st)) {
            lane.head++
            release(state, st, d)
            continue
          }
          if (!canStart(st, nowOf(state))) break
          slot.current = st
          return slot.run(st, d)
        }
        slot.lane = undefined
        if (lane.head < lane.items.length) park(lane, lane.owners[lane.head]!)
        else {
          lane.running = false
          finish(lane)
        }
      }
    }

    /** What a worker does once a delivery of its lane is done with. */
    const stepped = (slot: Slot<R>, step: Step): Effect.Effect<void, never, R> => {
      const lane = slot.lane!
      const st = slot.current!
      slot.current = undefined
      if (step === "park") {
        slot.lane = undefined
        park(lane, st)
      } else {
        lane.head++
        settle(state, st)
      }
      return next(slot)
    }

    /** After an interruption: the delivery being run stays pending; the rest of the lane goes on. */
    const abandon = (slot: Slot<R>) => {
      const lane = slot.lane
      slot.lane = undefined
      if (lane === undefined) return
      if (slot.current !== undefined && lane.head < lane.items.length) {
        release(state, lane.owners[lane.head]!, lane.items[lane.head]!)
        lane.head++
      }
      slot.current = undefined
      lane.running = false
      finish(lane)
      if (lane.head < lane.items.length) enqueue(lane)
    }

    const worker = (slot: Slot<R>): Effect.Effect<void, never, R> =>
      Effect.suspend(() => next(slot)).pipe(Effect.onInterrupt(() => Effect.sync(() => abandon(slot))))

    const spawn = (slot: Slot<R>) =>
      // interruptible whatever region spawns it (a hand-over at shutdown runs in a finalizer)
      Effect.map(Effect.forkIn(Effect.interruptible(supervised("a worker", Effect.provide(worker(slot), context))), scope!), (fiber) => {
        slot.fiber = fiber
      })

    const lanes: Lanes = {
      dispatch: (st, deliveries) => {
        let added = 0
        const skip = st.inHand
        for (const d of deliveries) {
          if (skip !== undefined && skip.has(trackKey(d))) continue
          st.inFlight++
          added++
          const key = entityKey(d)
          let lane = state.lanes.get(key)
          if (lane === undefined) {
            lane = pool.pop()
            if (lane !== undefined) lane.key = key
            else lane = { key, items: [], owners: [], head: 0, queued: false, running: false, parkedOn: undefined }
            state.lanes.set(key, lane)
          }
          lane.items.push(d)
          lane.owners.push(st)
          if (lane.parkedOn === undefined) enqueue(lane)
        }
        if (added > 0) {
          state.total += added
          st.idle.unsafeClose()
        }
      },

      inHand: (st) => {
        const held = new Set<string>()
        for (const lane of state.lanes.values()) {
          for (let i = lane.head; i < lane.items.length; i++) if (lane.owners[i] === st) held.add(trackKey(lane.items[i]!))
        }
        for (const d of st.acks) held.add(trackKey(d))
        for (const d of st.sending ?? []) held.add(trackKey(d))
        return held
      },

      drop: (st) => {
        for (const lane of Array.from(state.lanes.values())) {
          // the item a worker is running stays: the worker settles it when it returns
          const from = lane.running ? lane.head + 1 : lane.head
          let kept = from
          for (let i = from; i < lane.items.length; i++) {
            const d = lane.items[i]!
            const owner = lane.owners[i]!
            if (owner === st) release(state, st, d)
            else {
              lane.items[kept] = d
              lane.owners[kept++] = owner
            }
          }
          lane.items.length = kept
          lane.owners.length = kept
          if (lane.parkedOn === st) {
            parked.delete(lane)
            lane.parkedOn = undefined
            finish(lane)
            if (lane.head < lane.items.length) enqueue(lane)
          } else if (!lane.running) finish(lane)
        }
      },

      unpark: (st) => {
        for (const lane of Array.from(parked)) {
          if (lane.parkedOn !== st) continue
          parked.delete(lane)
          lane.parkedOn = undefined
          enqueue(lane)
        }
      },

      start: (s) =>
        Effect.suspend(() => {
          scope = s
          return Effect.forEach(Array.from({ length: state.config.concurrency }, () => {
            const slot = makeSlot()
            slots.push(slot)
            return slot
          }), spawn, { discard: true })
        }),

      interrupt: (st) =>
        Effect.gen(function*() {
          let n = 0
          for (const slot of slots) {
            if (slot.current !== st || slot.fiber === undefined) continue
            const fiber = slot.fiber
            slot.fiber = undefined
            n++
            // the old worker settles its delivery when its interruption completes; a new
            // one takes its place at once
            yield* Fiber.interruptFork(fiber)
            const fresh = makeSlot()
            slots[slots.indexOf(slot)] = fresh
            yield* spawn(fresh)
          }
          return n
        })
    }
    return lanes
  })
