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
 * CHRONICLE_PREFIX, then "chronicle"), --json for output scripts can read.
 * Errors print one line and exit with status 1; passwords are never printed.
 *
 * This is the only module of src/ that runs an Effect.
 */
import { Args, Command, Options, ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Console, type Context, DateTime, Effect, Layer, Option, Redacted, Stream } from "effect"
import { ConsumerGroups } from "../ConsumerGroups.js"
import { compareEntryIds, entryIdMillis } from "../internal/ids.js"
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
const json = Options.boolean("json").pipe(Options.withDescription("print JSON"))

const root = Command.make("chronicle", { url, prefix, json })

type Services = EventStore | ConsumerGroups | ProjectionStore | RedisClient.RedisClient

/** Runs `f` against the store the options name, with connections closed afterwards. */
const withStore = <A, E>(f: (config: { readonly json: boolean; readonly prefix: string }) => Effect.Effect<A, E, Services>) =>
  Effect.gen(function*() {
    const config = yield* root
    const target = Option.getOrUndefined(config.url) || process.env.REDIS_URL || "redis://127.0.0.1:6379"
    const storePrefix = Option.getOrUndefined(config.prefix) || process.env.CHRONICLE_PREFIX || "chronicle"
    const client = RedisClient.layer({ url: Redacted.make(target), connectTimeout: "3 seconds", commandTimeout: "10 seconds" })
    return yield* Effect.scoped(
      Effect.gen(function*() {
        const clientContext = yield* Layer.build(client)
        // a tool reads categories with the partition counts they were created with
        const recorded = yield* RedisInspect.partitionCounts(storePrefix).pipe(Effect.provide(clientContext))
        const store = RedisChronicle.layer({ prefix: storePrefix, partitions: { default: 1, byCategory: recorded } })
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

const read = Command.make("read", { stream: Args.text({ name: "stream" }) }, ({ stream }) =>
  withStore(({ json }) =>
    Effect.gen(function*() {
      const store = yield* EventStore
      yield* store.read(stream).pipe(
        Stream.runForEach((e) =>
          json
            ? printJson({ ...e, time: DateTime.formatIso(e.time) })
            : Console.log(`v${e.version}  ${DateTime.formatIso(e.time)}  ${e.type}  ${JSON.stringify(e.data)}  (${e.eventId})`)
        )
      )
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

const groupArg = Args.text({ name: "group" })
const ids = Args.text({ name: "id" }).pipe(Args.repeated)

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
    })))

const dlqReplay = Command.make("replay", { group: groupArg, ids }, ({ group, ids }) =>
  withStore(({ json }) =>
    Effect.gen(function*() {
      const moved = yield* (yield* ConsumerGroups).replay(group, ids.length === 0 ? undefined : ids)
      yield* json ? printJson({ group, replayed: moved }) : Console.log(`${moved} dead letter(s) handed back to ${group}`)
    })))

const dlqPurge = Command.make("purge", { group: groupArg, ids }, ({ group, ids }) =>
  withStore(({ json }) =>
    Effect.gen(function*() {
      const purged = yield* (yield* ConsumerGroups).purge(group, ids.length === 0 ? undefined : ids)
      yield* json ? printJson({ group, purged }) : Console.log(`${purged} dead letter(s) deleted from ${group}`)
    })))

const dlq = Command.make("dlq").pipe(
  Command.withSubcommands([dlqList, dlqReplay, dlqPurge]),
  Command.withDescription("dead letters of a group: list, replay (back to the group's consumers), purge")
)

const bar = (fraction: number) => {
  const width = 30
  const full = Math.round(Math.max(0, Math.min(1, fraction)) * width)
  return `[${"#".repeat(full)}${"-".repeat(width - full)}] ${Math.floor(fraction * 100)}%`
}

const rebuild = Command.make(
  "rebuild",
  {
    name: Args.text({ name: "name" }),
    timeout: Options.integer("timeout").pipe(Options.withDescription("seconds to follow the rebuild"), Options.withDefault(120))
  },
  ({ name, timeout }) =>
    withStore(({ json, prefix }) =>
      Effect.gen(function*() {
        const projections = yield* ProjectionStore
        const store = yield* EventStore
        const generation = yield* projections.rebuild(name)
        if (!json) yield* Console.log(`projection ${name}: generation ${generation} started`)
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
          if (!json) yield* Console.log(`${bar(fraction)}${reset ? "" : "  (waiting for the runner to reset)"}`)
          if (caughtUp) return yield* json ? printJson({ projection: name, generation, caughtUp: true }) : Console.log("caught up")
          if (Date.now() > deadline) {
            return yield* json
              ? printJson({ projection: name, generation, caughtUp: false })
              : Console.log(`not caught up after ${timeout} s (is a runner live?)`)
          }
          yield* Effect.sleep("500 millis")
        }
      }))
).pipe(Command.withDescription("start a new generation of a projection and follow its runner's progress"))

const projection = Command.make("projection").pipe(Command.withSubcommands([rebuild]), Command.withDescription("projections"))

const command = root.pipe(Command.withSubcommands([streams, read, groups, dlq, projection]))

const cli = Command.run(command, { name: "chronicle", version: "0.1.0" })

/** One line for any failure, never a stack or a password. */
const oneLine = (error: unknown): string => {
  const message = typeof error === "object" && error !== null && "message" in error ? String((error as { message: unknown }).message) : String(error)
  return message.split("\n")[0]!.replace(/\/\/([^:@/]*):([^@/]*)@/g, "//$1:***@")
}

NodeRuntime.runMain(
  cli(process.argv).pipe(
    // @effect/cli prints its own help for bad usage; everything else is one line
    Effect.tapError((error) => (ValidationError.isValidationError(error) ? Effect.void : Console.error(`chronicle: ${oneLine(error)}`))),
    Effect.provide(NodeContext.layer)
  ),
  { disableErrorReporting: true }
)
