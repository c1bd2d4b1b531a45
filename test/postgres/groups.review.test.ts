/**
 * The PostgreSQL consumer groups under the windows an adversarial review found (each of
 * these failed before its fix): a claim that reaches the server late and moves the fence
 * past the member's, lock order between a wait's read and a replay, a large replay
 * holding partition rows, acks with many positions acknowledged out of order, exact
 * dead-letter ids; and what the review found correct.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Fiber, Layer, Schema } from "effect"
import { ConsumerGroups, Contract, EventStore, Subscriber } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { partitionOf } from "../../src/internal/ids.js"
import { backendIn, claimAll, clientIn, clientLayer, postgresFile, realSleep } from "../support/postgres.js"
import { startProxy } from "../support/proxy.js"

const { fresh } = postgresFile()

const event = (n: number): EventStore.NewEvent => ({ eventId: crypto.randomUUID(), type: "Noted", data: { n } })

/** An entity id of `category` whose stream lands on partition `p` of `partitions`. */
const entityOn = (p: number, partitions: number) => {
  for (let i = 0;; i++) if (partitionOf(`e${i}`, partitions) === p) return `e${i}`
}

describe("PostgreSQL consumer groups: reviewed windows", () => {
  it.live("a first claim page that reaches the server after its retry moves the fence past the member's: its next read is refused, retryable, and once claimed again it reads", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("review_fence")
      const port = Number(new URL(url).port)
      const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy(port)), (p) => Effect.promise(() => p.close()))
      const proxied = url.replace(`:${port}`, `:${proxy.port}`)
      const a = yield* backendIn(proxied, { schema, partitions: 1, commandTimeout: "300 millis" })
      const b = yield* backendIn(url, { schema, partitions: 1 })
      const sql = yield* clientIn(url, 4)
      const info = yield* a.groups.ensureGroup("g", "things", "start")
      const lease = (yield* a.groups.acquire(info, 0, "m1", 30_000))!
      // the new owner's first claim page is held on its way 1.5 s; its caller gives up after 300 ms
      proxy.holdRequest((request) => request.includes(".claim("), 1500)
      const first = yield* Effect.either(a.groups.claim(lease, "m1", ConsumerGroups.claimStart, 100))
      expect(first._tag === "Left" && first.left._tag).toBe("StoreUnavailable")
      // another statement of the process (a heartbeat, an ack: the pool is LIFO) takes the
      // connection the held claim is queued on; the retried claim goes on another one and runs first
      yield* Effect.fork(Effect.either(a.groups.heartbeat("g", "m1", 30_000, new Map())))
      yield* realSleep(20)
      yield* claimAll(a.groups, lease, "m1", 100)
      // the held claim reaches the server now: the fence moves on a second time
      yield* realSleep(1800)
      const fence = yield* sql.unsafe(`SELECT fence::int FROM "${schema}".group_partitions WHERE grp = 'g'`).values
      expect(fence[0]![0]).toBe(2)
      // an event arrives; the owner (its lease held and renewed) reads the partition
      yield* b.store.append("things-1", [event(1)])
      yield* a.groups.renew(lease, 30_000)
      // the read is fenced off, and says so with a retryable failure (the engine then claims again)
      const fenced = yield* Effect.either(a.groups.read(lease, "m1", 10))
      expect(fenced._tag === "Left" && fenced.left._tag === "StoreUnavailable" && fenced.left.retryable).toBe(true)
      yield* claimAll(a.groups, lease, "m1", 100)
      const reads: Array<ReadonlyArray<string>> = []
      for (let i = 0; i < 3; i++) reads.push((yield* a.groups.read(lease, "m1", 10)).deliveries.map((d) => d.id))
      const status = (yield* b.groups.status("g")).partitionStatus[0]!
      expect({ reads, owner: status.owner, lag: status.lag }).toEqual({ reads: [["1-0"], [], []], owner: "m1", lag: 0 })
    }).pipe(Effect.scoped), 30_000)

  it.live("a wait's read and a replay lock partition rows in the same order: a replay under way does not deadlock a wait", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("review_deadlock")
      const { groups, store } = yield* backendIn(url, { schema, partitions: 2 })
      const sql = yield* clientIn(url, 4)
      const info = yield* groups.ensureGroup("g", "things", "start")
      const leases = yield* Effect.forEach([0, 1], (p) => Effect.map(groups.acquire(info, p, "m1", 60_000), (l) => l!))
      for (const lease of leases) yield* claimAll(groups, lease, "m1", 100)
      // dead letters on each partition: a dozen on partition 0 (a replay's loop fetches 10 at a time), one on 1
      for (const p of [0, 1]) {
        yield* store.append(`things-${entityOn(p, 2)}`, Array.from({ length: p === 0 ? 12 : 1 }, (_, k) => event(k)))
        for (const d of (yield* groups.read(leases[p]!, "m1", 100)).deliveries) {
          yield* groups.deadLetter(leases[p]!, d, { errorTag: "E", message: "m", attempts: 1 })
        }
      }
      // and something new on each, for the wait's read to take
      for (const p of [0, 1]) yield* store.append(`things-${entityOn(p, 2)}`, [event(10 + p)])
      // a tool holds partition 1's dead letter a moment (another replay or purge, say)
      const held = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
        yield* sql.unsafe(`SELECT 1 FROM "${schema}".dead_letters WHERE grp = 'g' AND partition = 1 FOR UPDATE`)
        yield* Deferred.succeed(held, undefined)
        yield* Deferred.await(release)
      })))
      yield* Deferred.await(held)
      // the replay takes partition 0's row, then waits for partition 1's dead letter
      const replay = yield* Effect.fork(Effect.either(groups.replay("g")))
      yield* realSleep(300)
      // the member's watches in the order it acquired its partitions: 1 then 0
      const watches = [leases[1]!, leases[0]!].map((lease) => ({ lease, tail: { log: lease.partition === 0 ? "12-0" : "1-0", redelivery: "0-0" } }))
      const waiting = yield* Effect.fork(Effect.either(groups.wait("m1", watches, { blockMillis: 3000, count: 10, until: Effect.never })))
      yield* realSleep(300)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      const waited = yield* Fiber.join(waiting)
      const replayed = yield* Fiber.join(replay)
      const reason = (r: Either.Either<unknown, { message: string }>) => (Either.isLeft(r) ? r.left.message : "ok")
      expect({ wait: reason(waited), replay: reason(replayed) }).toEqual({ wait: "ok", replay: "ok" })
    }).pipe(Effect.scoped), 30_000)

  it.live("a replay of 20,000 dead letters moves them as one set per partition: the owner's renewal during it keeps its lease", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("review_replay")
      const { groups, store } = yield* backendIn(url, { schema, partitions: 1 })
      const sql = yield* clientIn(url, 4)
      yield* store.append("things-1", [event(1)])
      const info = yield* groups.ensureGroup("g", "things", "start")
      // 20,000 parked entries (an outage's worth), put straight into the table
      yield* sql.unsafe(`INSERT INTO "${schema}".dead_letters SELECT 'g', 0, g, 1, '', 'things-1', 1, 'Noted', 'E', 'm', 1, 1, now() FROM generate_series(1, 20000) g`)
      const lease = (yield* groups.acquire(info, 0, "m1", 3000))!
      const start = Date.now()
      const replay = yield* Effect.fork(groups.replay("g"))
      yield* realSleep(200)
      // the owner renews well within its lease (heartbeat = leaseTtl / 3)
      const renewed = yield* Effect.either(groups.renew(lease, 3000))
      const renewMs = Date.now() - start
      const moved = yield* Fiber.join(replay)
      const replayMs = Date.now() - start
      console.log(`renew came back after ${renewMs} ms, the replay after ${replayMs} ms`)
      expect(moved).toBe(20000)
      expect({ renewed: renewed._tag === "Right" ? "ok" : renewed.left._tag, renewWaitedMoreThanTtl: renewMs > 3000, replayMs: replayMs < 3000 })
        .toEqual({ renewed: "ok", renewWaitedMoreThanTtl: false, replayMs: true })
    }).pipe(Effect.scoped), 120_000)

  it.live("with one entry stuck at the checkpoint and 30,000 acknowledged past it, an ack costs what it did with none", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("review_acks")
      const { groups, store } = yield* backendIn(url, { schema, partitions: 1 })
      const sql = yield* clientIn(url, 4)
      const N = 30_000
      for (let i = 0; i < N / 1000; i++) yield* store.append(`things-${i}`, Array.from({ length: 1000 }, (_, k) => event(k)))
      const info = yield* groups.ensureGroup("g", "things", "start")
      const lease = (yield* groups.acquire(info, 0, "m1", 600_000))!
      yield* claimAll(groups, lease, "m1", 100)
      const all: Array<ConsumerGroups.Delivery> = []
      for (;;) {
        const r = yield* groups.read(lease, "m1", 5000)
        all.push(...r.deliveries)
        if (r.tail !== undefined) break
      }
      const epoch = ConsumerGroups.epochOf(lease)
      /** Server time of 40 one-entry acks (one call each), from EXPLAIN ANALYZE. */
      const serverMs = (ids: ReadonlyArray<number>) =>
        Effect.map(
          sql.unsafe(`EXPLAIN ANALYZE SELECT (SELECT r_status FROM "${schema}".ack(ARRAY['g'], ARRAY[0], ARRAY['m1'], ARRAY[${epoch}]::bigint[], ARRAY[1], ARRAY[0]::smallint[], ARRAY[id]::bigint[])) FROM unnest($1::bigint[]) id`, [ids as Array<number>]).values,
          (rows) => Number(/Execution Time: ([0-9.]+)/.exec(rows.map((r) => String(r[0])).join("\n"))![1])
        )
      // position 1 is still being handled; the rest is acknowledged in order
      const early = yield* serverMs(Array.from({ length: 40 }, (_, k) => 2 + k))
      for (let i = 41; i < N - 40; i += 500) yield* groups.ack(lease, all.slice(i, Math.min(i + 500, N - 40)))
      const late = yield* serverMs(Array.from({ length: 40 }, (_, k) => N - 39 + k))
      console.log(`40 one-entry acks: ${early.toFixed(1)} ms of server time with ~0 acknowledged above the checkpoint, ${late.toFixed(1)} ms with ~${N}`)
      expect((yield* groups.status("g")).partitionStatus[0]!.pending).toBe(1)
      expect(late).toBeLessThan(early * 10)
    }).pipe(Effect.scoped), 300_000)

  it.live("dead-letter ids are matched exactly: a purge of an id not in the listing deletes nothing", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("review_ids")
      const { groups, store } = yield* backendIn(url, { schema, partitions: 1 })
      const info = yield* groups.ensureGroup("g", "things", "start")
      const lease = (yield* groups.acquire(info, 0, "m1", 60_000))!
      yield* claimAll(groups, lease, "m1", 100)
      yield* store.append("things-1", [event(1)])
      const d = (yield* groups.read(lease, "m1", 10)).deliveries[0]!
      yield* groups.deadLetter(lease, d, { errorTag: "E", message: "m", attempts: 1 })
      const listed = (yield* groups.deadLetters("g")).map((x) => x.id)
      expect(listed).toEqual(["0:1-0"])
      // none of these is an id of the listing (memory and Redis compare ids exactly)
      const purged = yield* groups.purge("g", ["0:1-9"])
      const replayed = yield* groups.replay("g", ["0:1-7", "0x0:1-0", " 0:1-0", "0.0:1-0"])
      expect({ replayed, purged, left: (yield* groups.deadLetters("g")).map((x) => x.id) }).toEqual({ replayed: 0, purged: 0, left: ["0:1-0"] })
    }).pipe(Effect.scoped), 30_000)

  it.live("a read takes redeliveries before the log within its count, acks outside (acked, delivered] change nothing, a repeated dead letter parks once, racing replays move each once, status figures are exact", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("review_ok")
      const { groups, store } = yield* backendIn(url, { schema, partitions: 1 })
      const info = yield* groups.ensureGroup("g", "things", "start")
      const lease = (yield* groups.acquire(info, 0, "m1", 60_000))!
      yield* claimAll(groups, lease, "m1", 100)
      yield* store.append("things-1", Array.from({ length: 3 }, (_, k) => event(k)))
      const first = (yield* groups.read(lease, "m1", 10)).deliveries
      for (const d of first) {
        yield* groups.deadLetter(lease, d, { errorTag: "E", message: "m", attempts: 1 })
        yield* groups.deadLetter(lease, d, { errorTag: "E", message: "again", attempts: 2 })
      }
      expect((yield* groups.deadLetters("g")).length).toBe(3)
      const [r1, r2] = yield* Effect.all([groups.replay("g"), groups.replay("g")], { concurrency: 2 })
      expect(r1 + r2).toBe(3)
      yield* store.append("things-2", Array.from({ length: 5 }, (_, k) => event(k)))
      // an ack of a position not delivered yet (8) and of one acknowledged long ago (1)
      const fake = (id: string): ConsumerGroups.Delivery => ({ ...first[0]!, id, source: "log" })
      yield* groups.ack(lease, [fake("8-0"), fake("1-0")])
      let st = (yield* groups.status("g")).partitionStatus[0]!
      expect([st.pending, st.lag, st.deadLetters]).toEqual([0, 8, 0])
      const read = yield* groups.read(lease, "m1", 4)
      expect(read.deliveries.map((d) => `${d.source}:${d.id}:${d.event instanceof Error ? "?" : d.event.version}`))
        .toEqual(["redelivery:1-0:1", "redelivery:2-0:2", "redelivery:3-0:3", "log:4-0:1"])
      expect(read.tail).toBeUndefined()
      st = (yield* groups.status("g")).partitionStatus[0]!
      expect([st.pending, st.lag]).toEqual([4, 4])
      const rest = yield* groups.read(lease, "m1", 10)
      expect(rest.deliveries.map((d) => d.id)).toEqual(["5-0", "6-0", "7-0", "8-0"])
      expect(rest.tail).toEqual({ log: "8-0", redelivery: "3-0" })
      // a new owner: redeliveries first, then the log, delivered a second time
      yield* groups.release(lease)
      const lease2 = (yield* groups.acquire(info, 0, "m2", 60_000))!
      expect(lease2.token).toBe("m2:2")
      const claimed = yield* claimAll(groups, lease2, "m2", 100)
      expect(claimed.map((d) => `${d.source}:${d.id}:${d.deliveries}`)).toEqual([
        "redelivery:1-0:2", "redelivery:2-0:2", "redelivery:3-0:2", "log:4-0:2", "log:5-0:2", "log:6-0:2", "log:7-0:2", "log:8-0:2"
      ])
      expect(yield* groups.begin(lease2, claimed[0]!)).toBe(2)
      expect(yield* groups.begin(lease2, claimed[3]!)).toBe(2)
      yield* groups.ack(lease2, claimed)
      st = (yield* groups.status("g")).partitionStatus[0]!
      expect([st.pending, st.lag]).toEqual([0, 0])
      // the old lease is refused everywhere
      expect((yield* Effect.either(groups.ack(lease, claimed)))._tag).toBe("Left")
      expect((yield* Effect.either(groups.read(lease, "m1", 10)))._tag).toBe("Left")
    }).pipe(Effect.scoped), 30_000)

  it.live("a subscriber whose partition was claimed by a claim it did not hear back from claims it again and goes on handling (no hot loop of fenced reads)", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("review_fence_engine")
      const layer = PostgresChronicle.layer({ schema, partitions: 1 }).pipe(Layer.provide(clientLayer(url, 4)))
      const ctx = yield* Layer.build(layer)
      const other = yield* backendIn(url, { schema, partitions: 1 })
      const sql = yield* clientIn(url, 4)
      yield* sql.unsafe("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
      const contract = Contract.make("fenced", { Happened: { n: Schema.Int } })
      const handled: Array<number> = []
      yield* Effect.forkScoped(Subscriber.run(contract, {
        group: "g",
        consumer: "c",
        leaseTtl: "2 seconds",
        heartbeat: "200 millis",
        handlers: { Happened: (e: { readonly n: number }) => Effect.sync(() => handled.push(e.n)) }
      }).pipe(Effect.provide(ctx)))
      const happened = (n: number): EventStore.NewEvent => ({ eventId: crypto.randomUUID(), type: "Happened", data: { n } })
      yield* other.store.append("fenced-1", [happened(1)])
      const until = (f: () => boolean, ms: number) =>
        Effect.gen(function*() {
          const end = Date.now() + ms
          while (!f() && Date.now() < end) yield* realSleep(20)
        })
      yield* until(() => handled.includes(1), 10_000)
      expect(handled).toEqual([1])
      yield* realSleep(300)
      // the member's lease, as the database has it; a first claim page of that lease the member
      // did not hear back from (given up on, then run on the server after its retry) moves the fence
      const row = (yield* sql.unsafe(`SELECT owner, epoch::text FROM "${schema}".group_partitions WHERE grp = 'g'`).values)[0]!
      const lease: ConsumerGroups.Lease = { group: "g", category: "fenced", partition: 0, token: `${row[0]}:${row[1]}` }
      yield* other.groups.claim(lease, String(row[0]), ConsumerGroups.claimStart, 100)
      const calls = Effect.map(
        sql.unsafe(`SELECT coalesce(sum(calls), 0)::int8::text FROM pg_stat_statements WHERE query LIKE '%.read(%'`).values,
        (rows) => Number(rows[0]?.[0] ?? 0)
      )
      yield* other.store.append("fenced-1", [happened(2)])
      const before = yield* calls
      yield* until(() => handled.includes(2), 4000)
      const reads = (yield* calls) - before
      const owner = (yield* sql.unsafe(`SELECT owner FROM "${schema}".group_partitions WHERE grp = 'g' AND lease_until > clock_timestamp()`).values)[0]?.[0]
      console.log(`handled ${JSON.stringify(handled)}; ${reads} calls of read in about 4 s; owner ${owner}`)
      expect({ handled, owner, fewReads: reads < 200 }).toEqual({ handled: [1, 2], owner: row[0], fewReads: true })
    }).pipe(Effect.scoped), 60_000)
})
