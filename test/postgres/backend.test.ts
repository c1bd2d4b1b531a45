/**
 * What is particular to the PostgreSQL backend: its schema and options, the partition
 * registry shared by processes, coalescing, the error classification, and an append
 * whose connection is lost after it was sent.
 */
import { describe, expect, it } from "@effect/vitest"
import { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { Chunk, ConfigProvider, Context, Deferred, Effect, Exit, Fiber, Layer, Redacted, Scope, Stream } from "effect"
import { ConsumerGroups, EventStore, Snapshots } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { partitionOf } from "../../src/internal/ids.js"
import { appendError, classify, storeError } from "../../src/postgres/internal/errors.js"
import { clientIn, clientLayer, postgresFile } from "../support/postgres.js"
import { startProxy } from "../support/proxy.js"
import { createConnection, createServer, type Socket } from "node:net"

const { fresh } = postgresFile()

/** Builds a store in the current scope; fails with the layer's error. */
const storeIn = (url: string, options: PostgresChronicle.Options) =>
  Effect.map(
    Layer.build(PostgresChronicle.layer(options).pipe(Layer.provide(clientLayer(url, 4)))),
    (ctx) => Context.get(ctx, EventStore.EventStore)
  )

const event = (data: Record<string, unknown> = {}, eventId: string = crypto.randomUUID()): EventStore.NewEvent => ({ eventId, type: "Noted", data })

/**
 * A loopback TCP relay that can stop passing the server's replies on (while keeping every
 * connection open): on every connection, or only on those open now (as a NAT or a firewall
 * that dropped their state does, while new connections go through).
 */
const startSilencer = (upstreamPort: number) =>
  new Promise<{
    readonly port: number
    readonly silence: (on: boolean) => void
    readonly silenceOpen: () => number
    readonly close: () => Promise<void>
  }>((resolve) => {
    let silent = false
    const sockets = new Set<Socket>()
    const dead = new Set<Socket>()
    const relay = createServer((client) => {
      const upstream = createConnection({ host: "127.0.0.1", port: upstreamPort })
      sockets.add(client).add(upstream)
      client.on("data", (chunk) => {
        if (!dead.has(client)) upstream.write(chunk)
      })
      upstream.on("data", (chunk) => {
        if (!silent && !dead.has(client)) client.write(chunk)
      })
      const end = () => {
        client.destroy()
        upstream.destroy()
      }
      client.on("close", end).on("error", end)
      upstream.on("close", end).on("error", end)
    })
    relay.listen(0, "127.0.0.1", () => {
      const address = relay.address()
      resolve({
        port: typeof address === "object" && address !== null ? address.port : 0,
        silence: (on) => {
          silent = on
        },
        silenceOpen: () => {
          let n = 0
          for (const socket of sockets) {
            if (socket.remotePort !== upstreamPort) {
              dead.add(socket)
              n++
            }
          }
          return n
        },
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy()
            relay.close(() => done())
          })
      })
    })
  })

const collect = <A, E, R>(s: Stream.Stream<A, E, R>) => Effect.map(Stream.runCollect(s), Chunk.toReadonlyArray)

/**
 * Holds the lock of `category`'s only partition from a transaction of another connection
 * (which has called the append function and waits); `release` rolls it back.
 */
const holdPartition = (url: string, schema: string, category: string) =>
  Effect.gen(function*() {
    const holder = yield* clientIn(url)
    const holding = yield* Deferred.make<void>()
    const release = yield* Deferred.make<void>()
    const held = yield* Effect.fork(holder.withTransaction(Effect.gen(function*() {
      yield* holder.unsafe(`SELECT * FROM "${schema}".append($1, $2, $3, $4, $5, $6, $7::uuid[], $8, $9, $10)`, [
        category, 1, 0, ["x"], [-1], [1], [crypto.randomUUID()], ["Noted"], ["{}"], [""]
      ])
      yield* Deferred.succeed(holding, undefined)
      yield* Deferred.await(release)
      return yield* Effect.fail("roll back" as const)
    })).pipe(Effect.flip))
    yield* Deferred.await(holding)
    return {
      /** Rolls the holder back; succeeds once it has. */
      release: Effect.zipRight(Deferred.succeed(release, undefined), Effect.map(Fiber.join(held), (r) => expect(r).toBe("roll back")))
    }
  })

