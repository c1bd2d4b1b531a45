/**
 * What the modules of one running subscriber share: its settings and services, the
 * partitions it owns, the entity lanes, and the latches its loops wait on. One record,
 * passed explicitly; each module changes only the fields it is named for.
 *
 * @internal
 */
import { type Clock, Deferred, Effect, type Metric } from "effect"
import type { ConsumerGroups, GroupInfo } from "../../ConsumerGroups.js"
import type { EventStore } from "../../EventStore.js"
import type { Config } from "./config.js"
import type { PartitionState } from "./partition.js"
import type { ReaderActivity } from "./health.js"
import type { Lane } from "./lanes.js"
import { liveClock } from "../util.js"

export interface Metrics {
  readonly delivered: Metric.Metric.Counter<number>
  readonly retried: Metric.Metric.Counter<number>
  readonly deadLettered: Metric.Metric.Counter<number>
  readonly inFlight: Metric.Metric.Gauge<number>
}

export interface EngineState {
  readonly config: Config
  readonly info: GroupInfo
  /** This incarnation's member id: the consumer name and a UUIDv7. */
  readonly member: string
  readonly groups: ConsumerGroups["Type"]
  readonly store: EventStore["Type"]
  readonly clock: Clock.Clock
  readonly metrics: Metrics
  /** Whether a tracer that records spans is installed (spans cost more than the rest of a delivery). */
  readonly traced: boolean
  /** Owned partitions, by number. */
  readonly owned: Map<number, PartitionState>
  /** Deliveries dispatched and not settled, over every partition. */
  total: number
  /** Set once shutdown begins: nothing new is read or acquired. */
  stopping: boolean
  /** What the reader is doing (for `Subscriber.status`). */
  reader: ReaderActivity
  /** Entities with queued deliveries, by entity key. */
  readonly lanes: Map<string, Lane>
  /** Lanes waiting for a worker, oldest first. */
  readonly ready: Array<Lane>
  readyHead: number
  /** Opened when the reader may have something to do (ownership changed, room freed). */
  readonly changed: Effect.Latch
  /** Completed with the error that ends the subscriber (after backoff). */
  readonly fatal: Deferred.Deferred<never, unknown>
}

/**
 * Monotonic milliseconds: `performance.now()` under the live clock, the fiber's clock
 * otherwise (a `TestClock` in tests).
 */
export const nowOf = (state: EngineState): number =>
  state.clock === liveClock ? performance.now() : Number(state.clock.unsafeCurrentTimeNanos() / 1_000_000n)

export const makeState = (fields: Pick<EngineState, "config" | "info" | "member" | "groups" | "store" | "clock" | "metrics" | "traced">): Effect.Effect<EngineState> =>
  Effect.map(Deferred.make<never, unknown>(), (fatal) => ({
    ...fields,
    owned: new Map(),
    total: 0,
    stopping: false,
    reader: { activity: "starting", since: Date.now() },
    lanes: new Map(),
    ready: [],
    readyHead: 0,
    changed: Effect.unsafeMakeLatch(false),
    fatal
  }))
