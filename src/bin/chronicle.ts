/**
 * `chronicle`: look inside an effect-chronicle store on Redis.
 *
 *   chronicle streams                         categories and streams, with versions
 *   chronicle read <stream>                   a stream's events
 *   chronicle groups                          per group and partition: owner, pending, lag
 *   chronicle dlq list|replay|purge <group>   dead letters
 *   chronicle projection rebuild <name>       start a new generation and follow the rebuild
 *
 * Options: --url (default REDIS_URL, then redis://127.0.0.1:6379), --prefix (default
 * CHRONICLE_PREFIX, then "chronicle"), --key-prefix (the key store's, default
 * "<prefix>-keys"), --json for output scripts can read.
 * Errors print one line and exit with status 1; passwords are never printed; fields
 * marked personal are masked unless --show-personal, which decrypts them. Without a terminal, no colours and
 * progress in sparse lines.
 *
 * This is the only module of src/ that runs an Effect.
 */
import { openFields } from "../internal/personal.js"
import { KeyStore } from "../PersonalData.js"
import { Args, CliConfig, Command, Options, ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Console, type Context, DateTime, Effect, Layer, Option, Redacted, Schema, Stream } from "effect"
import { ConsumerGroups } from "../ConsumerGroups.js"
import { compareEntryIds, entryIdMillis } from "../internal/ids.js"
import { envelopeOf } from "../internal/record.js"
import { EventStore } from "../EventStore.js"
import { ProjectionStore } from "../Projection.js"
import * as RedisInspect from "../redis/inspect.js"
import * as RedisChronicle from "../redis/RedisChronicle.js"
import * as RedisClient from "../redis/RedisClient.js"

const url = Options.text("url").pipe(
  Options.withDescription("Redis URL (default: REDIS_URL, then redis://127.0.0.1:6379)"),
  Options.optional
)
const prefix = Options.text("prefix").pipe(
  Options.withDescription("key prefix of the store (default: CHRONICLE_PREFIX, then chronicle)"),
  Options.optional
)
const keyPrefix = Options.text("key-prefix").pipe(
  Options.withDescription("key prefix of the store's key store, for read --show-personal (default: <prefix>-keys)"),
  Options.optional
)
const json = Options.boolean("json").pipe(Options.withDescription("print JSON"))

const root = Command.make("chronicle", { url, prefix, keyPrefix, json })

/** A failure of the command itself (bad input, a missing stream): one line, status 1. */
class CliFailure extends Schema.TaggedError<CliFailure>()("CliFailure", { message: Schema.String }) {}

/** The URL to use, checked: a redis:// or rediss:// URL with a host. */
const checkUrl = (given: string | undefined): Effect.Effect<string, CliFailure> => {
  if (given === "") return Effect.fail(new CliFailure({ message: "--url is empty (give a redis:// or rediss:// URL, or leave it out to use REDIS_URL)" }))
  const target = given ?? (process.env.REDIS_URL || "redis://127.0.0.1:6379")
  let parsed: URL
  try {
    parsed = new URL(target)
  } catch {
    return Effect.fail(new CliFailure({ message: `${JSON.stringify(RedisClient.redactUrl(target).slice(0, 80))} is not a URL (expected redis://host:port or rediss://host:port)` }))
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    return Effect.fail(new CliFailure({ message: `${parsed.protocol}// URLs are not Redis URLs (expected redis:// or rediss://)` }))
  }
  if (parsed.hostname === "") return Effect.fail(new CliFailure({ message: "the URL has no host" }))
  return Effect.succeed(target)
}

type Services = EventStore | ConsumerGroups | ProjectionStore | KeyStore | RedisClient.RedisClient

/** Runs `f` against the store the options name, with connections closed afterwards. */
const withStore = <A, E>(f: (config: { readonly json: boolean; readonly prefix: string }) => Effect.Effect<A, E, Services>) =>
  Effect.gen(function*() {
    const config = yield* root
    const target = yield* checkUrl(Option.getOrUndefined(config.url))
    const storePrefix = Option.getOrUndefined(config.prefix) || process.env.CHRONICLE_PREFIX || "chronicle"
    const client = RedisClient.layer({ url: Redacted.make(target), connectTimeout: "3 seconds", commandTimeout: "10 seconds" })
    return yield* Effect.scoped(
      Effect.gen(function*() {
        const clientContext = yield* Layer.build(client)
        // a tool reads categories with the partition counts they were created with
        const recorded = yield* RedisInspect.partitionCounts(storePrefix).pipe(Effect.provide(clientContext))
        const store = RedisChronicle.layer({
          prefix: storePrefix,
          partitions: { default: 1, byCategory: recorded },
          personalData: { keyPrefix: Option.getOrUndefined(config.keyPrefix) || undefined }
        })
        const ctx = yield* Layer.build(Layer.provideMerge(store, Layer.succeedContext(clientContext)))
        return yield* Effect.provide(f({ json: config.json, prefix: storePrefix }), ctx as Context.Context<Services>)
      })
    )
  })

