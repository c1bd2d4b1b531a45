/**
 * Redis faults that memory cannot have, each forced at its dangerous moment:
 * - a consumer frozen with SIGSTOP past its lease while it holds a backlog, then resumed:
 *   its reads are refused (fenced by the lease), it starts nothing it still holds, and
 *   the new owner handles everything in order;
 * - a dropped connection while a heartbeat is in flight (CLIENT PAUSE WRITE, then CLIENT
 *   KILL TYPE normal): a subscriber and a projection both go on;
 * - the group deleted under a running subscriber (XGROUP DESTROY): a few calls a second,
 *   then a typed error.
 * Each uses a redis-server of its own (CLIENT KILL and CLIENT PAUSE reach every client of
 * a server).
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, type Context, Deferred, Effect, Exit, Fiber, Layer, Logger, Option, Schema } from "effect"
import { type ConsumerGroups, Contract, type EventStore, Producer, Projection, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { DeliveryChecker, SubscriberSuite } from "effect-chronicle/testing"
import { Redis } from "ioredis"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { startRedisServer } from "./support/redisServer.js"
import { figures } from "./support/figures.js"

const { waitUntil } = SubscriberSuite
const consumerScript = fileURLToPath(new URL("./support/checkedConsumer.ts", import.meta.url))

const Events = Contract.make("flt", { Happened: { n: Schema.Int }, Followed: { n: Schema.Int } })

/** A redis-server of the test's own, stopped with its scope. */
const ownServer = Effect.acquireRelease(Effect.promise(() => startRedisServer()), (s) => Effect.promise(() => s.stop()))

type Services = EventStore.EventStore | ConsumerGroups.ConsumerGroups | Projection.ProjectionStore

const storeAt = (url: string, partitions: number) =>
  Effect.map(
    Layer.build(RedisChronicle.layer({ prefix: "flt", partitions }).pipe(Layer.provide(RedisClient.layer({ url, commandTimeout: "1 second" })))),
    (ctx) => ctx as Context.Context<Services>
  )

/** One command on a connection of its own (CLIENT KILL ends the connection that sends it too). */
const command = (url: string, ...args: ReadonlyArray<string | number>) =>
  Effect.promise(async () => {
    const r = new Redis(url, { maxRetriesPerRequest: 0, lazyConnect: true })
    await r.connect()
    const reply = await r.call(String(args[0]), ...args.slice(1).map(String)).catch((e: unknown) => e)
    r.disconnect()
    return reply
  })

const produce = (n: number, from: number, entities = 10) =>
  Effect.gen(function*() {
    const producer = yield* Producer.make(Events)
    const expected: Array<DeliveryChecker.Expected> = []
    for (let i = from; i < from + n; i++) {
      // retried until it settles: the server may be paused, or the connection just dropped
      for (let attempt = 0;; attempt++) {
        const r = yield* Effect.either(producer.Happened({ n: i }, { entityId: `e${i % entities}`, eventId: uuidFor(i) }))
        if (r._tag === "Right") break
        if (attempt > 200) return yield* Effect.dieMessage(`append ${i} never settled`)
        yield* Effect.sleep("50 millis")
      }
      expected.push({ stream: `flt-e${i % entities}`, version: Math.floor(i / entities) + 1 })
    }
    return expected
  })

const uuidFor = (i: number) => `00000000-0000-4000-8000-${i.toString(16).padStart(12, "0")}`

/**
 * One member over one partition, its first 10 events handled; then `tamper` changes the
 * group on the server behind the member's back (as a failover without durability can),
 * nothing new is appended, and the group must become idle again within a wait. Returns
 * what was handled after the first 10 (nothing left pending, the member still running).
 */
