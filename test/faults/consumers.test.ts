/**
 * Consumers under the faults production sees every day (../support/scenario.ts): three
 * consumer processes, 8 partitions, a steady backlog of 20,000 events over 200 entities,
 * handlers of 1–5 ms, and a nemesis that for 30 s, every 1–3 s, freezes a consumer past
 * its lease, kills one and starts it again, drops every connection, pauses the server
 * past the command timeout, or restarts redis-server (AOF). The same scenario without
 * faults is the control. On a busy machine the nemesis goes on until it has done 10 faults. The delivery checker must find no order violation, nothing
 * lost, no handler started after its lease deadline; every consumer runs at the end and
 * the pending lists are empty. Each run prints its figures as one JSON line.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { runScenario } from "../support/scenario.js"
import { figures } from "../support/figures.js"

const run = (seconds: number, faults: boolean) =>
  Effect.promise(() => runScenario({ seconds, faults, minFaults: 10, log: (line) => console.log(line) })).pipe(
    Effect.tap((report) => Effect.sync(() => figures((report))))
  )

describe("faults: consumers under a nemesis", () => {
  it.live("control: the same scenario without faults", () =>
    Effect.gen(function*() {
      const report = yield* run(10, false)
      expect(report.examples).toEqual([])
      expect(report.verified).toBe(true)
      expect(report.events).toBeGreaterThan(20_000)
    }), 240_000)

  it.live("30 s of faults: 0 order violations, 0 lost, 0 late starts, every consumer running, nothing pending", () =>
    Effect.gen(function*() {
      const report = yield* run(30, true)
      expect(report.examples).toEqual([])
      expect([report.order_violations, report.lost, report.late_starts]).toEqual([0, 0, 0])
      expect(report.consumers_alive).toBe(report.consumers)
      expect(report.pending_end).toBe(0)
      expect(Object.values(report.faults).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(10)
      expect(report.verified).toBe(true)
    }), 420_000)
})