const printJson = (value: unknown) => Console.log(JSON.stringify(value))

const table = (rows: ReadonlyArray<ReadonlyArray<string>>) => {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n")
}

const streams = Command.make("streams", {}, () =>
  withStore(({ json, prefix }) =>
    Effect.gen(function*() {
      const listings = yield* RedisInspect.categories(prefix)
      if (json) return yield* printJson(listings)
      if (listings.length === 0) return yield* Console.log("no categories")
      for (const c of listings) {
        const events = c.streams.reduce((n, s) => n + s.version, 0)
        yield* Console.log(`${c.category}: ${c.streams.length} stream(s), ${events} event(s), ${c.partitions} partition(s)`)
        for (const s of c.streams) yield* Console.log(`  ${s.stream}  v${s.version}  partition ${s.partition}`)
      }
    }))).pipe(Command.withDescription("categories and streams with their versions, from the registry"))

const showPersonal = Options.boolean("show-personal").pipe(
  Options.withDescription("print fields marked personal in clear, decrypted with the store's key store (they are masked otherwise; a forgotten subject's read \"(forgotten)\")")
)

/** The data with the fields marked personal masked. */
const masked = (data: unknown, personal: ReadonlyArray<string> | undefined, show: boolean): unknown => {
  if (show || personal === undefined || personal.length === 0 || typeof data !== "object" || data === null) return data
  const out: Record<string, unknown> = { ...(data as Record<string, unknown>) }
  for (const field of personal) if (field in out) out[field] = "***"
  return out
}

const read = Command.make("read", { stream: Args.text({ name: "stream" }).pipe(Args.withDescription("the stream, category-id")), showPersonal }, ({ showPersonal, stream }) =>
  withStore(({ json }) =>
    Effect.gen(function*() {
      const store = yield* EventStore
      const keys = yield* KeyStore
      let count = 0
      yield* store.read(stream).pipe(
        Stream.runForEach((e) =>
          Effect.gen(function*() {
            count++
            const data = showPersonal && e.personalFields !== undefined
              ? yield* openFields(keys, e.eventId, e.data, e.personalFields)
              : masked(e.data, e.personalFields, false)
            return yield* json
              ? printJson({ ...envelopeOf(e), time: DateTime.formatIso(e.time), data })
              : Console.log(`v${e.version}  ${DateTime.formatIso(e.time)}  ${e.type}  ${JSON.stringify(data)}  (${e.eventId})`)
          })
        )
      )
      if (count === 0) return yield* new CliFailure({ message: `no such stream: ${stream}` })
    }))).pipe(Command.withDescription("the events of one stream, oldest first"))

const groups = Command.make("groups", {}, () =>
  withStore(({ json }) =>
    Effect.gen(function*() {
      const consumerGroups = yield* ConsumerGroups
      const all = yield* consumerGroups.groups
      const statuses = yield* Effect.forEach(all, (g) => consumerGroups.status(g.group))
      if (json) return yield* printJson(statuses)
      if (statuses.length === 0) return yield* Console.log("no groups")
      const rows = [["group", "category", "partition", "owner", "pending", "lag", "in flight", "dead letters"]]
      for (const s of statuses) {
        for (const p of s.partitionStatus) {
          rows.push([s.group, s.category, String(p.partition), p.owner ?? "-", String(p.pending), String(p.lag), String(p.inFlight), String(p.deadLetters)])
        }
      }
      yield* Console.log(table(rows))
    }))).pipe(Command.withDescription("consumer groups: owner, pending, lag, in flight and dead letters per partition"))

const groupArg = Args.text({ name: "group" }).pipe(Args.withDescription("the consumer group"))
const ids = Args.text({ name: "id" }).pipe(Args.withDescription("dead letter ids, as dlq list shows them"), Args.repeated)

