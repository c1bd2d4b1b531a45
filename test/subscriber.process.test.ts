/**
 * Consumers in processes of their own, killed (SIGKILL), frozen past their lease (SIGSTOP
 * then SIGCONT) and crashing in a loop, against a real Redis.
 */
import { describe, expect, it } from "@effect/vitest"
import { type Context, Effect, Layer, Schema } from "effect"
import { ConsumerGroups, Contract, DeadLetters, type EventStore, Producer, Subscriber } from "effect-chronicle"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { SubscriberSuite } from "effect-chronicle/testing"
import { rawRedis, redisStore, redisUrl, uniquePrefix } from "./support/redis.js"
import { figures } from "./support/figures.js"

const { inOrderPerEntity, waitUntil } = SubscriberSuite

const url = redisUrl()
const script = fileURLToPath(new URL("./support/consumerProcess.ts", import.meta.url))

interface Child {
  readonly process: ChildProcess
  readonly output: Array<string>
  readonly exited: Promise<number | null>
}

const startChild = (args: ReadonlyArray<string>, env: Record<string, string> = {}): Child => {
  const child = spawn(process.execPath, ["--import", "tsx", script, url, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const output: Array<string> = []
  const collect = (chunk: Buffer) => output.push(...chunk.toString("utf8").split("\n").filter((l) => l.length > 0))
  child.stdout!.on("data", collect)
  child.stderr!.on("data", collect)
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  return { process: child, output, exited }
}

/** A child process for the test's scope: killed (by its PID) when the scope closes, if still alive. */
const child = (args: ReadonlyArray<string>, env?: Record<string, string>) =>
  Effect.acquireRelease(Effect.sync(() => startChild(args, env)), (c) =>
    Effect.promise(async () => {
      if (c.process.exitCode === null && c.process.signalCode === null) {
        c.process.kill("SIGCONT")
        c.process.kill("SIGKILL")
        await c.exited
      }
    }))

const ownersAre = (group: string, f: (owners: ReadonlyArray<string | undefined>, members: number) => boolean) =>
  Subscriber.status(group).pipe(
    Effect.map((s) => f(s.partitionStatus.map((p) => p.owner), s.members.length)),
    Effect.orElseSucceed(() => false)
  )

interface Record_ {
  readonly consumer: string
  readonly stream: string
  readonly version: number
  readonly eventId: string
}

const parse = (line: string): Record_ => {
  const [consumer, stream, version, eventId] = line.split("|")
  return { consumer: consumer!, stream: stream!, version: Number(version), eventId: eventId! }
}

const contractFor = (category: string) => Contract.make(category, { Happened: { n: Schema.Int }, Followed: { n: Schema.Int } })

/** The in-process consumer, recording into the same list as the children. */
const localConsumer = (prefix: string, category: string, group: string) =>
  Effect.gen(function*() {
    const recorder = yield* rawRedis(url)
    return yield* Effect.forkScoped(Subscriber.run(contractFor(category), {
      group,
      consumer: "p",
      leaseTtl: "2 seconds",
      heartbeat: "500 millis",
      readCount: 50,
      concurrency: 4,
      handlers: {
        Happened: (_, ctx) =>
          Effect.gen(function*() {
            yield* Effect.promise(() =>
              recorder.rpush(`${prefix}:handled`, `p|${ctx.envelope.stream}|${ctx.envelope.version}|${ctx.envelope.eventId}|${ctx.redelivered}`)
            )
            yield* Effect.sleep("5 millis")
          }),
        Followed: () => Effect.void
      }
    }))
  })

const produce = (category: string, entities: number, total: number) =>
  Effect.gen(function*() {
    const producer = yield* Producer.make(contractFor(category))
    const ids: Array<string> = []
    for (let n = 0; n < total; n++) {
      const position = yield* producer.Happened({ n }, { entityId: `e${n % entities}` })
      ids.push(position.entryId)
    }
    return ids
  })

const build = (prefix: string, partitions: number) =>
  Effect.map(Layer.build(redisStore(url, { prefix, partitions })), (ctx) => ctx as Context.Context<EventStore.EventStore | ConsumerGroups.ConsumerGroups>)

describe("consumers in their own processes (Redis)", () => {
  it.live("a consumer killed with SIGKILL: its partitions move within lease + heartbeat + 1 s, nothing is lost, order holds", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("kill")
      const category = `k${Math.random().toString(36).slice(2, 8)}`
      const group = "g"
      const ctx = yield* build(prefix, 4)
      const raw = yield* rawRedis(url)
      yield* Effect.gen(function*() {
        const killed = yield* child([prefix, category, group, "k", "5", "normal"], { PARTITIONS: "4" })
        yield* waitUntil("the child to own every partition", ownersAre(group, (o) => o.every((x) => x?.startsWith("k:"))))
        yield* localConsumer(prefix, category, group)
        yield* waitUntil("the group to settle", ownersAre(group, (o, m) => m === 2 && new Set(o).size === 2 && o.every((x) => x !== undefined)))
        yield* produce(category, 20, 600)
        yield* waitUntil("some events handled", Effect.promise(async () => (await raw.llen(`${prefix}:handled`)) >= 150))
        const started = Date.now()
        killed.process.kill("SIGKILL")
        yield* waitUntil("p to own every partition", ownersAre(group, (o) => o.every((x) => x?.startsWith("p:"))), 2000 + 500 + 1000)
        const moved = Date.now() - started
        expect(moved).toBeLessThan(2000 + 500 + 1000)
        yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("60 seconds"))
        const handled = (yield* Effect.promise(() => raw.lrange(`${prefix}:handled`, 0, -1))).map(parse)
        expect(new Set(handled.map((h) => h.eventId)).size).toBe(600)
        expect(inOrderPerEntity(handled)).toBe(true)
        expect(handled.some((h) => h.consumer === "k")).toBe(true)
        const status = yield* Subscriber.status(group)
        expect(status.partitionStatus.every((p) => p.pending === 0 && p.lag === 0)).toBe(true)
        figures(({ test: "sigkill", moved_ms: moved, handled: handled.length, redeliveries: handled.length - 600 }))
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 90_000)

  it.live("a consumer frozen with SIGSTOP past its lease: its partitions move; resumed, it gets LeaseLost and acks nothing with the lost lease", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("freeze")
      const category = `f${Math.random().toString(36).slice(2, 8)}`
      const group = "g"
      const ctx = yield* build(prefix, 4)
      const raw = yield* rawRedis(url)
      yield* Effect.gen(function*() {
        const frozen = yield* child([prefix, category, group, "f", "5", "normal"], { PARTITIONS: "4" })
        yield* waitUntil("the child to own every partition", ownersAre(group, (o) => o.every((x) => x?.startsWith("f:"))))
        yield* localConsumer(prefix, category, group)
        yield* waitUntil("the group to settle", ownersAre(group, (o, m) => m === 2 && new Set(o).size === 2 && o.every((x) => x !== undefined)))
        yield* produce(category, 20, 600)
        yield* waitUntil("some events handled", Effect.promise(async () => (await raw.llen(`${prefix}:handled`)) >= 150))
        frozen.process.kill("SIGSTOP")
        const started = Date.now()
        yield* waitUntil("p to own every partition", ownersAre(group, (o) => o.every((x) => x?.startsWith("p:"))), 2000 + 500 + 1000)
        expect(Date.now() - started).toBeLessThan(2000 + 500 + 1000)
        yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("60 seconds"))
        const before = frozen.output.length
        frozen.process.kill("SIGCONT")
        yield* waitUntil("the resumed child to notice", Effect.sync(() => frozen.output.slice(before).some((l) => l.includes("lost the lease"))), 5000)
        yield* Effect.sleep("1 second")
        const after = frozen.output.slice(before)
        const lost = after.flatMap((l, i) => {
          const m = /lost the lease on partition (\d+) \(([^)]+)\)/.exec(l)
          return m ? [{ index: i, token: m[2]! }] : []
        })
        expect(lost.length).toBeGreaterThan(0)
        for (const { index, token } of lost) {
          expect(after.slice(index).some((l) => l.includes("acked") && l.includes(`(${token})`)), `an ack with ${token} after it was lost`).toBe(false)
        }
        yield* Subscriber.awaitIdle(group).pipe(Effect.timeout("60 seconds"))
        const handled = (yield* Effect.promise(() => raw.lrange(`${prefix}:handled`, 0, -1))).map(parse)
        expect(new Set(handled.map((h) => h.eventId)).size).toBe(600)
        expect(inOrderPerEntity(handled)).toBe(true)
        const status = yield* Subscriber.status(group)
        expect(status.partitionStatus.every((p) => p.pending === 0 && p.lag === 0)).toBe(true)
        figures(({ test: "sigstop", lost_leases: lost.length, handled: handled.length, redeliveries: handled.length - 600 }))
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 90_000)

  it.live("a handler that crashes its process every time is dead-lettered after maxDeliveries; the rest is handled", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("crash")
      const category = `c${Math.random().toString(36).slice(2, 8)}`
      const group = "g"
      const ctx = yield* build(prefix, 1)
      const raw = yield* rawRedis(url)
      yield* Effect.gen(function*() {
        const groups = yield* ConsumerGroups.ConsumerGroups
        yield* groups.ensureGroup(group, category, "start")
        const entryIds = yield* produce(category, 3, 30)
        const env = { LEASE_TTL_MS: "1000", HEARTBEAT_MS: "250", MAX_DELIVERIES: "3", PARTITIONS: "1" }
        let crashes = 0
        for (let run = 0; run < 8; run++) {
          const c = startChild([prefix, category, group, `c${run}`, "0", "crash:13"], env)
          const outcome = yield* Effect.raceFirst(
            Effect.map(Effect.promise(() => c.exited), (code) => ({ _tag: "exited" as const, code })),
            Effect.as(Subscriber.awaitIdle(group), { _tag: "idle" as const })
          )
          if (outcome._tag === "idle") {
            c.process.kill("SIGKILL")
            yield* Effect.promise(() => c.exited)
            break
          }
          crashes++
        }
        const letters = yield* DeadLetters.list(group)
        expect(letters.map((l) => [l.errorTag, l.entryId, l.deliveries]), JSON.stringify(letters)).toEqual([["MaxDeliveries", entryIds[13], 4]])
        expect(crashes).toBe(3)
        const handled = (yield* Effect.promise(() => raw.lrange(`${prefix}:handled`, 0, -1))).map(parse)
        expect(new Set(handled.map((h) => h.eventId)).size).toBe(29)
        figures(({ test: "crash-loop", crashes, dead_letters: letters.length }))
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 90_000)
})
