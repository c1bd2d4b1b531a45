/**
 * The deadline every PostgreSQL statement has (src/postgres/internal/deadline.ts), without
 * a database: a "statement" that never answers and whose cancel takes a while (as the
 * driver's does through a silent connection) shows which policy waits for the cancel.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber } from "effect"
import { withDeadline } from "../../src/postgres/internal/deadline.js"

class NoReply {
  readonly _tag = "NoReply"
}

/** A statement that never answers; its interruption takes `cancelMs` and is recorded in `log`. */
const silent = (log: Array<string>, cancelMs: number) =>
  Effect.never.pipe(
    Effect.onInterrupt(() =>
      Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, cancelMs))).pipe(
        Effect.zipRight(Effect.sync(() => log.push("cancelled")))
      )
    )
  )

describe("PostgreSQL statement deadlines", () => {
  it.live("background: the caller fails at the deadline, before the statement's cancel has run; the cancel still runs", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const exit = yield* Effect.exit(withDeadline(silent(log, 300), Duration.millis(50), () => new NoReply(), "background"))
      log.push("caller failed")
      expect(exit).toStrictEqual(Exit.fail(new NoReply()))
      expect(log).toStrictEqual(["caller failed"])
      for (let i = 0; i < 100 && log.length < 2; i++) yield* Effect.sleep("20 millis")
      expect(log).toStrictEqual(["caller failed", "cancelled"])
    }))

  it.live("awaited: the caller fails at the deadline only once the statement's cancel has run", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const exit = yield* Effect.exit(withDeadline(silent(log, 300), Duration.millis(50), () => new NoReply(), "awaited"))
      log.push("caller failed")
      expect(exit).toStrictEqual(Exit.fail(new NoReply()))
      expect(log).toStrictEqual(["cancelled", "caller failed"])
    }))

  it.live("a reply or an error before the deadline is the caller's, under either policy", () =>
    Effect.gen(function*() {
      for (const policy of ["background", "awaited"] as const) {
        const ok = yield* withDeadline(Effect.as(Effect.sleep("10 millis"), "rows"), Duration.seconds(5), () => new NoReply(), policy)
        expect(ok).toBe("rows")
        const failed = yield* Effect.exit(withDeadline(Effect.fail("refused" as const), Duration.seconds(5), () => new NoReply(), policy))
        expect(failed).toStrictEqual(Exit.fail("refused"))
      }
    }))

  it.live("an interrupted caller: background goes on at once, awaited waits for the cancel", () =>
    Effect.gen(function*() {
      for (const [policy, expected] of [["background", ["caller gone", "cancelled"]], ["awaited", ["cancelled", "caller gone"]]] as const) {
        const log: Array<string> = []
        const fiber = yield* Effect.fork(withDeadline(silent(log, 200), Duration.seconds(30), () => new NoReply(), policy))
        yield* Effect.sleep("30 millis")
        yield* Fiber.interrupt(fiber)
        log.push("caller gone")
        for (let i = 0; i < 100 && log.length < 2; i++) yield* Effect.sleep("20 millis")
        expect(log).toStrictEqual(expected)
      }
    }))

  it.effect("the deadline is the wall clock's: a test clock that never moves does not hold it", () =>
    Effect.gen(function*() {
      for (const policy of ["background", "awaited"] as const) {
        const exit = yield* Effect.exit(withDeadline(Effect.never, Duration.millis(30), () => new NoReply(), policy))
        expect(exit).toStrictEqual(Exit.fail(new NoReply()))
      }
    }))
})