const dlqList = Command.make("list", { group: groupArg }, ({ group }) =>
  withStore(({ json }) =>
    Effect.gen(function*() {
      const letters = yield* (yield* ConsumerGroups).deadLetters(group)
      if (json) return yield* printJson(letters)
      if (letters.length === 0) return yield* Console.log(`no dead letters in ${group}`)
      yield* Console.log(table([
        ["id", "stream", "version", "type", "error", "attempts", "deliveries", "message"],
        ...letters.map((l) => [l.id, l.stream, String(l.version), l.type, l.errorTag, String(l.attempts), String(l.deliveries), l.message])
      ]))
    }))).pipe(Command.withDescription("the dead letters of a group"))

const dlqReplay = Command.make("replay", { group: groupArg, ids }, ({ group, ids }) =>
  withStore(({ json }) =>
    Effect.gen(function*() {
      const moved = yield* (yield* ConsumerGroups).replay(group, ids.length === 0 ? undefined : ids)
      yield* json ? printJson({ group, replayed: moved }) : Console.log(`${moved} dead letter(s) handed back to ${group}`)
    }))).pipe(Command.withDescription("hand dead letters back to the group's consumers (all of them, or the ids given)"))

const all = Options.boolean("all").pipe(Options.withDescription("every dead letter of the group"))

const dlqPurge = Command.make("purge", { group: groupArg, ids, all }, ({ all, group, ids }) =>
  withStore(({ json }) =>
    Effect.gen(function*() {
      if (ids.length === 0 && !all) return yield* new CliFailure({ message: `give the ids of the dead letters to delete, or --all to delete every one of ${group}` })
      if (ids.length > 0 && all) return yield* new CliFailure({ message: "give ids or --all, not both" })
      const purged = yield* (yield* ConsumerGroups).purge(group, all ? undefined : ids)
      yield* json ? printJson({ group, purged }) : Console.log(`${purged} dead letter(s) deleted from ${group}`)
    }))).pipe(Command.withDescription("delete dead letters: the ids given, or --all"))

const dlq = Command.make("dlq").pipe(
  Command.withSubcommands([dlqList, dlqReplay, dlqPurge]),
  Command.withDescription("dead letters of a group: list, replay (back to the group's consumers), purge")
)

/**
 * Progress: redrawn in place on a terminal; elsewhere (a log, a pipe) a line only when it
 * moved by a tenth or every 10 s, so that a log is not a line every half second.
 */
const makeProgress = () => {
  const tty = process.stdout.isTTY === true
  let lastFraction = -1
  let lastAt = 0
  let drawn = false
  return {
    show: (line: string, fraction: number) => {
      if (tty) {
        process.stdout.write(`\r${line}\x1b[K`)
        drawn = true
        return
      }
      const now = Date.now()
      if (fraction - lastFraction >= 0.1 || now - lastAt >= 10_000) {
        process.stdout.write(`${line}\n`)
        lastFraction = fraction
        lastAt = now
      }
    },
    end: () => {
      if (drawn) process.stdout.write("\n")
      drawn = false
    }
  }
}

const bar = (fraction: number) => {
  const width = 30
  const full = Math.round(Math.max(0, Math.min(1, fraction)) * width)
  return `[${"#".repeat(full)}${"-".repeat(width - full)}] ${Math.floor(fraction * 100)}%`
}

const rebuild = Command.make(
  "rebuild",
  {
    name: Args.text({ name: "name" }).pipe(Args.withDescription("the projection")),
    timeout: Options.integer("timeout").pipe(Options.withDescription("seconds to follow the rebuild"), Options.withDefault(120))
  },
  ({ name, timeout }) =>
    withStore(({ json, prefix }) =>
      Effect.gen(function*() {
        const projections = yield* ProjectionStore
        const store = yield* EventStore
        const before = yield* projections.load(name)
        if (before.category === undefined && before.generation === 0) {
          return yield* new CliFailure({ message: `no such projection: ${name} (no runner has ever checkpointed it)` })
        }
        const generation = yield* projections.rebuild(name)
        if (!json) yield* Console.log(`projection ${name}: generation ${generation} started`)
        const progress = makeProgress()
        const deadline = Date.now() + timeout * 1000
        for (;;) {
          const state = yield* projections.load(name)
          if (state.category === undefined) {
            const message = "no runner has checkpointed this projection yet; the next runner rebuilds it"
            return yield* json ? printJson({ projection: name, generation, caughtUp: false, message }) : Console.log(message)
          }
          const partitions = yield* store.partitions(state.category)
          const extent = yield* RedisInspect.logExtent(prefix, state.category, partitions)
          const reset = state.resetDone === state.generation
          let done = 0
          let total = 0
          let caughtUp = reset
          extent.forEach(({ first, last }, p) => {
            if (last === "0-0") return
            const at = reset ? state.cursor?.[p] ?? "0-0" : "0-0"
            if (compareEntryIds(at, last) < 0) caughtUp = false
            const span = Math.max(1, entryIdMillis(last) - entryIdMillis(first) + 1)
            total += span
            done += at === "0-0" ? 0 : Math.min(span, entryIdMillis(at) - entryIdMillis(first) + 1)
          })
          const fraction = total === 0 ? 1 : caughtUp ? 1 : done / total
          if (!json) progress.show(`${bar(fraction)}${reset ? "" : "  (waiting for the runner to reset)"}`, fraction)
          if (caughtUp) {
            progress.end()
            return yield* json ? printJson({ projection: name, generation, caughtUp: true }) : Console.log("caught up")
          }
          if (Date.now() > deadline) {
            progress.end()
            return yield* json
              ? printJson({ projection: name, generation, caughtUp: false })
              : Console.log(`not caught up after ${timeout} s (is a runner live?)`)
          }
          yield* Effect.sleep("500 millis")
        }
      }))
).pipe(Command.withDescription("start a new generation of a projection and follow its runner's progress"))