const afterServerLost = (
  tamper: (raw: Redis, log: string, entryIds: ReadonlyArray<string>, owner: string) => Effect.Effect<void, unknown, ConsumerGroups.ConsumerGroups>
) =>
  Effect.gen(function*() {
    const server = yield* ownServer
    const ctx = yield* storeAt(server.url, 1)
    return yield* Effect.gen(function*() {
      const handled: Array<number> = []
      const sub = yield* Effect.fork(Subscriber.run(Events, {
        group: "g",
        leaseTtl: "2 seconds",
        heartbeat: "300 millis",
        handlers: { Happened: (e) => Effect.sync(() => handled.push(e.n)), Followed: () => Effect.void }
      }))
      yield* produce(10, 0)
      yield* Subscriber.awaitIdle("g", { pollInterval: "50 millis" }).pipe(Effect.timeout("20 seconds"))
      expect(handled.length).toBe(10)
      const owner = (yield* Subscriber.status("g")).partitionStatus[0]!.owner!
      const raw = new Redis(server.url)
      yield* Effect.addFinalizer(() => Effect.sync(() => raw.disconnect()))
      const log = "flt:{flt:0}:log"
      const entries = (yield* Effect.promise(() => raw.xrange(log, "-", "+"))) as Array<[string, Array<string>]>
      yield* tamper(raw, log, entries.map(([id]) => id), owner)
      yield* Subscriber.awaitIdle("g", { pollInterval: "50 millis" }).pipe(Effect.timeout("10 seconds"))
      expect((yield* Subscriber.status("g")).partitionStatus[0]!.pending).toBe(0)
      expect(sub.unsafePoll()).toBe(null)
      yield* Fiber.interrupt(sub)
      return handled.slice(10)
    }).pipe(Effect.provide(ctx))
  }).pipe(Effect.scoped)

/** Drops every client connection while a write is held in flight: CLIENT PAUSE WRITE, then CLIENT KILL. */
const dropConnectionsMidWrite = (url: string) =>
  Effect.gen(function*() {
    yield* command(url, "CLIENT", "PAUSE", 500, "WRITE")
    // heartbeats (scripts that write) are sent every 200 ms: some are held now
    yield* Effect.sleep("350 millis")
    yield* command(url, "CLIENT", "KILL", "TYPE", "normal")
  })

/** A consumer process of group "g" over category "flt" (4 partitions, lease 2 s, heartbeat 500 ms), recording to dir/<name>.jsonl. */
const spawnFlt = (url: string, dir: string, name: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const output: Array<string> = []
      const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", consumerScript], {
        env: {
          ...process.env,
          URL: url,
          PREFIX: "flt",
          CATEGORY: "flt",
          GROUP: "g",
          CONSUMER: name,
          RECORD: join(dir, `${name}.jsonl`),
          PARTITIONS: "4",
          LEASE_TTL_MS: "2000",
          HEARTBEAT_MS: "500",
          HANDLER_MS: "5",
          CONCURRENCY: "4",
          READ_COUNT: "50"
        },
        stdio: ["ignore", "pipe", "pipe"]
      })
      child.stdout!.on("data", (c: Buffer) => output.push(...c.toString("utf8").split("\n").filter((l) => l)))
      child.stderr!.on("data", (c: Buffer) => output.push(...c.toString("utf8").split("\n").filter((l) => l)))
      return { child, output }
    }),
    ({ child }) => Effect.sync(() => {
      child.kill("SIGCONT")
      child.kill("SIGKILL")
    })
  )

/**
 * The recorded histories of consumers a and b against what was appended: printed, then
 * no order violation, nothing lost, no late start, both processes alive, nothing left
 * pending or unread in group "g".
 */
const expectCleanHistory = (
  test: string,
  dir: string,
  expected: ReadonlyArray<DeliveryChecker.Expected>,
  consumers: ReadonlyArray<{ readonly child: ChildProcess }>,
  extra: Record<string, number> = {}
) =>
  Effect.gen(function*() {
    const history = DeliveryChecker.readFile(join(dir, "a.jsonl"), join(dir, "b.jsonl"))
    const report = DeliveryChecker.check(history, { expected })
    figures({
      test,
      events: expected.length,
      invocations: report.invocations,
      redeliveries: report.redeliveries,
      order_violations: report.orderViolations.length,
      lost: report.lost.length,
      late_starts: report.lateStarts.length,
      ...extra
    })
    expect(report.orderViolations.slice(0, 3).map((v) => v.reason)).toEqual([])
    expect(report.lost).toEqual([])
    expect(report.lateStarts).toEqual([])
    for (const { child } of consumers) expect(child.exitCode).toBe(null)
    const status = yield* Subscriber.status("g")
    expect(status.partitionStatus.every((p) => p.pending === 0 && p.lag === 0)).toBe(true)
  })

