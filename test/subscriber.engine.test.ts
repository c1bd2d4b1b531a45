/**
 * The consumer engine's pure parts, without a backend: assignment, settings, the
 * reader's plan, lease deadlines and how a handler's exit is read.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Either, Exit, FastCheck as fc } from "effect"
import { assign } from "../src/internal/subscriber/assignment.js"
import { make as makeConfig } from "../src/internal/subscriber/config.js"
import { ended } from "../src/internal/subscriber/handle.js"
import { canStart, make as makePartition, renewed } from "../src/internal/subscriber/partition.js"
import { plan } from "../src/internal/subscriber/reader.js"
import { makeLanes } from "../src/internal/subscriber/lanes.js"
import type { EngineState } from "../src/internal/subscriber/state.js"
import type { Delivery } from "../src/ConsumerGroups.js"
import { liveClock } from "../src/internal/util.js"

const counts = (a: ReadonlyArray<string | undefined>) => {
  const c = new Map<string, number>()
  for (const m of a) if (m !== undefined) c.set(m, (c.get(m) ?? 0) + 1)
  return c
}
const moved = (a: ReadonlyArray<string | undefined>, b: ReadonlyArray<string | undefined>) => a.filter((m, p) => m !== b[p]).length
const member = fc.string({ minLength: 1, maxLength: 12 }).map((s) => `c-${s}:${s.length}`)
const members = fc.uniqueArray(member, { minLength: 1, maxLength: 9 })

/** The assignment a group settles on: each member's view once the previous one is in force. */
const settle = (ms: ReadonlyArray<string>, partitions: number, owners: ReadonlyArray<string | undefined> = []) => {
  let current = owners
  for (let i = 0; i < 4; i++) current = assign(ms, partitions, current)
  return current
}

describe("assignment", () => {
  it("3 → 4 members over 8 partitions moves 2; the newcomer gets 2; counts differ by at most one", () => {
    const three = settle(["a:1", "b:1", "c:1"], 8)
    const four = assign(["a:1", "b:1", "c:1", "d:1"], 8, three)
    expect(moved(three, four)).toBe(2)
    expect(counts(four).get("d:1")).toBe(2)
    expect(Math.max(...counts(four).values()) - Math.min(...counts(four).values())).toBeLessThanOrEqual(1)
  })

  it("a leave moves only the leaver's partitions", () => {
    const three = settle(["a:1", "b:1", "c:1"], 8)
    const two = assign(["a:1", "b:1"], 8, three)
    expect(moved(three, two)).toBe(three.filter((m) => m === "c:1").length)
  })

  it("a restarted member (a new incarnation) takes only its share, from those above theirs", () => {
    const three = settle(["a:1", "b:1", "c:1"], 8)
    const two = settle(["a:1", "b:1"], 8, three)
    const back = assign(["a:1", "b:1", "c:2"], 8, two)
    expect(counts(back).get("c:2")).toBeGreaterThanOrEqual(2)
    expect(moved(two, back)).toBe(counts(back).get("c:2"))
  })

  it.prop("every partition has a live owner, counts differ by at most one, and it is a fixed point", [members, fc.integer({ min: 1, max: 32 })], ([ms, partitions]) => {
    const a = settle(ms, partitions)
    expect(a.every((m) => m !== undefined && ms.includes(m))).toBe(true)
    const c = Array.from(counts(a).values())
    const all = ms.map((m) => counts(a).get(m) ?? 0)
    expect(Math.max(...all) - Math.min(...all)).toBeLessThanOrEqual(1)
    expect(c.reduce((x, y) => x + y, 0)).toBe(partitions)
    expect(assign(ms, partitions, a)).toEqual(a)
  })

  it.prop("a join moves only what the newcomer's share needs; a leave only the leaver's", [members, member, fc.integer({ min: 1, max: 32 })], ([ms, newcomer, partitions]) => {
    fc.pre(!ms.includes(newcomer))
    const before = settle(ms, partitions)
    const after = assign([...ms, newcomer], partitions, before)
    expect(moved(before, after)).toBe(counts(after).get(newcomer) ?? 0)
    expect(counts(after).get(newcomer) ?? 0).toBe(Math.floor(partitions / (ms.length + 1)))
    if (ms.length > 1) {
      const leaver = ms[0]!
      const left = assign(ms.slice(1), partitions, before)
      expect(moved(before, left)).toBe(counts(before).get(leaver) ?? 0)
    }
  })

  it("the same facts give every member the same answer, whatever the order of the member list", () => {
    const ms = ["x:1", "y:2", "z:3", "w:4"]
    expect(assign(ms, 16, [])).toEqual(assign(ms.slice().reverse(), 16, []))
  })
})

