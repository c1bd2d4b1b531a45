/**
 * A consumer in a process of its own, for tests that kill, freeze or crash it.
 *
 * Usage: tsx consumerProcess.ts <url> <prefix> <category> <group> <consumer> <delayMs> <mode>
 * mode: "normal", or "crash:<n>" to exit the process whenever it handles event n.
 * Every handled event is recorded with RPUSH <prefix>:handled
 * "<consumer>|<stream>|<version>|<eventId>|<redelivered>". Logs (debug included) go to stdout.
 * With GATE=stdin, the lines "idle" and "work" on stdin stop and restart handling (no
 * signals: the process keeps running). An idle consumer starts no handler, so once its read
 * window is full (2 x readCount in flight) it reads nothing either, while its connections,
 * leases and heartbeats stay; it burns, without Redis, the CPU share that working cost it,
 * so that a test comparing the two sees the same processes and the same CPU load.
 */
import { Duration, Effect, Layer, Logger, LogLevel, Schema } from "effect"
import { Contract, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { createInterface } from "node:readline"
import { endWithParent } from "./orphan.js"

// a consumer outlives nothing: once the process that started it is gone, it ends
endWithParent()

const [url, prefix, category, group, consumer, delay, mode] = process.argv.slice(2) as [string, string, string, string, string, string, string]
const crashOn = mode.startsWith("crash:") ? Number(mode.slice(6)) : undefined

const Events = Contract.make(category, { Happened: { n: Schema.Int }, Followed: { n: Schema.Int } })
const recorder = new Redis(url)

// GATE=stdin: "idle" closes the gate every handler passes before it starts, "work" opens it
const gate = Effect.runSync(Effect.makeLatch(true))
const cpuMs = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}
/** CPU time over wall time of the working stretches, and of the idle ones without the burning. */
const worked = { cpu: 0, wall: 0 }
const idled = { cpu: 0, wall: 0 }
let burnt = 0
let stretch: { readonly idle: boolean; readonly wall: number; readonly cpu: number; readonly burnt: number } | undefined
let burner: ReturnType<typeof setInterval> | undefined
if (process.env.GATE === "stdin") {
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (line !== "idle" && line !== "work") return
    const idle = line === "idle"
    if (stretch !== undefined && stretch.idle === idle) return
    const now = { idle, wall: performance.now(), cpu: cpuMs(), burnt }
    // counted from the first line on: start-up is neither
    if (stretch !== undefined) {
      const into = stretch.idle ? idled : worked
      into.cpu += now.cpu - stretch.cpu - (now.burnt - stretch.burnt)
      into.wall += now.wall - stretch.wall
    }
    stretch = now
    if (burner !== undefined) clearInterval(burner)
    burner = undefined
    if (!idle) {
      Effect.runSync(gate.open)
      return
    }
    Effect.runSync(gate.close)
    // An idle consumer burns, without Redis, the CPU that working costs beyond idling, so
    // that both kinds of stretch load the machine alike: in short slices every
    // millisecond, as the work comes in short turns (time lost to the scheduler is not
    // made up in one long spin).
    const share = worked.wall === 0 ? 0 : Math.max(0, Math.min(0.9, worked.cpu / worked.wall - (idled.wall === 0 ? 0 : idled.cpu / idled.wall)))
    if (share === 0) return
    let last = performance.now()
    burner = setInterval(() => {
      const t = performance.now()
      const from = cpuMs()
      const until = from + Math.min(1, share * (t - last))
      last = t
      let at = from
      while (at < until && performance.now() - t < 2) at = cpuMs()
      burnt += at - from
    }, 1)
  })
}

const program = Subscriber.run(Events, {
  group,
  consumer,
  leaseTtl: Duration.millis(Number(process.env.LEASE_TTL_MS ?? 2000)),
  heartbeat: Duration.millis(Number(process.env.HEARTBEAT_MS ?? 500)),
  maxDeliveries: Number(process.env.MAX_DELIVERIES ?? 10),
  readCount: 50,
  concurrency: 4,
  handlers: {
    Happened: (event, ctx) =>
      Effect.gen(function*() {
        yield* gate.await
        if (event.n === crashOn) {
          // let the acks of what came before go out first: only this event is in a crash loop
          yield* Effect.sleep("300 millis")
          console.log(`crashing on ${event.n}`)
          process.exit(3)
        }
        yield* Effect.promise(() =>
          recorder.rpush(`${prefix}:handled`, `${consumer}|${ctx.envelope.stream}|${ctx.envelope.version}|${ctx.envelope.eventId}|${ctx.redelivered}`)
        )
        if (Number(delay) > 0) yield* Effect.sleep(Number(delay))
      }),
    Followed: () => Effect.void
  }
})

const layer = RedisChronicle.layer({ prefix, partitions: process.env.PARTITIONS === undefined ? undefined : Number(process.env.PARTITIONS) }).pipe(Layer.provide(RedisClient.layer({ url })))
console.log("starting")
Effect.runPromise(
  program.pipe(
    Effect.provide(layer),
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => console.log(Array.isArray(message) ? message.join(" ") : String(message))))),
    Logger.withMinimumLogLevel(LogLevel.Debug)
  )
).catch((error) => {
  console.error(error)
  process.exit(1)
})
