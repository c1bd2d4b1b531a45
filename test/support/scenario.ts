/**
 * The consumer fault scenario, for the fault tests in `npm test` and for `npm run soak`:
 * a group of consumers in processes of their own over a category with a steady backlog,
 * while a nemesis, every 1–3 s, does one of: freeze a consumer past its lease (SIGSTOP,
 * then SIGCONT), kill one (SIGKILL) and start it again, or one of the backend's server
 * faults (scenarioBackend.ts). On Redis: drop every client connection (CLIENT KILL TYPE
 * normal), pause the server longer than the command timeout (CLIENT PAUSE), restart
 * redis-server (AOF). On PostgreSQL: end every client backend (pg_terminate_backend),
 * freeze the server's processes longer than the command timeout (SIGSTOP), restart the
 * server (immediate stop). With `faultBacklog`, each fault first waits (at most 15 s) for
 * that backlog. Then the producer stops, the group drains, and the delivery
 * checker reads every consumer's history: order per entity, nothing lost, no handler
 * started past its lease deadline (a start recorded only because the consumer was frozen
 * right after the engine's check is counted apart); every consumer still running;
 * pending lists empty.
 */
import { Effect, Fiber, Layer, Schedule, Schema } from "effect"
import { Contract, DeadLetters, EventStore, Subscriber } from "effect-chronicle"
// the checker alone (the testing entry also loads the suites, which need vitest)
import * as DeliveryChecker from "effect-chronicle/testing/DeliveryChecker"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { waitFor } from "./redisServer.js"
import { type BackendName, startBackend } from "./scenarioBackend.js"

const script = fileURLToPath(new URL("./checkedConsumer.ts", import.meta.url))

export interface ScenarioOptions {
  /** The store the consumers and the producer use (default redis). */
  readonly backend?: BackendName | undefined
  /** How long the nemesis runs (the producer keeps the backlog up meanwhile). */
  readonly seconds: number
  /**
   * With faults: the nemesis goes on past `seconds` until it has done this many (a busy
   * machine makes each fault take longer), for at most three times `seconds`.
   */
  readonly minFaults?: number
  /** Without faults: the control run. */
  readonly faults: boolean
  readonly consumers?: number
  readonly partitions?: number
  readonly entities?: number
  /** The backlog the producer keeps (events appended and not yet handled). */
  readonly backlog?: number
  /** At most this many events in all. */
  readonly maxEvents?: number
  /**
   * A backlog each fault waits for (at most 15 s) before it happens; 0 (the default): no
   * wait. Where the consumers can outpace the producer for a while (PostgreSQL after a
   * restart), the faults would otherwise meet a drained group.
   */
  readonly faultBacklog?: number
  readonly seed?: number | undefined
  readonly log?: (line: string) => void
}

export interface ScenarioReport {
  readonly bench: "soak"
  readonly backend: BackendName
  readonly seconds: number
  readonly faults_on: boolean
  readonly events: number
  readonly handled: number
  readonly redeliveries: number
  readonly faults: Record<string, number>
  readonly order_violations: number
  readonly lost: number
  readonly late_starts: number
  /** Handler starts recorded late only because the nemesis froze their process right after the engine's check (see above). */
  readonly started_before_a_freeze: number
  readonly dead_letters: number
  readonly consumers_alive: number
  readonly consumers: number
  readonly pending_end: number
  readonly drained_ms: number
  /** Appends that had to be tried again (an unknown outcome or an unavailable store), same ids. */
  readonly append_retries: number
  /** The smallest backlog (lag + pending) the producer last saw before a fault, when there were faults. */
  readonly backlog_at_faults_min: number | undefined
  readonly seed: number
  readonly verified: boolean
  /** The first problems found, when any. */
  readonly examples: ReadonlyArray<string>
}

const LEASE_MS = 2000
const HEARTBEAT_MS = 500
const COMMAND_TIMEOUT_MS = 1000