const projection = Command.make("projection").pipe(Command.withSubcommands([rebuild]), Command.withDescription("projections: rebuild"))

const command = root.pipe(Command.withSubcommands([streams, read, groups, dlq, projection]))

const cli = Command.run(command, { name: "chronicle", version: "0.2.0" })

// colours only for a terminal: help and errors piped into a file or another program are plain text
if (process.stdout.isTTY !== true || process.env.NO_COLOR !== undefined) {
  const plain = (stream: NodeJS.WriteStream) => {
    const write = stream.write.bind(stream) as (chunk: unknown, ...rest: Array<unknown>) => boolean
    stream.write = ((chunk: unknown, ...rest: Array<unknown>) =>
      write(typeof chunk === "string" ? chunk.replace(/\x1b\[[0-9;]*m/g, "") : chunk, ...rest)) as typeof stream.write
  }
  plain(process.stdout)
  plain(process.stderr)
}

/** One line for any failure, never a stack or a password. */
const oneLine = (error: unknown): string => {
  const message = typeof error === "object" && error !== null && "message" in error ? String((error as { message: unknown }).message) : String(error)
  return message.split("\n")[0]!.replace(/\/\/([^:@/]*):([^@/]*)@/g, "//$1:***@")
}

/** Help, written for this command (a generated one says more about types than about chronicle). */
const HELP = `chronicle: look inside an effect-chronicle store on Redis

usage: chronicle [--url <redis-url>] [--prefix <prefix>] [--key-prefix <prefix>] [--json] <command>

commands:
  streams                              categories and streams, with versions and partitions
  read <stream> [--show-personal]      a stream's events, oldest first; fields marked personal are masked
                                       unless --show-personal (decrypted with the store's keys; a
                                       forgotten subject's read "(forgotten)")
  groups                               per group and partition: owner, pending, lag, in flight, dead letters
  dlq list <group>                     a group's dead letters
  dlq replay <group> [<id>...]         hand dead letters back to the group's consumers (all, or those ids)
  dlq purge <group> (<id>... | --all)  delete dead letters: those ids, or every one with --all
  projection rebuild <name> [--timeout <seconds>]
                                       start a new generation of a projection and follow its runner

options:
  --url <redis-url>   redis:// or rediss:// (default: REDIS_URL, then redis://127.0.0.1:6379)
  --prefix <prefix>   the store's key prefix (default: CHRONICLE_PREFIX, then chronicle)
  --key-prefix <prefix>
                      its key store's prefix, for --show-personal (default: <prefix>-keys)
  --json              print JSON, one value per line, for scripts

Errors print one line and exit with status 1. Passwords are never printed.`

const argv = process.argv.slice(2)
if (argv.includes("--help") || argv.includes("-h") || argv.length === 0) {
  console.log(HELP)
  process.exit(argv.length === 0 ? 1 : 0)
}
if (argv.includes("--version")) {
  console.log("chronicle 0.2.0")
  process.exit(0)
}

NodeRuntime.runMain(
  cli(process.argv).pipe(
    // @effect/cli prints its own help for bad usage; everything else is one line
    Effect.tapError((error) => (ValidationError.isValidationError(error) ? Effect.void : Console.error(`chronicle: ${oneLine(error)}`))),
    Effect.provide(Layer.mergeAll(NodeContext.layer, CliConfig.layer({ showBuiltIns: false, showTypes: false })))
  ),
  { disableErrorReporting: true }
)