describe("consumers under Redis faults", () => {
  it.live("a consumer frozen past its lease with a backlog in hand: resumed, its reads are refused, it starts nothing late, order holds, nothing is lost", () =>
    Effect.gen(function*() {
      const server = yield* ownServer
      const ctx = yield* storeAt(server.url, 4)
      const dir = mkdtempSync(join(tmpdir(), "chronicle-stall-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const spawnConsumer = (name: string) => spawnFlt(server.url, dir, name)
      yield* Effect.gen(function*() {
        const a = yield* spawnConsumer("a")
        yield* waitUntil("a to own every partition", Subscriber.status("g").pipe(
          Effect.map((s) => s.partitionStatus.every((p) => p.owner?.startsWith("a:"))),
          Effect.orElseSucceed(() => false)
        ), 60_000)
        const b = yield* spawnConsumer("b")
        yield* waitUntil("two owners", Subscriber.status("g").pipe(
          Effect.map((s) => new Set(s.partitionStatus.map((p) => p.owner?.split(":")[0])).size === 2 && s.members.length === 2),
          Effect.orElseSucceed(() => false)
        ), 60_000)
        // a backlog: hundreds of events per partition, handled at 5 ms each, 4 at a time
        const expected = yield* produce(2000, 0, 40)
        yield* Effect.sleep("300 millis")
        a.child.kill("SIGSTOP")
        yield* waitUntil("b to own every partition", Subscriber.status("g").pipe(
          Effect.map((s) => s.partitionStatus.every((p) => p.owner?.startsWith("b:"))),
          Effect.orElseSucceed(() => false)
        ), 10_000)
        // a stays frozen while b works through a's backlog and new events arrive
        expected.push(...(yield* produce(400, 2000, 40)))
        yield* Effect.sleep("1 second")
        const before = a.output.length
        a.child.kill("SIGCONT")
        yield* waitUntil("a to notice", Effect.sync(() => a.output.slice(before).some((l) => l.includes("lost the lease"))), 10_000)
        yield* Subscriber.awaitIdle("g", { pollInterval: "50 millis" }).pipe(Effect.timeout("30 seconds"))
        yield* expectCleanHistory("stalled-owner", dir, expected, [a, b])
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 150_000)

  it.live("a consumer frozen while it waits: its blocked read is served and its queued reads run while it is stopped; the next owner takes those entries, it starts nothing late when resumed, nothing is lost", () =>
    Effect.gen(function*() {
      const server = yield* ownServer
      const ctx = yield* storeAt(server.url, 4)
      const dir = mkdtempSync(join(tmpdir(), "chronicle-waitstall-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      yield* Effect.gen(function*() {
        const a = yield* spawnFlt(server.url, dir, "a")
        yield* waitUntil("a to own every partition", Subscriber.status("g").pipe(
          Effect.map((s) => s.partitionStatus.every((p) => p.owner?.startsWith("a:"))),
          Effect.orElseSucceed(() => false)
        ), 60_000)
        const b = yield* spawnFlt(server.url, dir, "b")
        yield* waitUntil("two owners", Subscriber.status("g").pipe(
          Effect.map((s) => new Set(s.partitionStatus.map((p) => p.owner?.split(":")[0])).size === 2 && s.members.length === 2),
          Effect.orElseSucceed(() => false)
        ), 60_000)
        const expected = yield* produce(200, 0, 40)
        yield* Subscriber.awaitIdle("g", { pollInterval: "50 millis" }).pipe(Effect.timeout("30 seconds"))
        // a is drained and waiting: frozen now, then entries arrive for its partitions. Both
        // members' blocking reads are on the server first (on a busy machine a member may
        // still be between two waits when the group is idle)
        const raw = new Redis(server.url)
        yield* Effect.addFinalizer(() => Effect.sync(() => raw.disconnect()))
        yield* waitUntil("both members blocked in their waits", Effect.promise(() => raw.client("LIST") as Promise<string>).pipe(
          Effect.map((list) => list.split("\n").filter((line) => / flags=b /.test(line) && / cmd=xread /.test(line)).length >= 2)
        ), 10_000)
        a.child.kill("SIGSTOP")
        expected.push(...(yield* produce(400, 200, 40)))
        yield* Effect.sleep("200 millis")
        // the dangerous moment was reached: the server served the frozen member's blocked
        // read and ran its queued reads, which took entries into its pending list while it
        // was stopped (its lease still held then)
        const heldByA = yield* Effect.promise(() =>
          Promise.all(Array.from({ length: 4 }, (_, p) =>
            (raw.xpending(`flt:{flt:${p}}:log`, "g") as Promise<[number, string, string, Array<[string, string]> | null]>).then(([, , , consumers]) =>
              (consumers ?? []).filter(([name]) => name.startsWith("a:")).reduce((n, [, count]) => n + Number(count), 0)
            )))).pipe(Effect.map((xs) => xs.reduce((a, b) => a + b, 0)))
        expect(heldByA).toBeGreaterThan(0)
        yield* waitUntil("b to own every partition", Subscriber.status("g").pipe(
          Effect.map((s) => s.partitionStatus.every((p) => p.owner?.startsWith("b:"))),
          Effect.orElseSucceed(() => false)
        ), 10_000)
        expected.push(...(yield* produce(200, 600, 40)))
        yield* Effect.sleep("500 millis")
        a.child.kill("SIGCONT")
        yield* Subscriber.awaitIdle("g", { pollInterval: "50 millis" }).pipe(Effect.timeout("30 seconds"))
        yield* Effect.sleep("1 second")
        yield* expectCleanHistory("frozen-waiter", dir, expected, [a, b], { held_by_frozen: heldByA })
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 150_000)

  it.live("a dropped connection with a heartbeat in flight: the subscriber keeps handling", () =>
    Effect.gen(function*() {
      const server = yield* ownServer
      const ctx = yield* storeAt(server.url, 2)
      yield* Effect.gen(function*() {
        const handled = new Set<number>()
        const sub = yield* Effect.fork(Subscriber.run(Events, {
          group: "g",
          leaseTtl: "2 seconds",
          heartbeat: "200 millis",
          handlers: { Happened: (e) => Effect.sync(() => handled.add(e.n)), Followed: () => Effect.void }
        }))
        yield* produce(5, 0)
        yield* waitUntil("the first events", Effect.sync(() => handled.size === 5))
        yield* dropConnectionsMidWrite(server.url)
        yield* produce(10, 5)
        yield* waitUntil("the events after the drop", Effect.sync(() => handled.size === 15), 20_000)
        expect(sub.unsafePoll()).toBe(null)
        yield* waitUntil("its health to be back", Subscriber.status("g").pipe(
          Effect.map((s) => s.local.length === 1 && s.local[0]!.failing.length === 0),
          Effect.orElseSucceed(() => false)
        ), 10_000)
        yield* Fiber.interrupt(sub)
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 60_000)

  it.live("a group whose position falls behind what its member last saw (the last reads lost, as in a failover without durability) is read again within a wait", () =>
    Effect.gen(function*() {
      const again = yield* afterServerLost((raw, log, ids) =>
        Effect.gen(function*() {
          // the group's position moves back to the 5th entry while the member waits after the 10th
          yield* Effect.promise(() => raw.xgroup("SETID", log, "g", ids[4]!))
          expect((yield* Subscriber.status("g")).partitionStatus[0]!.lag).toBeGreaterThan(0)
        }))
      // nothing new is appended: only a read, not a wait for what follows the tail, finds them
      expect(again.slice().sort((a, b) => a - b)).toEqual([5, 6, 7, 8, 9])
    }), 60_000)

  it.live("an entry pending for its owner that the owner has no record of (its acknowledgement lost, as in a failover without durability) is taken again and handled within a wait", () =>
    Effect.gen(function*() {
      const again = yield* afterServerLost((raw, log, ids, owner) =>
        Effect.gen(function*() {
          // the 4th entry is pending again for the owner, as a server that lost its ack has it
          yield* Effect.promise(() => raw.xclaim(log, "g", owner, 0, ids[3]!, "FORCE"))
          expect((yield* Subscriber.status("g")).partitionStatus[0]!.pending).toBe(1)
        }))
      // nothing new arrives: the read that follows an empty wait counts it, and the owner takes it again
      expect(again).toEqual([3])
    }), 60_000)

  it.live("entries left pending for the owner while it works through a backlog are taken again, and a busy owner whose acks are in flight takes nothing again that it holds", () =>
    Effect.gen(function*() {
      const server = yield* ownServer
      const ctx = yield* storeAt(server.url, 2)
      yield* Effect.gen(function*() {
        const counts = new Map<number, number>()
        const warnings: Array<string> = []
        const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Warning") warnings.push(Array.isArray(message) ? message.join(" ") : String(message))
        }))
        const sub = yield* Effect.fork(Subscriber.run(Events, {
          group: "g",
          concurrency: 8,
          readCount: 50,
          handlers: {
            Happened: (e) => Effect.zipRight(Effect.sleep(e.n % 3 === 0 ? "1 millis" : "0 millis"), Effect.sync(() => counts.set(e.n, (counts.get(e.n) ?? 0) + 1))),
            Followed: () => Effect.void
          }
        }).pipe(Effect.provide(logger)))
        yield* produce(100, 0, 40)
        yield* Subscriber.awaitIdle("g", { pollInterval: "50 millis" }).pipe(Effect.timeout("20 seconds"))
        // a backlog, handled by 8 workers with acks batched and in flight throughout
        const backlog = Effect.fork(produce(3000, 100, 40))
        const producing = yield* backlog
        yield* waitUntil("a backlog being handled", Effect.sync(() => counts.size > 400), 20_000)
        expect(warnings.filter((w) => w.includes("does not hold"))).toEqual([])
        // two handled entries of partition 0 are pending again for its owner, mid-backlog
        const status = yield* Subscriber.status("g")
        const owner = status.partitionStatus[0]!.owner!
        const raw = new Redis(server.url)
        yield* Effect.addFinalizer(() => Effect.sync(() => raw.disconnect()))
        const log = "flt:{flt:0}:log"
        const first = (yield* Effect.promise(() => raw.xrange(log, "-", "+", "COUNT", 2))) as Array<[string, Array<string>]>
        const again = first.map(([, fields]) => Number(JSON.parse(fields[fields.indexOf("d") + 1]!).n))
        yield* Effect.promise(() => raw.xclaim(log, "g", owner, 0, first[0]![0], first[1]![0], "FORCE"))
        yield* Fiber.join(producing)
        yield* Subscriber.awaitIdle("g", { pollInterval: "50 millis" }).pipe(Effect.timeout("30 seconds"))
        // everything handled; the two taken again handled twice, nothing else more than once
        expect(counts.size).toBe(3100)
        expect(again.map((n) => counts.get(n))).toEqual([2, 2])
        expect(Array.from(counts.entries()).filter(([n, c]) => c > 1 && !again.includes(n))).toEqual([])
        const noticed = warnings.filter((w) => w.includes("does not hold")).length
        expect(noticed).toBeGreaterThanOrEqual(1)
        expect(noticed).toBeLessThanOrEqual(2)
        expect(sub.unsafePoll()).toBe(null)
        yield* Fiber.interrupt(sub)
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 90_000)

  it.live("a dropped connection with a lease renewal in flight: a projection keeps applying", () =>
    Effect.gen(function*() {
      const server = yield* ownServer
      const ctx = yield* storeAt(server.url, 2)
      yield* Effect.gen(function*() {
        const applied = new Set<number>()
        const totals = Projection.make({
          name: "totals",
          contract: Events,
          leaseTtl: 2000,
          handlers: { Happened: (e: { readonly n: number }) => Effect.sync(() => applied.add(e.n)) },
          reset: Effect.sync(() => applied.clear())
        })
        const run = yield* Effect.fork(Projection.run(totals))
        yield* produce(5, 0)
        yield* waitUntil("the first events", Effect.sync(() => applied.size === 5))
        yield* dropConnectionsMidWrite(server.url)
        yield* produce(10, 5)
        yield* waitUntil("the events after the drop", Effect.sync(() => applied.size === 15), 20_000)
        expect(run.unsafePoll()).toBe(null)
        yield* Fiber.interrupt(run)
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 60_000)

  it.live("awaitIdle waits through dropped connections while a backlog is in hand, and returns once it is handled", () =>
    Effect.gen(function*() {
      const server = yield* ownServer
      const ctx = yield* storeAt(server.url, 2)
      yield* Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        const handled = new Set<number>()
        const sub = yield* Effect.fork(Subscriber.run(Events, {
          group: "g",
          handlers: { Happened: (e) => Deferred.await(gate).pipe(Effect.andThen(() => handled.add(e.n))), Followed: () => Effect.void }
        }))
        yield* produce(20, 0)
        const idle = yield* Effect.fork(Subscriber.awaitIdle("g", { pollInterval: "5 millis" }))
        for (let i = 0; i < 6; i++) {
          yield* command(server.url, "CLIENT", "KILL", "TYPE", "normal")
          yield* Effect.sleep("150 millis")
        }
        expect(idle.unsafePoll()).toBe(null)
        expect(handled.size).toBe(0)
        yield* Deferred.succeed(gate, undefined)
        const exit = yield* Fiber.await(idle).pipe(Effect.timeout("30 seconds"))
        expect(Exit.isSuccess(exit)).toBe(true)
        expect(handled.size).toBe(20)
        yield* Fiber.interrupt(sub)
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 60_000)

  it.live("the group deleted under a running subscriber (XGROUP DESTROY): a few calls a second, then a typed error", () =>
    Effect.gen(function*() {
      const server = yield* ownServer
      const ctx = yield* storeAt(server.url, 2)
      const raw = yield* Effect.acquireRelease(Effect.sync(() => new Redis(server.url)), (r) => Effect.sync(() => r.disconnect()))
      yield* Effect.gen(function*() {
        const sub = yield* Effect.fork(Subscriber.run(Events, {
          group: "g",
          leaseTtl: "2 seconds",
          heartbeat: "200 millis",
          handlers: { Happened: () => Effect.void, Followed: () => Effect.void }
        }))
        yield* produce(5, 0)
        yield* Subscriber.awaitIdle("g").pipe(Effect.timeout("20 seconds"))
        for (let p = 0; p < 2; p++) yield* Effect.promise(() => raw.xgroup("DESTROY", `flt:{flt:${p}}:log`, "g"))
        // something to read, so that the reader goes to the server
        yield* produce(2, 5)
        // the reader's commands (inside the read and claim scripts), counted whether they succeed or fail
        const calls = () => Effect.promise(async () => {
          const lines = (await raw.info("commandstats")).split("\r\n").filter((l) => /^cmdstat_(xreadgroup|xautoclaim):/.test(l))
          let total = 0
          for (const line of lines) {
            const n = (field: string) => Number(new RegExp(`[:,]${field}=(\\d+)`).exec(line)?.[1] ?? 0)
            total += n("calls") + n("rejected_calls")
          }
          return total
        })
        const before = yield* calls()
        yield* Effect.sleep("3 seconds")
        const after = yield* calls()
        const perSecond = (after - before) / 3
        const exit = yield* Fiber.await(sub).pipe(Effect.timeout("20 seconds"))
        figures(({ test: "group-destroyed", calls_per_sec: +perSecond.toFixed(1), ended: Exit.isExit(exit) }))
        expect(perSecond).toBeGreaterThan(0)
        expect(perSecond).toBeLessThan(5)
        expect(Exit.isExit(exit) && Exit.isFailure(exit)).toBe(true)
        const failure = Exit.isExit(exit) && Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
        expect(Option.map(failure, (e) => (e as { readonly _tag: string })._tag)).toEqual(Option.some("GroupNotFound"))
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 60_000)
})