describe("PostgreSQL backend", () => {
  it.live("the layer creates its schema and records its version; a schema of a newer version is refused; stores built at once do not race", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_schema")
      // three processes starting together on a schema that does not exist yet
      const stores = yield* Effect.all([storeIn(url, { schema }), storeIn(url, { schema }), storeIn(url, { schema })], { concurrency: "unbounded" })
      yield* stores[0]!.append("things-1", [event()])
      expect((yield* collect(stores[2]!.read("things-1"))).length).toBe(1)
      const sql = yield* clientIn(url)
      const version = yield* sql.unsafe(`SELECT version FROM "${schema}".schema_version`).values
      expect(version).toEqual([[2]])
      const tables = yield* sql.unsafe(`SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`, [schema]).values
      expect(tables.map((r) => r[0])).toEqual([
        "acks", "categories", "data_keys", "dead_letters", "deliveries", "events", "group_members", "group_partitions", "groups",
        "partitions", "pending_redeliveries", "projections", "redeliveries", "schema_version", "snapshots", "streams"
      ])
      yield* sql.unsafe(`UPDATE "${schema}".schema_version SET version = 99`)
      const error = yield* Effect.flip(Effect.scoped(storeIn(url, { schema })))
      expect(error._tag).toBe("SchemaVersionMismatch")
      if (error._tag === "SchemaVersionMismatch") expect([error.schema, error.recorded, error.supported]).toEqual([schema, 99, 2])
    }).pipe(Effect.scoped))

  it.live("bad options are typed errors when the layer is built, before the schema is touched", () =>
    Effect.gen(function*() {
      const { url } = yield* fresh("chronicle_options")
      const cases: ReadonlyArray<readonly [PostgresChronicle.Options, string, string]> = [
        [{ schema: "Bad-Name" }, "ConfigurationError", "schema"],
        [{ schema: "" }, "ConfigurationError", "schema"],
        [{ livePolling: { min: "2 seconds", max: "1 second" } }, "ConfigurationError", "livePolling.max"],
        [{ livePolling: { min: "0 millis" } }, "ConfigurationError", "livePolling.min"],
        [{ coalescing: { maxEvents: 0 } }, "ConfigurationError", "coalescing.maxEvents"],
        [{ lockTimeout: "0 millis" }, "ConfigurationError", "lockTimeout"],
        [{ lockTimeout: "10 seconds", appendTimeout: "5 seconds" }, "ConfigurationError", "appendTimeout"],
        [{ personalData: { cacheTtl: "0 millis" } }, "ConfigurationError", "personalData.cacheTtl"],
        [{ partitions: 0 }, "InvalidArgument", "partitions"],
        [{ limits: { maxBatchEvents: -1 } }, "InvalidArgument", "limits.maxBatchEvents"]
      ]
      for (const [options, tag, field] of cases) {
        const error = yield* Effect.flip(Effect.scoped(storeIn(url, { schema: "chronicle_never_created", ...options })))
        expect(error._tag, JSON.stringify(options)).toBe(tag)
        expect(error._tag === "ConfigurationError" ? error.option : error._tag === "InvalidArgument" ? error.argument : "").toBe(field)
      }
      const sql = yield* clientIn(url)
      const created = yield* sql.unsafe(`SELECT count(*)::int FROM pg_namespace WHERE nspname = 'chronicle_never_created'`).values
      expect(created).toEqual([[0]])
    }).pipe(Effect.scoped))

  it.live("appends need READ COMMITTED: a store whose connections default to another level is refused at start; the function refuses a transaction at another level", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_isolation")
      const serializable = `${url}?options=${encodeURIComponent("-c default_transaction_isolation=serializable")}`
      const error = yield* Effect.flip(Effect.scoped(storeIn(serializable, { schema })))
      expect(error._tag).toBe("ConfigurationError")
      expect(error._tag === "ConfigurationError" && [error.option, error.reason]).toEqual([
        "default_transaction_isolation",
        expect.stringContaining("serializable")
      ])
      // the schema is not touched by a store refused at start
      const sql = yield* clientIn(url)
      expect(yield* sql.unsafe(`SELECT count(*)::int FROM pg_namespace WHERE nspname = $1`, [schema]).values).toEqual([[0]])
      const store = yield* storeIn(url, { schema, partitions: 1 })
      yield* store.append("iso-1", [event()])
      // a caller's own REPEATABLE READ transaction: its snapshot would not see later commits
      const refused = yield* sql.withTransaction(
        Effect.gen(function*() {
          yield* sql.unsafe("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
          return yield* sql.unsafe(`SELECT * FROM "${schema}".append($1, $2, $3, $4, $5, $6, $7::uuid[], $8, $9, $10)`, [
            "iso", 1, 0, ["1"], [-1], [1], [crypto.randomUUID()], ["Noted"], ["{}"], [""]
          ])
        })
      ).pipe(Effect.flip)
      const classified = storeError("append", refused)
      expect(classified).toMatchObject({ _tag: "StoreUnavailable", retryable: false })
      expect(classified.reason).toContain("READ COMMITTED")
      expect(classified.reason).toContain("0A000")
      expect((yield* collect(store.read("iso-1"))).length).toBe(1)
    }).pipe(Effect.scoped))

  it.live("an append (and a live read) inside a caller's transaction runs outside it: the caller's rollback does not undo an acknowledged append", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_outside")
      const store = yield* storeIn(url, { schema, partitions: 1 })
      const sql = yield* clientIn(url)
      const e = event()
      const outcome = yield* sql.withTransaction(
        Effect.gen(function*() {
          const written = yield* Effect.orDie(store.append("outside-1", [e]))
          // and a live reader started in the transaction: it must not read through its connection
          const first = yield* store.readCategory("outside", { live: true }).pipe(
            Stream.filter((x): x is EventStore.RecordedEvent => !EventStore.isCaughtUp(x)),
            Stream.take(1),
            Stream.runCollect,
            Effect.orDie
          )
          return yield* Effect.fail({ written, first: Chunk.toReadonlyArray(first) })
        })
      ).pipe(Effect.flip)
      if (!("written" in outcome)) return yield* Effect.die(outcome)
      expect(outcome.written.replayed).toBe(false)
      expect(outcome.first.map((x) => x.eventId)).toEqual([e.eventId])
      // the caller's transaction was rolled back; the acknowledged append stays
      expect((yield* collect(store.read("outside-1"))).map((x) => x.eventId)).toEqual([e.eventId])
      // and a later append from outside any transaction is not held behind it
      const later = yield* store.append("outside-1", [event()])
      expect(later.firstVersion).toBe(2)
    }).pipe(Effect.scoped))

  it.live("layerConfig and clientLayerConfig read the schema, the partition count and the URL from the environment; the URL stays redacted", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_config")
      // a password in the URL (the test server trusts loopback, so any will do): it must never show
      const withPassword = url.replace("postgres@", "postgres:s3cr3t-pw@")
      const env = ConfigProvider.fromMap(new Map([["DATABASE_URL", withPassword], ["CHRONICLE_PG_SCHEMA", schema], ["CHRONICLE_PARTITIONS", "3"]]))
      const client = PostgresChronicle.clientLayerConfig()
      const ctx = yield* Layer.build(
        Layer.merge(PostgresChronicle.layerConfig().pipe(Layer.provide(client)), client).pipe(Layer.provide(Layer.setConfigProvider(env)))
      )
      const store = Context.get(ctx, EventStore.EventStore)
      expect(yield* store.partitions("things")).toBe(3)
      const r = yield* store.append("things-1", [event()])
      expect(r.positions[0]!.partition).toBeLessThan(3)
      const pg = Context.get(ctx, PgClient.PgClient)
      expect(Redacted.isRedacted(pg.config.url)).toBe(true)
      expect(`${String(pg.config.url)} ${JSON.stringify(pg.config.url)}`).not.toContain("s3cr3t-pw")
      expect(pg.config.maxConnections).toBe(10)
      const sql = yield* clientIn(url)
      expect(yield* sql.unsafe(`SELECT category, partitions FROM "${schema}".categories`).values).toEqual([["things", 3]])
      const names = yield* sql.unsafe(`SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name = 'effect-chronicle'`).values
      expect(names).toEqual([["effect-chronicle"]])
    }).pipe(Effect.scoped))

  it.live("a category's partition count is fixed when first written: a store configured otherwise gets PartitionCountMismatch, on append and on reads", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_registry")
      const two = yield* storeIn(url, { schema, partitions: 2 })
      const four = yield* storeIn(url, { schema, partitions: { default: 4, byCategory: { other: 2 } } })
      yield* two.append("fixed-1", [event()])
      const onAppend = yield* Effect.flip(four.append("fixed-2", [event()]))
      expect(onAppend._tag).toBe("PartitionCountMismatch")
      if (onAppend._tag === "PartitionCountMismatch") expect([onAppend.category, onAppend.recorded, onAppend.configured]).toEqual(["fixed", 2, 4])
      expect((yield* Effect.flip(four.partitions("fixed")))._tag).toBe("PartitionCountMismatch")
      expect((yield* Effect.flip(Stream.runDrain(four.readCategory("fixed"))))._tag).toBe("PartitionCountMismatch")
      expect((yield* Effect.flip(Stream.runDrain(four.read("fixed-1"))))._tag).toBe("PartitionCountMismatch")
      // nothing of the refused append was written
      expect((yield* collect(two.readCategory("fixed"))).length).toBe(1)
      // a live reader records the count before it reads: the first writer configured otherwise is refused
      const reader = yield* Effect.fork(Stream.runDrain(four.readCategory("followed", { live: true })))
      yield* Effect.sleep("200 millis")
      expect((yield* Effect.flip(two.append("followed-1", [event()])))._tag).toBe("PartitionCountMismatch")
      yield* Fiber.interrupt(reader)
      // byCategory applies per category
      yield* four.append("other-1", [event()])
      expect(yield* two.partitions("other")).toBe(2)
    }).pipe(Effect.scoped))

  it.live("concurrent appends to one partition share calls, each answered on its own", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_coalesce")
      const store = yield* storeIn(url, { schema, partitions: 1 })
      yield* store.append("batch-taken", [event()])
      const results = yield* Effect.all(
        Array.from({ length: 60 }, (_, i) =>
          Effect.either(store.append(i === 30 ? "batch-taken" : `batch-${i}`, [event({ i })], { expectedVersion: i === 30 ? "no-stream" : 0 }))),
        { concurrency: "unbounded" }
      )
      const failed = results.filter((r) => r._tag === "Left")
      expect(failed.length).toBe(1)
      expect(failed[0]!._tag === "Left" && failed[0]!.left._tag).toBe("WrongExpectedVersion")
      const positions = results.flatMap((r) => (r._tag === "Right" ? r.right.positions.map((p) => Number(p.entryId.split("-")[0])) : []))
      expect(positions.slice().sort((a, b) => a - b)).toEqual(Array.from({ length: 59 }, (_, i) => i + 2))
      // the events of one call share its commit time (taken once, under the lock): fewer times than appends
      const read = yield* collect(store.readCategory("batch"))
      expect(read.length).toBe(60)
      const times = new Set(read.map((e) => e.time.epochMillis))
      expect(times.size).toBeLessThan(30)
      // commit times never go back along a partition
      const ms = read.map((e) => e.time.epochMillis)
      expect(ms).toEqual(ms.slice().sort((a, b) => a - b))
      expect(Math.abs(ms[0]! - Date.now())).toBeLessThan(60_000)
    }).pipe(Effect.scoped))

  it.live("readCategory merges partitions by commit time (positions say nothing of time across partitions) catching up; live, each stream in order", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_merge")
      const store = yield* storeIn(url, { schema, partitions: 4 })
      // a busy stream first, then a stream of another partition: its first positions are low, its times late
      const busy = "merged-busy"
      const quiet = Array.from({ length: 40 }, (_, i) => `merged-q${i}`).find((s) => partitionOf(s.slice(7), 4) !== partitionOf(busy.slice(7), 4))!
      for (let i = 0; i < 30; i++) yield* store.append(busy, [event({ i })])
      yield* Effect.sleep("5 millis")
      for (let i = 0; i < 3; i++) yield* store.append(quiet, [event({ i })])
      const read = yield* collect(store.readCategory("merged", { pageSize: 8 }))
      expect(read.map((e) => e.stream)).toEqual([...Array.from({ length: 30 }, () => busy), quiet, quiet, quiet])
      const ms = read.map((e) => e.time.epochMillis)
      expect(ms).toEqual(ms.slice().sort((a, b) => a - b))
      // live: what several partitions hold when a follow reads them comes out in commit order too
      const other = yield* storeIn(url, { schema, partitions: 4 })
      const caughtUp = yield* Deferred.make<void>()
      const reader = yield* Effect.fork(
        other.readCategory("merged", { live: true, from: "end" }).pipe(
          Stream.tap((x) => (EventStore.isCaughtUp(x) ? Deferred.succeed(caughtUp, undefined) : Effect.void)),
          Stream.filter((x): x is EventStore.RecordedEvent => !EventStore.isCaughtUp(x)),
          Stream.take(12),
          Stream.runCollect
        )
      )
      yield* Deferred.await(caughtUp)
      // written by this store while the reader (another store) polls: it sees them in batches
      for (let i = 0; i < 6; i++) {
        yield* store.append(busy, [event({ late: i })])
        yield* Effect.sleep("2 millis")
        yield* store.append(quiet, [event({ late: i })])
        yield* Effect.sleep("2 millis")
      }
      const live = Chunk.toReadonlyArray(yield* Fiber.join(reader))
      // each follow's batch is merged by commit time; across batches the partitions
      // interleave (the documented order): a reader woken for one partition may read past
      // what another partition committed in between, so only each stream's order is sure
      for (const stream of [busy, quiet]) {
        expect(live.filter((e) => e.stream === stream).map((e) => (e.data as { late: number }).late)).toEqual([0, 1, 2, 3, 4, 5])
      }
    }).pipe(Effect.scoped))

  it.live("an entity id or a type with a NUL is refused before any I/O; a stream named so reads as empty", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_nul")
      const store = yield* storeIn(url, { schema })
      const onId = yield* Effect.flip(store.append("nul-a\u0000b", [event()]))
      expect(onId._tag).toBe("InvalidArgument")
      const onType = yield* Effect.flip(store.append("nul-1", [{ ...event(), type: "A\u0000" }]))
      expect(onType._tag === "InvalidEvent" && onType.path).toBe("type")
      expect(yield* collect(store.read("nul-a\u0000b"))).toEqual([])
      expect(yield* collect(store.readCategory("nul"))).toEqual([])
    }).pipe(Effect.scoped))

  it.live("an append whose connection is lost after it was sent fails with AppendOutcomeUnknown; the same ids then write it exactly once", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_lost")
      const upstream = new URL(url)
      const proxy = yield* Effect.acquireRelease(Effect.promise(() => startProxy(Number(upstream.port))), (p) => Effect.promise(() => p.close()))
      const viaProxy = url.replace(`:${upstream.port}/`, `:${proxy.port}/`)
      const store = yield* storeIn(viaProxy, { schema })
      yield* store.append("lost-warm", [event()])
      // the call is slow inside the database, so that the connection goes while it runs
      const sql = yield* clientIn(url)
      yield* sql.unsafe(`CREATE FUNCTION "${schema}".test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF EXISTS (SELECT 1 FROM inserted WHERE stream_id = 'slow') THEN PERFORM pg_sleep(0.3); END IF; RETURN NULL; END $$`)
      yield* sql.unsafe(`CREATE TRIGGER test_slow AFTER INSERT ON "${schema}".events REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION "${schema}".test_slow()`)
      const batch = [event({ n: 1 }), event({ n: 2 })]
      const cut = proxy.cutAfterRequest((request) => request.includes(".append("))
      const error = yield* Effect.flip(store.append("lost-slow", batch, { expectedVersion: "no-stream" }))
      yield* Effect.promise(() => cut)
      expect(error._tag).toBe("AppendOutcomeUnknown")
      if (error._tag === "AppendOutcomeUnknown") expect(error.eventIds).toEqual(batch.map((e) => e.eventId))
      expect(EventStore.isRetryable(error)).toBe(true)
      // the retry: a replay if the lost call committed, else written now; either way once
      yield* Effect.sleep("500 millis")
      const retry = yield* store.append("lost-slow", batch, { expectedVersion: "no-stream" })
      expect([retry.firstVersion, retry.lastVersion]).toEqual([1, 2])
      const read = yield* collect(store.read("lost-slow"))
      expect(read.map((e) => e.eventId)).toEqual(batch.map((e) => e.eventId))
      yield* Effect.logInfo(`lost reply: the retry was ${retry.replayed ? "a replay (the lost call had committed)" : "a fresh write (the lost call had not committed)"}`)
    }).pipe(Effect.scoped))

  it.live("an append call with no reply within appendTimeout fails with AppendOutcomeUnknown (a connection gone silent does not hold it for good)", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_silent")
      const upstream = new URL(url)
      const silent = yield* Effect.acquireRelease(Effect.promise(() => startSilencer(Number(upstream.port))), (p) => Effect.promise(() => p.close()))
      const store = yield* storeIn(url.replace(`:${upstream.port}/`, `:${silent.port}/`), { schema, lockTimeout: "200 millis", appendTimeout: "1 second" })
      yield* store.append("silent-warm", [event()])
      silent.silence(true)
      const batch = [event({ n: 1 })]
      const started = Date.now()
      const error = yield* Effect.flip(store.append("silent-1", batch, { expectedVersion: "no-stream" }))
      expect(error._tag).toBe("AppendOutcomeUnknown")
      expect(error._tag === "AppendOutcomeUnknown" && error.reason).toContain("no reply within 1s")
      const waited = Date.now() - started
      expect(waited).toBeGreaterThanOrEqual(900)
      expect(waited, "answered at the deadline, not after the driver's cancel").toBeLessThan(3000)
      silent.silence(false)
      // the same ids, from a store with a sound connection: written once
      const direct = yield* storeIn(url, { schema })
      const retry = yield* direct.append("silent-1", batch, { expectedVersion: "no-stream" })
      expect([retry.firstVersion, retry.lastVersion]).toEqual([1, 1])
      expect((yield* collect(direct.read("silent-1"))).map((e) => e.eventId)).toEqual(batch.map((e) => e.eventId))
    }).pipe(Effect.scoped), 30_000)

  it.live("connections gone silent on their own (new ones go through) each fail one statement at most, then leave the pool", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_halfdead")
      const upstream = new URL(url)
      const silent = yield* Effect.acquireRelease(Effect.promise(() => startSilencer(Number(upstream.port))), (p) => Effect.promise(() => p.close()))
      const ctx = yield* Layer.build(
        PostgresChronicle.layer({ schema, readTimeout: "1 second", appendTimeout: "1500 millis", lockTimeout: "500 millis", commandTimeout: "1 second" }).pipe(
          Layer.provide(clientLayer(url.replace(`:${upstream.port}/`, `:${silent.port}/`), 4))
        )
      )
      const store = Context.get(ctx, EventStore.EventStore)
      const snapshots = Context.get(ctx, Snapshots.SnapshotStore)
      const groups = Context.get(ctx, ConsumerGroups.ConsumerGroups)
      yield* groups.ensureGroup("g", "halfdead", "start")
      // every connection of the pool (4) opened and idle
      yield* Effect.all(Array.from({ length: 8 }, (_, i) => store.append(`halfdead-${i}`, [event()])), { concurrency: "unbounded" })
      yield* Effect.all(Array.from({ length: 8 }, (_, i) => collect(store.read(`halfdead-${i}`))), { concurrency: "unbounded" })
      const open = silent.silenceOpen()
      expect(open).toBeGreaterThanOrEqual(2)
      const statements: ReadonlyArray<(i: number) => Effect.Effect<unknown, { readonly _tag: string }>> = [
        (i) => collect(store.read(`halfdead-${i % 8}`)),
        (i) => store.append(`halfdead-${i % 8}`, [event()]),
        (i) => snapshots.save(`halfdead-${i % 8}`, { version: 1, stateVersion: 1, state: { i } }),
        (i) => snapshots.load(`halfdead-${i % 8}`),
        () => groups.status("g")
      ]
      const outcomes: Array<string> = []
      for (let i = 0; i < 15; i++) {
        const exit = yield* Effect.exit(statements[i % statements.length]!(i))
        outcomes.push(Exit.isSuccess(exit) ? "ok" : exit.cause._tag === "Fail" ? exit.cause.error._tag : "defect")
      }
      // each silent connection fails the one statement that found it, and no other
      expect(outcomes.filter((o) => o !== "ok").length, outcomes.join(",")).toBeLessThanOrEqual(open)
      expect(outcomes.slice(-5), outcomes.join(",")).toEqual(["ok", "ok", "ok", "ok", "ok"])
    }).pipe(Effect.scoped), 60_000)

  it.live("a read with no reply within readTimeout fails, retryable (a connection gone silent does not hold a reader for good)", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_silent_read")
      const upstream = new URL(url)
      const silent = yield* Effect.acquireRelease(Effect.promise(() => startSilencer(Number(upstream.port))), (p) => Effect.promise(() => p.close()))
      const store = yield* storeIn(url.replace(`:${upstream.port}/`, `:${silent.port}/`), { schema, readTimeout: "1 second" })
      yield* store.append("silentread-1", [event()])
      silent.silence(true)
      for (const read of [collect(store.read("silentread-1")), collect(store.readCategory("silentread"))]) {
        const started = Date.now()
        const error = yield* Effect.flip(read)
        expect(error._tag).toBe("StoreUnavailable")
        // on an open connection, or on a new one that could not be made through the silent path
        expect(error._tag === "StoreUnavailable" && error.retryable).toBe(true)
        expect(["no reply within 1s", "no connection within 1s: nothing was sent"]).toContain(error._tag === "StoreUnavailable" && error.reason)
        const waited = Date.now() - started
        expect(waited).toBeGreaterThanOrEqual(900)
        expect(waited, "answered at the deadline").toBeLessThan(5000)
      }
      silent.silence(false)
      const direct = yield* storeIn(url, { schema })
      expect((yield* collect(direct.read("silentread-1"))).length).toBe(1)
    }).pipe(Effect.scoped), 30_000)

  it.live("an append that waits longer than lockTimeout for its partition's lock fails, retryable, with nothing written", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_locked")
      const store = yield* storeIn(url, { schema, partitions: 1, lockTimeout: "300 millis" })
      yield* store.append("locked-1", [event()])
      // another session calls the append function in a transaction and keeps it open: it holds the lock
      const holder = yield* holdPartition(url, schema, "locked")
      const started = Date.now()
      const error = yield* Effect.flip(store.append("locked-1", [event()]))
      const waited = Date.now() - started
      expect(error._tag).toBe("StoreUnavailable")
      expect(EventStore.isRetryable(error)).toBe(true)
      expect(error._tag === "StoreUnavailable" && error.reason).toContain("55P03")
      expect(waited).toBeGreaterThanOrEqual(250)
      expect(waited).toBeLessThan(5000)
      yield* holder.release
      const retry = yield* store.append("locked-1", [event()])
      expect([retry.firstVersion, retry.positions[0]!.entryId]).toEqual([2, "2-0"])
    }).pipe(Effect.scoped))

  it.live("one call of the append function answers each batch as if alone: batches of streams of their own in one statement, the others one at a time", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_fn")
      const store = yield* storeIn(url, { schema, partitions: 1 })
      yield* store.append("fn-a", [event()])
      const admin = yield* clientIn(url)
      const call = (batches: ReadonlyArray<{ readonly stream: string; readonly expected: number; readonly ids: ReadonlyArray<string> }>) =>
        admin.unsafe(
          `SELECT r_status, r_first::text, r_index, r_version::text, r_type, r_positions::text[] FROM "${schema}".append($1, $2, $3, $4, $5, $6, $7::uuid[], $8, $9, $10, $11)`,
          [
            "fn", 1, 0,
            batches.map((b) => b.stream), batches.map((b) => b.expected), batches.map((b) => b.ids.length),
            batches.flatMap((b) => b.ids), batches.flatMap((b) => b.ids.map(() => "Noted")),
            batches.flatMap((b) => b.ids.map((_, i) => JSON.stringify({ i }))), batches.flatMap((b) => b.ids.map(() => "")), 0
          ]
        ).values
      const id = () => crypto.randomUUID()
      const [d1, d2, d3] = [id(), id(), id()]
      // streams of their own, no id known: exact, "exists" on an empty stream, "any", a stale version
      expect(yield* call([
        { stream: "b", expected: 0, ids: [id(), id()] },
        { stream: "a", expected: 0, ids: [id()] },
        { stream: "c", expected: -2, ids: [id()] },
        { stream: "d", expected: -1, ids: [d1, d2, d3] }
      ])).toEqual([
        ["ok", "1", null, null, null, ["2", "3"]],
        ["wev", "1", null, null, null, null],
        ["wev", "0", null, null, null, null],
        ["ok", "1", null, null, null, ["4", "5", "6"]]
      ])
      // one stream twice (the second sees the first) and an exact replay
      expect(yield* call([
        { stream: "b", expected: 2, ids: [id()] },
        { stream: "b", expected: 3, ids: [id()] },
        { stream: "d", expected: 0, ids: [d1, d2, d3] },
        { stream: "e", expected: 0, ids: [id()] }
      ])).toEqual([
        ["ok", "3", null, null, null, ["7"]],
        ["ok", "4", null, null, null, ["8"]],
        ["replay", "1", null, null, null, ["4", "5", "6"]],
        ["ok", "1", null, null, null, ["9"]]
      ])
      // streams of their own, a later id of one batch known; a partial replay
      expect(yield* call([
        { stream: "f", expected: 0, ids: [id()] },
        { stream: "d", expected: -1, ids: [id(), d2] },
        { stream: "a", expected: -1, ids: [d1] }
      ])).toEqual([
        ["ok", "1", null, null, null, ["10"]],
        ["known", null, 1, "2", "Noted", null],
        ["ok", "2", null, null, null, ["11"]]
      ])
      expect(yield* call([{ stream: "d", expected: -1, ids: [d1, d3] }])).toEqual([["mismatch", "1", 1, "3", "Noted", null]])
      const rows = yield* admin.unsafe(`SELECT pos::int, stream_id, version::int FROM "${schema}".events WHERE category = 'fn' ORDER BY pos`).values
      expect(rows).toEqual([
        [1, "a", 1], [2, "b", 1], [3, "b", 2], [4, "d", 1], [5, "d", 2], [6, "d", 3], [7, "b", 3], [8, "b", 4], [9, "e", 1], [10, "f", 1], [11, "a", 2]
      ])
      const registered = yield* admin.unsafe(`SELECT id FROM "${schema}".streams WHERE category = 'fn' ORDER BY id`).values
      expect(registered.map((r) => r[0])).toEqual(["a", "b", "d", "e", "f"])
    }).pipe(Effect.scoped))

  it.live("closing the store while an append call waits for its partition's lock answers it at once: outcome unknown", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_closing")
      const scope = yield* Scope.make()
      const store = yield* storeIn(url, { schema, partitions: 1 }).pipe(Scope.extend(scope))
      yield* store.append("closing-0", [event()])
      const holder = yield* holdPartition(url, schema, "closing")
      const waiting = yield* Effect.fork(Effect.flip(store.append("closing-1", [event()])))
      yield* Effect.sleep("200 millis")
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      const error = yield* Fiber.join(waiting)
      expect(error._tag).toBe("AppendOutcomeUnknown")
      expect(Date.now() - started).toBeLessThan(3000)
      yield* holder.release
    }).pipe(Effect.scoped))

  it.live("ids, types and data with quotes, backslashes, commas, braces, spaces, control characters and astral ones are stored as given, in one call of many batches or alone", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_quoted")
      const store = yield* storeIn(url, { schema, partitions: 1 })
      const odd = [`a"b`, `c\\d`, `e,f`, `{g}`, ` h `, `NULL`, `i\\"j`, `é ☃`, `k\nl\tm`, `n🎉o`, `p\u0001`]
      const data = (s: string) => ({ s, nested: { q: `"${s}"`, b: "\\" + s }, list: [s, "", "}"] })
      yield* Effect.all(odd.map((s) => store.append(`quoted-${s}`, [{ ...event(data(s)), type: `T${s}` }])), { concurrency: "unbounded" })
      yield* store.append(`quoted-${odd[0]}`, [{ ...event(data("alone")), type: `T"\\,{}` }], { expectedVersion: 1 })
      for (const s of odd) {
        const read = yield* collect(store.read(`quoted-${s}`))
        expect(read.map((e) => [e.stream, e.type, e.data])).toEqual(
          s === odd[0] ? [[`quoted-${s}`, `T${s}`, data(s)], [`quoted-${s}`, `T"\\,{}`, data("alone")]] : [[`quoted-${s}`, `T${s}`, data(s)]]
        )
      }
    }).pipe(Effect.scoped))

  it.live("an append whose caller is interrupted while it waits behind its partition's call in flight is dropped; the others are answered", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_dropped")
      const store = yield* storeIn(url, { schema, partitions: 1 })
      yield* store.append("dropped-0", [event()])
      const holder = yield* holdPartition(url, schema, "dropped")
      // the first call waits for the lock; the next two wait behind it in this process
      const first = yield* Effect.fork(store.append("dropped-1", [event()]))
      yield* Effect.sleep("100 millis")
      const second = yield* Effect.fork(store.append("dropped-2", [event()]))
      const third = yield* Effect.fork(store.append("dropped-3", [event()]))
      yield* Effect.sleep("50 millis")
      yield* Fiber.interrupt(second)
      yield* holder.release
      expect((yield* Fiber.join(first)).positions[0]!.entryId).toBe("2-0")
      expect((yield* Fiber.join(third)).positions[0]!.entryId).toBe("3-0")
      const read = yield* collect(store.readCategory("dropped"))
      expect(read.map((e) => e.stream)).toEqual(["dropped-0", "dropped-1", "dropped-3"])
    }).pipe(Effect.scoped))

  it.live("an append that cannot be interrupted where it waits is sent and answered although its fiber is told to stop", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_kept")
      const store = yield* storeIn(url, { schema, partitions: 1 })
      yield* store.append("kept-0", [event()])
      const holder = yield* holdPartition(url, schema, "kept")
      const first = yield* Effect.fork(store.append("kept-1", [event()]))
      yield* Effect.sleep("100 millis")
      // waits behind the call in flight, in a region that cannot be interrupted
      const answered = yield* Deferred.make<string>()
      const second = yield* Effect.fork(Effect.uninterruptible(
        Effect.tap(store.append("kept-2", [event()]), (r) => Deferred.succeed(answered, r.positions[0]!.entryId))
      ))
      const third = yield* Effect.fork(store.append("kept-3", [event()]))
      yield* Effect.sleep("50 millis")
      yield* Fiber.interruptFork(second)
      yield* Effect.sleep("50 millis")
      yield* holder.release
      expect((yield* Fiber.join(first)).positions[0]!.entryId).toBe("2-0")
      expect(yield* Deferred.await(answered)).toBe("3-0")
      expect((yield* Fiber.join(third)).positions[0]!.entryId).toBe("4-0")
      const read = yield* collect(store.readCategory("kept"))
      expect(read.map((e) => e.stream)).toEqual(["kept-0", "kept-1", "kept-2", "kept-3"])
    }).pipe(Effect.scoped))

  it.effect("a live reader under a test clock still sees another store's appends (the head poller keeps the wall clock)", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_testclock")
      const writer = yield* storeIn(url, { schema, partitions: 2 })
      const reader = yield* storeIn(url, { schema, partitions: 2 })
      const caughtUp = yield* Deferred.make<void>()
      const seen = yield* Effect.fork(
        reader.readCategory("clocked", { live: true }).pipe(
          Stream.tap((x) => (EventStore.isCaughtUp(x) ? Deferred.succeed(caughtUp, undefined) : Effect.void)),
          Stream.filter((x): x is EventStore.RecordedEvent => !EventStore.isCaughtUp(x)),
          Stream.take(3),
          Stream.runCollect
        )
      )
      yield* Deferred.await(caughtUp)
      // on the wall clock: well after the poller's first poll, so that only later polls can see these
      const wallSleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))
      for (let i = 0; i < 3; i++) {
        yield* wallSleep(150)
        yield* writer.append(`clocked-${i}`, [event({ i })])
      }
      const events = Chunk.toReadonlyArray(yield* Fiber.join(seen))
      expect(events.map((e) => (e.data as { i: number }).i).sort()).toEqual([0, 1, 2])
    }).pipe(Effect.scoped), 20_000)

  it("errors are classified by what the server said, never by message text", () => {
    const server = (code: string) => new SqlError({ cause: Object.assign(new Error(`server says ${code}`), { code, severity: "ERROR" }), message: "Failed to execute statement" })
    for (const code of ["40001", "40P01", "55P03", "57014", "57P01", "53300", "08006", "25006"]) {
      expect(classify(server(code)), code).toMatchObject({ kind: "server", code, retryable: true })
      expect(appendError("s-1", ["x"], server(code))._tag, code).toBe("StoreUnavailable")
    }
    expect(classify(server("23505"))).toMatchObject({ kind: "server", retryable: false })
    expect(storeError("read", server("42501"))._tag).toBe("PermissionDenied")
    const refused = new SqlError({ cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }), message: "Failed to acquire connection" })
    expect(classify(refused)).toMatchObject({ kind: "not-sent", retryable: true })
    expect(appendError("s-1", ["x"], refused)._tag).toBe("StoreUnavailable")
    const lost = new SqlError({ cause: new Error("Connection terminated unexpectedly"), message: "Connection error" })
    expect(classify(lost)).toMatchObject({ kind: "lost", retryable: true })
    const unknown = appendError("s-1", ["x"], lost)
    expect(unknown._tag).toBe("AppendOutcomeUnknown")
    expect(storeError("read", lost)).toMatchObject({ _tag: "StoreUnavailable", retryable: true })
  })
})
