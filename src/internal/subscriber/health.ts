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

export interface ConsumerHealth {
  readonly member: string
  /** Partitions this member owns now. */
  readonly partitions: ReadonlyArray<number>
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
