import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { makeWaitCut } from "../src/redis/internal/waitCut.js"

describe("waitCut", () => {
  const settle = Effect.repeatN(Effect.yieldNow(), 20)

  it.scoped("cuts the wait armed when `until` completes, once per arm", () =>
    Effect.gen(function*() {
      const cut = yield* makeWaitCut(yield* Effect.scope)
      const until = Effect.unsafeMakeLatch(false)
      let wakes = 0
      const wake = Effect.sync(() => void wakes++)
      // nothing armed: a change cuts nothing
      until.unsafeOpen()
      yield* settle
      until.unsafeClose()
      expect(wakes).toBe(0)
      // armed, then a change: one wake
      expect(cut.arm(until.await, wake)).toBe(true)
      yield* settle
      expect(wakes).toBe(0)
      until.unsafeOpen()
      yield* settle
      expect(wakes).toBe(1)
      // still open: the same wait is not cut again
      yield* settle
      expect(wakes).toBe(1)
      cut.disarm()
      // armed while `until` is already complete: cut at once
      expect(cut.arm(until.await, wake)).toBe(true)
      yield* settle
      expect(wakes).toBe(2)
      cut.disarm()
      // disarmed before the change: no wake, and the next wait is still served
      until.unsafeClose()
      expect(cut.arm(until.await, wake)).toBe(true)
      cut.disarm()
      until.unsafeOpen()
      yield* settle
      expect(wakes).toBe(2)
      until.unsafeClose()
      expect(cut.arm(until.await, wake)).toBe(true)
      until.unsafeOpen()
      yield* settle
      expect(wakes).toBe(3)
    }))

  it.scoped("refuses a wait with another `until`, and ends with its scope", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const cut = yield* makeWaitCut(scope)
      const a = Effect.unsafeMakeLatch(false)
      const b = Effect.unsafeMakeLatch(false)
      let wakes = 0
      expect(cut.arm(a.await, Effect.sync(() => void wakes++))).toBe(true)
      cut.disarm()
      expect(cut.arm(b.await, Effect.sync(() => void wakes++))).toBe(false)
      yield* Scope.close(scope, Exit.void)
      expect(cut.arm(a.await, Effect.sync(() => void wakes++))).toBe(true)
      a.unsafeOpen()
      yield* settle
      expect(wakes).toBe(0)
    }))
})