describe("settings", () => {
  const base = { group: "g" }
  it("defaults: lease 10 s, heartbeat a third of it, wait at most the heartbeat, 500 read, 16 at once", () => {
    const c = Either.getOrThrow(makeConfig(base))
    expect([c.leaseTtl, c.heartbeat, c.maxWait, c.readCount, c.concurrency, c.revokeTimeout]).toEqual([10_000, 3333, 3333, 500, 16, 5000])
    expect(c.margin).toBeGreaterThan(0)
    expect(c.margin).toBeLessThan(c.leaseTtl - c.heartbeat)
  })
  it("refuses a heartbeat above a third of the lease and a wait above the heartbeat", () => {
    const e1 = makeConfig({ ...base, leaseTtl: "3 seconds", heartbeat: "1500 millis" })
    expect(Either.isLeft(e1) && e1.left.argument).toBe("heartbeat")
    const e2 = makeConfig({ ...base, leaseTtl: "3 seconds", heartbeat: "1 second", maxWait: "2 seconds" })
    expect(Either.isLeft(e2) && e2.left.argument).toBe("maxWait")
    const e3 = makeConfig({ ...base, readCount: 0 })
    expect(Either.isLeft(e3) && e3.left.argument).toBe("readCount")
  })
})

describe("lease deadlines", () => {
  it("no handler starts at or past the deadline; a renewal moves it from its send time, never back", () => {
    const lease = { group: "g", category: "c", partition: 0, token: "m:1" }
    const st = makePartition(lease, 1000)
    expect(canStart(st, 999)).toBe(true)
    expect(canStart(st, 1000)).toBe(false)
    renewed(st, 900, 10_000, 2000)
    expect(st.deadline).toBe(8900)
    renewed(st, 100, 10_000, 2000)
    expect(st.deadline).toBe(8900)
    st.phase = "revoking"
    expect(canStart(st, 0)).toBe(false)
    expect(st.epoch).toBe(1)
  })
})

describe("the reader's plan", () => {
  const lease = (p: number) => ({ group: "g", category: "c", partition: p, token: `m:${p}` })
  it("claims before reading, shares the room up to 2 × readCount, and reads nothing from 1.5 × readCount in flight", () => {
    const a = makePartition(lease(0), 1e9)
    const b = makePartition(lease(1), 1e9)
    b.phase = "active"
    b.readable = true
    const c = makePartition(lease(2), 1e9)
    c.phase = "active"
    c.tail = { log: "1-0", redelivery: "0-0" }
    c.drainedAt = 100
    // c was drained 1 ms ago: not yet looked at again while the others are read
    const p = plan([a, b, c], 100, 500, 750, 101)
    expect(p.tasks.map((t) => [t._tag, t.st.partition])).toEqual([["claim", 0], ["read", 1]])
    expect(p.count).toBe(450)
    expect(p.watches).toEqual([])
    expect(p.polling).toBe(true)
    // 5 ms later it is
    expect(plan([a, b, c], 100, 500, 750, 105).tasks.map((t) => t.st.partition)).toEqual([0, 1, 2])
    expect(plan([a, b, c], 749, 500, 750, 101).tasks.length).toBe(2)
    expect(plan([a, b, c], 750, 500, 750, 101).tasks).toEqual([])
    // only c left, drained: wait on the server from its tail
    expect(plan([c], 0, 500, 750, 101).watches.map((s) => s.partition)).toEqual([2])
    b.busy = true
    expect(plan([b], 0, 500, 750, 101).tasks).toEqual([])
    expect(plan([b, c], 0, 500, 750, 101).watches).toEqual([])
  })
})

