/**
 * Consumers on PostgreSQL under the faults production sees every day
 * (../support/scenario.ts with the postgres backend): three consumer processes, 8
 * partitions, a steady backlog of 20,000 events over 200 entities, handlers of 1–5 ms,
 * and a nemesis that for 30 s, every 1–3 s, freezes a consumer past its lease, kills one
 * and starts it again, ends every client backend (pg_terminate_backend), freezes the
 * server's processes past the command timeout (SIGSTOP), or restarts the server
 * (immediate stop, crash recovery), all under appends and consumers. The same scenario
 * without faults is the control. On a busy machine the nemesis goes on until it has done
 * 10 faults. The producer retries each append with the same event id until its outcome is
 * known, so the delivery checker's "nothing lost" covers every acknowledged append. It
 * must find no order violation, nothing lost, no handler started after its lease
 * deadline; every consumer runs at the end and nothing is pending. Each run prints its
 * figures as one JSON line. Needs PostgreSQL 15's binaries: the server is this test's own.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { figures } from "../support/figures.js"
import { runScenario } from "../support/scenario.js"

const run = (seconds: number, faults: boolean) =>
  Effect.promise(() => runScenario({ backend: "postgres", seconds, faults, minFaults: 10, faultBacklog: 2000, log: (line) => console.log(line) })).pipe(
    Effect.tap((report) => Effect.sync(() => figures(report)))
  )

describe("PostgreSQL: consumers under a nemesis", () => {
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
      // the faults met a backlog: entries pending and unread while each one happened
      expect(report.backlog_at_faults_min).toBeGreaterThan(1000)
      expect(report.verified).toBe(true)
    }), 420_000)
})
