/**
 * A slow consumer: a producer at 2,000 events/s (a rate a busy 2-core machine sustains) and a
 * consumer (a process of its own, as in a deployment) at about 500/s that starts 40,000
 * events behind, for 22 s.
 * Appends do not slow down (p99 with the consumer working within 2 x + 3 ms of the p99
 * with it idle, measured in the same run as below); the server never holds a large reply
 * (no read grows with the backlog); the consumer holds at most 2 x readCount events in
 * flight (no unbounded buffering); the lag it leaves behind is visible in
 * Subscriber.status.
 *
 * How the two are compared. A control phase and then a loaded phase compare whatever else
 * the machine did in each: on a CI machine shared with a CPU-heavy job, a burst of that job
 * in the second phase alone gave 38.8 ms against 9.7. Freezing the consumer every other
 * second (SIGSTOP, SIGCONT) made it resume in bursts. Here the consumer process runs
 * throughout, and every 250 ms the test tells it over stdin to work or to idle
 * (test/support/consumerProcess.ts, GATE=stdin): an idle consumer starts no handler, so with
 * its read window full it sends no reads, and it burns the CPU that working costs it. Both
 * kinds of window thus see the same processes and the same CPU load, and differ only in
 * what the consumer asks of Redis. Each window gives the p99 of the appends started in it,
 * from 100 ms after the switch (the consumer's last reads settle); the medians of each
 * kind's p99s are compared, so that a stall of the machine in a few windows moves neither.
 * The same holds, within 2 x + 2 ms (whole milliseconds), for the time from the call to the
 * server's commit (the entry id's milliseconds), which leaves out how soon this process
 * gets round to the reply. The
 * largest reply buffered is the server's own figure (INFO clients), which no scheduling of
 * this process changes.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import { EventStore, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { startRedisServer } from "../support/redisServer.js"
import { figures } from "../support/figures.js"

const script = fileURLToPath(new URL("../support/consumerProcess.ts", import.meta.url))

const waitUntilOwned = (group: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 600; i++) {
      const s = yield* Subscriber.status(group).pipe(Effect.orElseSucceed(() => undefined))
      if (s !== undefined && s.partitionStatus.every((p) => p.owner !== undefined)) return
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage(`group ${group} never got an owner`)
  })

const RATE = 2000
/** test/support/consumerProcess.ts reads 50 at a time */
const READ_COUNT = 50
/** Events the consumer starts behind: a read that grows with the backlog is large from the start. */
const BACKLOG = 40_000
const WINDOW_MS = 250
/** The start of each window that is not counted: the consumer's switch settles. */
const SETTLE_MS = 100
/** Pairs of windows (working, then idle): 22 s. The first pair is not counted: the idle consumer learns from the first working window what to burn. */
const PAIRS = 44

/** The consumer works in even windows and idles in odd ones. */
const working = (window: number) => window % 2 === 0

const percentile = (xs: ReadonlyArray<number>, p: number) => {
  const s = xs.slice().sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!
}

/** The server's clock when it committed the (first) event: its entry id's milliseconds. */
const commitMs = (result: EventStore.AppendResult) => Number(result.positions[0]!.entryId.split("-")[0])

interface Sample {
  /** When the append was called, in ms from the start. */
  readonly at: number
  /** Until the reply, in ms. */
  readonly latency: number
  /** Until the server committed it, in ms (whole milliseconds: the entry id's). */
  readonly commit: number
}

/**
 * Appends at RATE events/s for `seconds`, one event per append, in bursts every 5 ms (each
 * burst waits for the one before); calls `onWindow` as each window begins.
 */
const produce = (seconds: number, onWindow: (window: number) => void) =>
  Effect.gen(function*() {
    const store = yield* EventStore.EventStore
    const samples: Array<Sample> = []
    const total = RATE * seconds
    const start = performance.now()
    let sent = 0
    let window = -1
    while (sent < total) {
      const now = performance.now() - start
      if (Math.floor(now / WINDOW_MS) !== window) {
        window = Math.floor(now / WINDOW_MS)
        onWindow(window)
      }
      const due = Math.min(total, Math.floor((now / 1000) * RATE))
      const burst = Array.from({ length: Math.max(0, due - sent) }, (_, i) => sent + i)
      sent += burst.length
      yield* Effect.forEach(burst, (n) =>
        Effect.gen(function*() {
          const t = performance.now()
          const wall = Date.now()
          const result = yield* store.append(`slowc-r${n % 200}`, [{ eventId: crypto.randomUUID(), type: "Happened", data: { n } }])
          samples.push({ at: t - start, latency: performance.now() - t, commit: commitMs(result) - wall })
        }), { concurrency: "unbounded", discard: true })
      yield* Effect.sleep("5 millis")
    }
    return { samples, sent, seconds: (performance.now() - start) / 1000 }
  })