describe("a handler's exit", () => {
  it.effect("success, interruption, failure and defect are told apart", () =>
    Effect.gen(function*() {
      expect(ended(Exit.void)._tag).toBe("Success")
      expect(ended(Exit.failCause(Cause.interrupt(undefined as never)))._tag).toBe("Interrupted")
      expect(ended(Exit.fail("boom"))).toEqual({ _tag: "Failure", error: "boom" })
      expect(ended(Exit.die(new Error("bug")))).toEqual({ _tag: "Defect", message: "bug" })
    }))
})

describe("lanes", () => {
  /** Runs `lanes` with a worker pool of `concurrency` over handlers that take `ms` each. */
  const pool = (concurrency: number, ms: number) =>
    Effect.gen(function*() {
      const state = {
        config: { concurrency, refill: 1_000_000 },
        lanes: new Map(),
        ready: [],
        readyHead: 0,
        total: 0,
        clock: liveClock,
        changed: Effect.unsafeMakeLatch(false)
      } as unknown as EngineState
      const st = makePartition({ group: "g", category: "c", partition: 0, token: "m:1" }, Infinity)
      const started: Array<string> = []
      let running = 0
      let peak = 0
      const lanes = yield* makeLanes<never>(state, (k) => (_st, d: Delivery) =>
        Effect.suspend(() => {
          started.push(d.id)
          peak = Math.max(peak, ++running)
          return Effect.zipRight(Effect.sleep(ms), Effect.suspend(() => (running--, k("settled"))))
        }))
      yield* lanes.start(yield* Effect.scope)
      const dispatch = (entities: ReadonlyArray<string>, each: number) =>
        lanes.dispatch(st, entities.flatMap((e) =>
          Array.from({ length: each }, (_, i): Delivery => ({
            partition: 0,
            source: "log",
            id: `${e}/${i}`,
            event: { entityId: e } as unknown as Delivery["event"],
            deliveries: 1
          }))
        ))
      const settled = (n: number) =>
        Effect.gen(function*() {
          for (let i = 0; i < 2000 && started.length < n; i++) yield* Effect.sleep("5 millis")
          yield* st.idle.await
        }).pipe(Effect.timeout("10 seconds"))
      return { dispatch, settled, started, peak: () => peak, reset: () => (peak = 0) }
    })

  it.live("one entity in order, different entities in parallel up to the pool; once the pool is idle, a lane made ready starts at once and two run side by side", () =>
    Effect.gen(function*() {
      const p = yield* pool(4, 3)
      p.dispatch(["a", "b", "c", "d", "e", "f"], 5)
      yield* p.settled(30)
      expect(p.started.length).toBe(30)
      for (const e of ["a", "b", "c", "d", "e", "f"]) {
        expect(p.started.filter((id) => id.startsWith(`${e}/`))).toEqual([0, 1, 2, 3, 4].map((i) => `${e}/${i}`))
      }
      expect(p.peak()).toBe(4)
      // after the pool went idle: one lane ready starts at once, then two lanes run side by side
      p.reset()
      p.dispatch(["g"], 1)
      yield* p.settled(31)
      expect(p.peak()).toBe(1)
      p.dispatch(["h", "i"], 3)
      yield* p.settled(37)
      expect(p.peak()).toBe(2)
      expect(p.started.slice(31).filter((id) => id.startsWith("h/"))).toEqual(["h/0", "h/1", "h/2"])
    }).pipe(Effect.scoped))
})