/** A small seeded generator, so that a failing run can be told apart and repeated. */
const rng = (seed: number) => {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 0x100000000
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * A frozen consumer is resumed even if this process dies meanwhile (it then sees its
 * parent gone and ends): a detached watchdog sends SIGCONT by PID half a second after the
 * nemesis would have (before its next fault can begin), if that PID still runs
 * checkedConsumer.ts.
 */
const continueAfter = (c: Consumer, ms: number) => {
  const pid = c.process.pid
  if (pid === undefined) return
  const seconds = (ms / 1000 + 0.5).toFixed(1)
  spawn("sh", ["-c", `sleep ${seconds}; grep -q checkedConsumer /proc/${pid}/cmdline 2>/dev/null && kill -CONT ${pid} 2>/dev/null; exit 0`], {
    stdio: "ignore",
    detached: true
  }).unref()
}

interface Consumer {
  readonly name: string
  process: ChildProcess
  exited: boolean
  /** Ended before the scenario's own end. */
  early?: boolean
  readonly output: Array<string>
}

export const runScenario = async (options: ScenarioOptions): Promise<ScenarioReport> => {
  const consumers = options.consumers ?? 3
  const partitions = options.partitions ?? 8
  const entities = options.entities ?? 200
  const backlog = options.backlog ?? 20_000
  const faultBacklog = options.faultBacklog ?? 0
  const maxEvents = options.maxEvents ?? 1_000_000
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31)
  const random = rng(seed)
  const log = options.log ?? (() => undefined)
  const dir = mkdtempSync(join(tmpdir(), "chronicle-scenario-"))
  const backendName = options.backend ?? "redis"
  const category = "scn"
  const backend = await startBackend(backendName, { dir, name: category, partitions, commandTimeoutMs: COMMAND_TIMEOUT_MS }).catch((error) => {
    rmSync(dir, { recursive: true, force: true })
    throw error
  })
  const group = "g"
  const faults: Record<string, number> = {}
  /** When each consumer frozen by the nemesis (SIGSTOP) ran again, by its name. */
  const resumed: Array<{ readonly name: string; readonly at: number }> = []
  const fleet: Array<Consumer> = []
  let generation = 0

  const startConsumer = (index: number): Consumer => {
    const name = `c${index}-${generation++}`
    const child = spawn(process.execPath, ["--import", "tsx", script], {
      env: {
        ...process.env,
        ...backend.consumerEnv,
        CATEGORY: category,
        GROUP: group,
        CONSUMER: name,
        RECORD: join(dir, `${name}.jsonl`),
        PARTITIONS: String(partitions),
        LEASE_TTL_MS: String(LEASE_MS),
        HEARTBEAT_MS: String(HEARTBEAT_MS),
        COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS),
        HANDLER_MS: "1-5",
        CONCURRENCY: "8",
        READ_COUNT: "100"
      },
      stdio: ["ignore", "pipe", "pipe"]
    })
    const c: Consumer = { name, process: child, exited: false, output: [] }
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString("utf8").split("\n")) if (line) c.output.push(line)
      if (c.output.length > 2000) c.output.splice(0, c.output.length - 2000)
    }
    child.stdout!.on("data", keep)
    child.stderr!.on("data", keep)
    child.on("exit", () => (c.exited = true))
    return c
  }

  const layer = backend.layer
  const Events = Contract.make(category, { Happened: { n: Schema.Int }, Followed: { n: Schema.Int } })
  const expected: Array<DeliveryChecker.Expected> = []
  let produced = 0
  let producing = true
  let appendFailures = 0
  /** The backlog as the producer last read it, and as it was before each fault. */
  let lastBacklog = backlog
  const backlogAtFaults: Array<number> = []

  // a scenario that fails leaves no process and no server behind
  const abandon = async (error: unknown): Promise<never> => {
    for (const c of fleet) if (!c.exited) c.process.kill("SIGKILL")
    await backend.stop().catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
    throw error
  }

  const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const ctx = yield* Layer.build(layer)
    const typed = yield* EventStore.forContract(Events).pipe(Effect.provide(ctx))

    /** Appends one event to an entity, retrying the same id until the outcome is known. */
    const appendOne = (entity: number, n: number) =>
      Effect.gen(function*() {
        const eventId = crypto.randomUUID()
        for (let attempt = 0; attempt < 600; attempt++) {
          const r = yield* Effect.either(typed.append(`e${entity}`, [Events.make.Happened({ n })], { eventIds: [eventId] }))
          if (r._tag === "Right") {
            expected.push({ stream: `${category}-e${entity}`, version: r.right.firstVersion })
            return
          }
          appendFailures++
          yield* Effect.sleep("50 millis")
        }
        return yield* Effect.dieMessage(`e${entity}: no settled append outcome`)
      })

    const backlogNow = Subscriber.status(group).pipe(
      Effect.provide(ctx),
      Effect.map((s) => s.partitionStatus.reduce((n, p) => n + p.lag + p.pending, 0)),
      Effect.tap((n) => Effect.sync(() => (lastBacklog = n))),
      Effect.orElseSucceed(() => backlog)
    )

    // the initial backlog, then the consumers
    yield* Effect.forEach(Array.from({ length: Math.min(backlog, maxEvents) }, (_, i) => i), (i) => appendOne(i % entities, produced++), { concurrency: 64, discard: true })
    for (let i = 0; i < consumers; i++) fleet.push(startConsumer(i))
    log(`scenario: ${produced} events in backlog, ${consumers} consumers starting (seed ${seed})`)

    const producer = yield* Effect.fork(Effect.gen(function*() {
      while (producing && produced < maxEvents) {
        const current = yield* backlogNow
        const missing = Math.min(2000, backlog - current, maxEvents - produced)
        if (missing > 0) {
          yield* Effect.forEach(Array.from({ length: missing }, () => produced++), (n) => appendOne(n % entities, n), { concurrency: 256, discard: true })
        }
        yield* Effect.sleep("100 millis")
      }
    }))

    // the nemesis
    const started = Date.now()
    const kinds = ["stop", "kill", ...backend.faults.map((f) => f.name)]
    const minFaults = options.faults ? options.minFaults ?? 0 : 0
    const done = () => Object.values(faults).reduce((a, b) => a + b, 0)
    while (
      (Date.now() - started < options.seconds * 1000 || done() < minFaults) &&
      Date.now() - started < options.seconds * 3000
    ) {
      yield* Effect.promise(() => sleep(1000 + Math.floor(random() * 2000)))
      if (!options.faults) continue
      const kind = kinds[Math.floor(random() * kinds.length)]!
      // a fault must meet a backlog: after a restart the producer may still be retrying
      // while the consumers drain, so wait (a while, not for ever) for the backlog to be back
      let atFault = lastBacklog
      const waitStart = Date.now()
      if (options.faults && faultBacklog > 0) {
        // measured now, by the nemesis itself (a status that fails, the server being away,
        // measures nothing; the producer's own figure may be older than this)
        const measured = Subscriber.status(group).pipe(
          Effect.provide(ctx),
          Effect.map((s) => s.partitionStatus.reduce((n, p) => n + p.lag + p.pending, 0)),
          Effect.orElseSucceed(() => -1)
        )
        while (Date.now() - waitStart < 15_000 && produced < maxEvents) {
          const m = yield* measured
          if (m >= 0) atFault = m
          if (m >= faultBacklog) break
          yield* Effect.promise(() => sleep(100))
        }
      }
      faults[kind] = (faults[kind] ?? 0) + 1
      backlogAtFaults.push(atFault)
      log(`nemesis: ${kind} (backlog ${atFault}, after waiting ${Date.now() - waitStart} ms for it)`)
      yield* Effect.promise(async () => {
        const alive = fleet.filter((c) => !c.exited)
        const victim = alive[Math.floor(random() * alive.length)]
        switch (kind) {
          case "stop":
            if (victim === undefined) break
            victim.process.kill("SIGSTOP")
            continueAfter(victim, LEASE_MS + 1000)
            await sleep(LEASE_MS + 1000)
            victim.process.kill("SIGCONT")
            resumed.push({ name: victim.name, at: Date.now() })
            break
          case "kill": {
            if (victim === undefined) break
            victim.process.kill("SIGKILL")
            await waitFor("the killed consumer to exit", async () => victim.exited, 5000)
            const index = fleet.indexOf(victim)
            fleet[index] = startConsumer(index)
            break
          }
          default:
            await backend.faults.find((f) => f.name === kind)!.run()
        }
      })
    }
    producing = false
    yield* Effect.promise(() => sleep(200))
    yield* Fiber.join(producer)
    log(`scenario: ${produced} events produced; draining`)

    // drain: every acknowledged event handled, nothing pending
    const drainStart = Date.now()
    const idle = yield* Subscriber.awaitIdle(group, { pollInterval: "200 millis" }).pipe(
      Effect.provide(ctx),
      Effect.timeout("180 seconds"),
      Effect.option
    )
    const drainedMs = Date.now() - drainStart
    // a fault's last reconnect may still be under way
    const settled = { while: EventStore.isRetryable, schedule: Schedule.spaced("200 millis"), times: 50 }
    const status = yield* Subscriber.status(group).pipe(Effect.provide(ctx), Effect.retry(settled))
    const pending = status.partitionStatus.reduce((n, p) => n + p.pending + p.lag, 0)
    const letters = yield* DeadLetters.list(group).pipe(Effect.provide(ctx), Effect.retry(settled))
    const stuck = status.partitionStatus.filter((p) => p.pending + p.lag > 0).map((p) =>
      `partition ${p.partition}: owner ${p.owner ?? "none"}, pending ${p.pending}, lag ${p.lag}, in flight ${p.inFlight}`
    )
    // where the server says the group stands
    if (stuck.length > 0) stuck.push(...(yield* Effect.promise(() => backend.diagnose(group))))
    return { idle: idle._tag === "Some", drainedMs, pending, letters, stuck, members: status.members }
  }))).catch(abandon)

  // a scenario that ends with work pending asks every consumer how its engine stands
  if (result.pending > 0) {
    for (const c of fleet) if (!c.exited) c.process.kill("SIGUSR2")
    await sleep(500)
  }
  const alive = fleet.filter((c) => !c.exited).length
  // the ones that ended before the scenario ended them (the examples name those only)
  for (const c of fleet) c.early = c.exited
  for (const c of fleet) if (!c.exited) c.process.kill("SIGTERM")
  await sleep(500)
  for (const c of fleet) if (!c.exited) c.process.kill("SIGKILL")
  const files = Array.from({ length: generation }, (_, g) => g).flatMap((g) => Array.from({ length: consumers }, (_, i) => join(dir, `c${i}-${g}.jsonl`)))
  let report: DeliveryChecker.Report
  try {
    const history = DeliveryChecker.readFile(...files)
    report = DeliveryChecker.check(history, {
      expected,
      deadLettered: result.letters.map((l) => ({ stream: l.stream, version: l.version, at: l.at }))
    })
  } finally {
    await backend.stop()
    rmSync(dir, { recursive: true, force: true })
  }
  // A handler the engine started just before its process was frozen records its start
  // only when the process runs again, after the next owner's: the engine checked its
  // deadline in time, and only fencing at the side effect (ctx.epoch) covers that pause.
  // Such starts (recorded within 500 ms of the process being resumed) are counted apart.
  const acrossFreeze = (i: DeliveryChecker.Invocation) =>
    resumed.some((r) => i.member.startsWith(`${r.name}:`) && i.start >= r.at - 50 && i.start <= r.at + 500)
  const lateStarts = report.lateStarts.filter((i) => !acrossFreeze(i))
  const startedBeforeFreeze = report.lateStarts.length - lateStarts.length
  const checkedOk = report.orderViolations.length === 0 && report.lost.length === 0 && lateStarts.length === 0
  const examples = [
    ...report.orderViolations.slice(0, 3).map((v) => `order: ${v.invocation.stream} v${v.invocation.version} by ${v.invocation.member}: ${v.reason}`),
    ...report.lost.slice(0, 3).map((e) => `lost: ${e.stream} v${e.version}`),
    ...lateStarts.slice(0, 3).map((i) => `late start: ${i.stream} v${i.version} by ${i.member} under epoch ${i.epoch} of partition ${i.partition}`),
    ...(result.pending > 0 ? [`members: ${result.members.join(", ")}`, ...result.stuck] : []),
    ...(result.pending > 0 ? fleet.map((c) => `${c.name} said: ${c.output.filter((l) => !/^\s+at /.test(l) && !l.startsWith("engine: ")).slice(-8).join(" | ")}`) : []),
    ...(result.pending > 0 ? fleet.flatMap((c) => c.output.filter((l) => l.startsWith("engine: ")).slice(-1).map((l) => `${c.name} ${l}`)) : []),
    ...(alive < consumers ? fleet.filter((c) => c.early).map((c) => `${c.name} exited (${c.process.exitCode ?? c.process.signalCode}): ${c.output.filter((l) => !/^\s+at /.test(l)).slice(-12).join(" | ")}`) : [])
  ]
  return {
    bench: "soak",
    backend: backendName,
    seconds: options.seconds,
    faults_on: options.faults,
    events: expected.length,
    handled: report.handled,
    redeliveries: report.redeliveries,
    faults,
    order_violations: report.orderViolations.length,
    lost: report.lost.length,
    late_starts: lateStarts.length,
    started_before_a_freeze: startedBeforeFreeze,
    dead_letters: result.letters.length,
    consumers_alive: alive,
    consumers,
    pending_end: result.pending,
    drained_ms: result.drainedMs,
    append_retries: appendFailures,
    backlog_at_faults_min: backlogAtFaults.length === 0 ? undefined : Math.min(...backlogAtFaults),
    seed,
    verified: checkedOk && alive === consumers && result.pending === 0 && result.letters.length === 0 && report.handled === expected.length,
    examples
  }
}