/** Per window, the p99 of `of` over the samples from SETTLE_MS in; the median of those p99s for each kind of window. */
const compare = (samples: ReadonlyArray<Sample>, of: (s: Sample) => number) => {
  const windows = new Map<number, Array<number>>()
  for (const s of samples) {
    const w = Math.floor(s.at / WINDOW_MS)
    if (w < 2 || s.at - w * WINDOW_MS < SETTLE_MS) continue
    const xs = windows.get(w) ?? []
    xs.push(of(s))
    windows.set(w, xs)
  }
  const p99s = { loaded: [] as Array<number>, control: [] as Array<number> }
  for (const [w, xs] of windows) p99s[working(w) ? "loaded" : "control"].push(percentile(xs, 0.99))
  return {
    loaded: percentile(p99s.loaded, 0.5),
    control: percentile(p99s.control, 0.5),
    windows: Math.min(p99s.loaded.length, p99s.control.length)
  }
}

describe("faults: a slow consumer", () => {
  it.live("append p99 holds, in-flight stays within 2 x readCount, lag is visible", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(Effect.promise(() => startRedisServer()), (s) => Effect.promise(() => s.stop()))
      const ctx = yield* Layer.build(RedisChronicle.layer({ prefix: "slow" }).pipe(Layer.provide(RedisClient.layer({ url: server.url }))))
      yield* Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const child = spawn(process.execPath, ["--import", "tsx", script, server.url, "slow", "slowc", "slowpoke", "consumer", "8", "normal"], {
          env: { ...process.env, HEARTBEAT_MS: "250", LEASE_TTL_MS: "3000", GATE: "stdin" },
          stdio: ["pipe", "ignore", "ignore"]
        })
        child.stdin!.on("error", () => undefined)
        yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
        // the backlog is written while the consumer starts (it may take some of it already)
        yield* Effect.forEach(Array.from({ length: BACKLOG / 100 }, (_, i) => i), (i) =>
          store.append(
            `slowc-b${i % 200}`,
            Array.from({ length: 100 }, (_, k) => ({ eventId: crypto.randomUUID(), type: "Happened", data: { n: i * 100 + k } }))
          ), { concurrency: 16, discard: true })
        yield* waitUntilOwned("slowpoke")
        const probe = yield* Effect.acquireRelease(Effect.sync(() => new Redis(server.url)), (r) => Effect.sync(() => r.disconnect()))
        const samples: Array<{ inFlight: number; lag: number }> = []
        let maxReplyBuffer = 0
        const sampler = yield* Effect.fork(Effect.forever(Effect.gen(function*() {
          const s = yield* Subscriber.status("slowpoke").pipe(Effect.orElseSucceed(() => undefined))
          if (s !== undefined) {
            samples.push({
              inFlight: s.partitionStatus.reduce((n, p) => n + p.inFlight, 0),
              lag: s.partitionStatus.reduce((n, p) => n + p.lag, 0)
            })
          }
          // the largest reply the server held for any client of late (its output buffer)
          const info = yield* Effect.promise(() => probe.info("clients").catch(() => ""))
          maxReplyBuffer = Math.max(maxReplyBuffer, Number(/client_recent_max_output_buffer:(\d+)/.exec(info)?.[1] ?? 0))
          yield* Effect.sleep("250 millis")
        })))
        const run = yield* produce((PAIRS * 2 * WINDOW_MS) / 1000, (w) => child.stdin!.write(working(w) ? "work\n" : "idle\n"))
        yield* Fiber.interrupt(sampler)
        const handled = yield* Effect.promise(async () => {
          const r = new Redis(server.url)
          const n = await r.llen("slow:handled")
          r.disconnect()
          return n
        })
        const latency = compare(run.samples, (s) => s.latency)
        const commit = compare(run.samples, (s) => s.commit)
        const maxInFlight = Math.max(...samples.map((s) => s.inFlight))
        const lastLag = samples.at(-1)?.lag ?? 0
        figures({
          fault: "slow-consumer",
          produced_per_sec: Math.round(run.sent / run.seconds),
          consumed_per_sec: Math.round(handled / run.seconds),
          windows: latency.windows,
          p99_control_ms: +latency.control.toFixed(2),
          p99_with_consumer_ms: +latency.loaded.toFixed(2),
          commit_p99_control_ms: commit.control,
          commit_p99_with_consumer_ms: commit.loaded,
          max_in_flight: maxInFlight,
          max_reply_buffer_kb: Math.round(maxReplyBuffer / 1024),
          read_count: READ_COUNT,
          final_lag: lastLag
        })
        expect(latency.windows).toBeGreaterThanOrEqual(10)
        // 3 ms of room: a working consumer (a process of its own on a 2-core machine) moved
        // this process's p99 by 0.5 to 3.2 ms in runs where the commit time held (control
        // 1.9 to 4.4 ms); a read that grew with the backlog holds the server for tens of ms
        expect(latency.loaded).toBeLessThanOrEqual(2 * latency.control + 3)
        // one more millisecond: both clocks count whole milliseconds here
        expect(commit.loaded).toBeLessThanOrEqual(2 * commit.control + 2)
        expect(maxInFlight).toBeGreaterThan(0)
        expect(maxInFlight).toBeLessThanOrEqual(2 * READ_COUNT)
        // replies stay bounded: a read returns at most readCount events (some KB here, and
        // the largest append replies tens of KB); the whole backlog in one reply is megabytes
        expect(maxReplyBuffer).toBeLessThan(1024 * 1024)
        expect(lastLag).toBeGreaterThan((BACKLOG + run.sent) / 2)
        expect(handled).toBeLessThan(BACKLOG + run.sent)
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 120_000)
})
