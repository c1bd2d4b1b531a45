/**
 * Cutting a member's waits short without a fiber per wait.
 *
 * A wait ends early when its `until` completes (on one server: an entry written to the
 * member's wake stream, which the blocking read also reads). Forking a fiber for that
 * on every wait, and interrupting it when the wait ends, costs more than the rest of the
 * wake-up path of a waiting consumer (measured ~40 µs of the ~170 µs from the reply to
 * the first handler). One fiber per member serves every wait instead: it waits for a
 * wait to be armed, then for `until`, and cuts the wait armed at that moment, once.
 *
 * `until` must be the same effect on every wait it serves (the engine passes the
 * completion of one latch, so an open latch means every wait armed now would end at
 * once too); a wait with another `until` is refused, and its caller forks a cut of its
 * own.
 *
 * @internal
 */
import { Effect, type Scope } from "effect"

export interface WaitCut {
  /**
   * Arms the cut for the wait about to be sent: `wake` runs when `until` completes
   * before {@link WaitCut.disarm}. False when this cut serves another `until`.
   */
  readonly arm: (until: Effect.Effect<void>, wake: Effect.Effect<void>) => boolean
  /** The wait is over: `until` completing no longer cuts it. */
  readonly disarm: () => void
}

/** A cut whose fiber lives in `scope` (the member's connections). */
export const makeWaitCut = (scope: Scope.Scope): Effect.Effect<WaitCut> =>
  Effect.gen(function*() {
    const armed = Effect.unsafeMakeLatch(false)
    let serving: Effect.Effect<void> | undefined = undefined
    let wake: Effect.Effect<void> = Effect.void
    let on = false

    const disarm = () => {
      on = false
      armed.unsafeClose()
    }

    // once per round: a wait armed, then `until`; a wait still armed then is cut, once
    const round = Effect.zipRight(
      Effect.zipRight(armed.await, Effect.suspend(() => serving!)),
      Effect.suspend(() => {
        if (!on) return Effect.void
        disarm()
        return wake
      })
    )
    // interruptible whatever the region it is made in (a member's connections open uninterruptibly)
    yield* Effect.forkIn(Effect.interruptible(Effect.forever(round)), scope)

    return {
      arm: (until, w) => {
        serving ??= until
        if (serving !== until) return false
        wake = w
        on = true
        armed.unsafeOpen()
        return true
      },
      disarm
    }
  })
