/**
 * What PostgreSQL's consumer groups can get wrong that memory cannot: a read that reaches
 * the server late (its caller gave up), a read that waits on the partition's row lock
 * while its lease lapses, leases kept by the database's clock rather than the process's,
 * a wait woken by another process's append (no in-process wake-up), and the bookkeeping
 * of acknowledgements out of order (a checkpoint and the positions acknowledged past it).
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, TestClock } from "effect"
import * as fc from "fast-check"
import { ConsumerGroups, EventStore } from "effect-chronicle"
import { backendIn, claimAll, clientIn, postgresFile, realSleep } from "../support/postgres.js"
import { startProxy } from "../support/proxy.js"

const { fresh } = postgresFile()

const event = (n: number): EventStore.NewEvent => ({ eventId: crypto.randomUUID(), type: "Noted", data: { n } })

const partitionOne = (groups: ConsumerGroups.ConsumerGroups.Service, group: string) =>
  Effect.map(groups.status(group), (s) => s.partitionStatus[0]!)

describe("PostgreSQL consumer groups", () => {
  it.live("a read that reaches the server after its caller gave up (and after the claim that followed) takes nothing", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_fence")
      const port = Number(new URL(url).port)
      const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy(port)), (p) => Effect.promise(() => p.close()))
      const proxied = url.replace(`:${port}`, `:${proxy.port}`)
      // the member's process, through a path that can hold a request; and a second process on the group
      const a = yield* backendIn(proxied, { schema, partitions: 1, commandTimeout: "300 millis" })
      const b = yield* backendIn(url, { schema, partitions: 1 })
      const info = yield* a.groups.ensureGroup("g", "things", "start")
      const lease = (yield* a.groups.acquire(info, 0, "m1", 30_000))!
      yield* claimAll(a.groups, lease, "m1", 3)
      // the read leaves, is held on its way 1.5 s, and its caller gives up after 300 ms
      proxy.holdRequest((request) => request.includes(".read("), 1500)
      const given = yield* Effect.either(a.groups.read(lease, "m1", 10))
      expect(given._tag === "Left" && given.left._tag).toBe("StoreUnavailable")
      // the partition is claimed again (the fence moves on); then an entry arrives
      yield* claimAll(b.groups, lease, "m1", 3)
      yield* b.store.append("things-1", [event(1)])
      // the held read reaches the server now, with the lease still held
      yield* realSleep(1800)
      const after = yield* partitionOne(b.groups, "g")
      expect([after.pending, after.lag]).toEqual([0, 1])
      // the entry is still there for the owner's next read
      const next = yield* b.groups.read(lease, "m1", 10)
      expect(next.deliveries.map((d) => d.id)).toEqual(["1-0"])
    }).pipe(Effect.scoped), 30_000)

  it.live("a read that waits on the partition's lock while its lease lapses takes nothing (the lease is checked when the read runs, by the database's clock)", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_lapse")
      const { groups, store } = yield* backendIn(url, { schema, partitions: 1 })
      const sql = yield* clientIn(url)
      const info = yield* groups.ensureGroup("g", "things", "start")
      const lease = (yield* groups.acquire(info, 0, "m1", 400))!
      yield* store.append("things-1", [event(1)])
      // another session holds the partition's row for 1.2 s
      const locked = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
        yield* sql.unsafe(`SELECT 1 FROM "${schema}".group_partitions WHERE grp = 'g' FOR UPDATE`)
        yield* Deferred.succeed(locked, undefined)
        yield* realSleep(1200)
      })))
      yield* Deferred.await(locked)
      const read = yield* Effect.either(groups.read(lease, "m1", 10))
      yield* Fiber.join(holder)
      expect(read._tag === "Left" && read.left._tag).toBe("LeaseLost")
      const after = yield* partitionOne(groups, "g")
      expect([after.pending, after.lag]).toEqual([0, 1])
    }).pipe(Effect.scoped), 30_000)

  it.effect("leases follow the database's clock: a test clock moved on by hours changes nothing, real time does", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_clock")
      const { groups } = yield* backendIn(url, { schema, partitions: 1 })
      const info = yield* groups.ensureGroup("g", "things", "start")
      const lease = (yield* groups.acquire(info, 0, "m1", 800))!
      yield* TestClock.adjust("2 hours")
      expect(yield* groups.acquire(info, 0, "m2", 800)).toBeUndefined()
      yield* groups.renew(lease, 800)
      expect((yield* partitionOne(groups, "g")).owner).toBe("m1")
      // 1 s of real time: the lease lapsed by the database's clock
      yield* realSleep(1000)
      const lost = yield* Effect.either(groups.renew(lease, 800))
      expect(lost._tag === "Left" && lost.left._tag).toBe("LeaseLost")
      const taken = yield* groups.acquire(info, 0, "m2", 800)
      expect(taken?.token).toBe("m2:2")
    }).pipe(Effect.scoped), 30_000)

  it.live("a wait is woken by another process's append (found by polling the heads) and returns its fenced read in the same call", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_wait")
      const consumer = yield* backendIn(url, { schema, partitions: 2 })
      const producer = yield* backendIn(url, { schema, partitions: 2 })
      const info = yield* consumer.groups.ensureGroup("g", "things", "start")
      const leases = yield* Effect.forEach([0, 1], (p) => Effect.map(consumer.groups.acquire(info, p, "m1", 30_000), (l) => l!))
      for (const lease of leases) yield* claimAll(consumer.groups, lease, "m1", 3)
      const tails = yield* Effect.forEach(leases, (lease) => Effect.map(consumer.groups.read(lease, "m1", 10), (r) => r.tail!))
      const watches = leases.map((lease, i) => ({ lease, tail: tails[i]! }))
      const start = Date.now()
      const waiting = yield* Effect.fork(consumer.groups.wait("m1", watches, { blockMillis: 8000, count: 10, until: Effect.never }))
      yield* realSleep(300)
      const appended = yield* producer.store.append("things-7", [event(1), event(2)])
      const waited = yield* Fiber.join(waiting)
      const elapsed = Date.now() - start
      expect(waited.length).toBe(1)
      const w = waited[0]!
      expect(w.lease.partition).toBe(appended.positions[0]!.partition)
      expect(w.result instanceof ConsumerGroups.LeaseLost).toBe(false)
      if (!(w.result instanceof ConsumerGroups.LeaseLost)) {
        expect(w.result.deliveries.map((d) => d.id)).toEqual(appended.positions.map((p) => p.entryId))
      }
      // woken by the poller (5 ms after a change, backing off to 1 s), well before the wait's end
      expect(elapsed).toBeLessThan(6000)
      const status = yield* consumer.groups.status("g")
      expect(status.partitionStatus.map((p) => p.pending).reduce((a, b) => a + b, 0)).toBe(2)
    }).pipe(Effect.scoped), 30_000)

  it.live("acknowledgements in any order: pending counts and claims give exactly the entries not acknowledged, oldest first, their deliveries counted", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_acks")
      const { groups, store } = yield* backendIn(url, { schema, partitions: 1 })
      let round = 0
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(
            fc.integer({ min: 1, max: 12 }).chain((n) =>
              fc.tuple(fc.constant(n), fc.shuffledSubarray(Array.from({ length: n }, (_, i) => i)), fc.integer({ min: 1, max: 4 }))
            ),
            ([n, acked, chunk]) =>
              Effect.runPromise(Effect.gen(function*() {
                const group = `g${round++}`
                const category = `c${round}`
                yield* store.append(`${category}-1`, Array.from({ length: n }, (_, i) => event(i)))
                const info = yield* groups.ensureGroup(group, category, "start")
                const lease = (yield* groups.acquire(info, 0, "m1", 30_000))!
                yield* claimAll(groups, lease, "m1", 3)
                const read = yield* groups.read(lease, "m1", 100)
                expect(read.deliveries.length).toBe(n)
                // acknowledged a few at a time, in the order drawn
                for (let i = 0; i < acked.length; i += chunk) {
                  yield* groups.ack(lease, acked.slice(i, i + chunk).map((k) => read.deliveries[k]!))
                }
                // an acknowledgement repeated changes nothing
                if (acked.length > 0) yield* groups.ack(lease, [read.deliveries[acked[0]!]!])
                const left = read.deliveries.filter((_, k) => !acked.includes(k)).map((d) => d.id)
                expect((yield* partitionOne(groups, group)).pending).toBe(left.length)
                // a new owner takes exactly what is left, oldest first, delivered a second time
                const next = (yield* groups.acquire(info, 0, "m2", 30_000)) ?? undefined
                expect(next).toBeUndefined()
                yield* groups.release(lease)
                const lease2 = (yield* groups.acquire(info, 0, "m2", 30_000))!
                const claimed = yield* claimAll(groups, lease2, "m2", 3)
                expect(claimed.map((d) => d.id)).toEqual(left)
                expect(claimed.every((d) => d.deliveries === 2)).toBe(true)
                yield* groups.ack(lease2, claimed)
                expect((yield* partitionOne(groups, group)).pending).toBe(0)
                expect((yield* claimAll(groups, lease2, "m2", 3)).length).toBe(0)
              }))
          ),
          { numRuns: 25 }
        )
      )
    }).pipe(Effect.scoped), 120_000)
})
