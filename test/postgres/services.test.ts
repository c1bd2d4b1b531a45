/**
 * The services beside the event store on PostgreSQL: snapshots, projection checkpoints
 * and leases, and the key store of personal data, against the in-memory ones where their
 * answers must agree; and the upgrade of a schema made at version 1 (with events in it)
 * to the current version, in place.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Either, Layer, Option, Redacted, Stream, TestClock } from "effect"
import { EventStore, PersonalData, Projection, Snapshots } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { migrations, schemaVersion } from "../../src/postgres/internal/schema.js"
import { clientIn, clientLayer, postgresFile } from "../support/postgres.js"

const { fresh } = postgresFile()

/** The services on their own pool, built in the current scope (as another process would). */
const servicesIn = (url: string, options: PostgresChronicle.Options) =>
  Layer.build(PostgresChronicle.layer(options).pipe(Layer.provide(clientLayer(url, 4))))

const collect = <A, E, R>(s: Stream.Stream<A, E, R>) => Effect.map(Stream.runCollect(s), Chunk.toReadonlyArray)

describe("PostgreSQL snapshots", () => {
  it.live("save, load, never over the same or a newer version, remove; states read back as JSON made them, as in memory; bad streams are typed errors", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_snap")
      const pg = Context.get(yield* servicesIn(url, { schema, partitions: 2 }), Snapshots.SnapshotStore)
      const memory = Snapshots.makeMemory()
      // the same calls on both: every answer must agree
      const both = <A, E>(f: (s: Snapshots.SnapshotStore.Service) => Effect.Effect<A, E>) =>
        Effect.map(Effect.all([f(pg), f(memory)]), ([a, b]) => {
          expect(a).toEqual(b)
          return a
        })
      expect(yield* both((s) => s.load("orders-1"))).toEqual(Option.none())
      expect(yield* both((s) => s.save("orders-1", { version: 10, stateVersion: 1, state: { total: 10, items: ["a"] } }))).toBe(true)
      expect(yield* both((s) => s.load("orders-1"))).toEqual(Option.some({ version: 10, stateVersion: 1, state: { total: 10, items: ["a"] } }))
      // the same version, an older one: kept as it is
      expect(yield* both((s) => s.save("orders-1", { version: 10, stateVersion: 2, state: { total: -1 } }))).toBe(false)
      expect(yield* both((s) => s.save("orders-1", { version: 4, stateVersion: 1, state: { total: -1 } }))).toBe(false)
      expect(yield* both((s) => s.load("orders-1"))).toEqual(Option.some({ version: 10, stateVersion: 1, state: { total: 10, items: ["a"] } }))
      // a newer one replaces it, whatever its stateVersion
      expect(yield* both((s) => s.save("orders-1", { version: 20, stateVersion: 2, state: { total: 20 } }))).toBe(true)
      expect(yield* both((s) => s.load("orders-1"))).toEqual(Option.some({ version: 20, stateVersion: 2, state: { total: 20 } }))
      // what does not survive JSON reads back as JSON made it
      const odd = { at: new Date(0), gone: undefined, nan: Number.NaN, nested: [undefined, "\u0000 nul inside"] }
      expect(yield* both((s) => s.save("orders-2", { version: 1, stateVersion: 1, state: odd }))).toBe(true)
      const read = yield* both((s) => s.load("orders-2"))
      expect(Option.map(read, (x) => x.state)).toEqual(Option.some({ at: "1970-01-01T00:00:00.000Z", nan: null, nested: [null, "\u0000 nul inside"] }))
      // a state JSON has no text for reads back as no state
      expect(yield* both((s) => s.save("orders-5", { version: 1, stateVersion: 1, state: undefined }))).toBe(true)
      expect(yield* both((s) => s.load("orders-5"))).toEqual(Option.some({ version: 1, stateVersion: 1, state: undefined }))
      // the store does not look at the stream: a snapshot beyond it is stored (Aggregate.load does not trust it)
      expect(yield* both((s) => s.save("orders-3", { version: 9999, stateVersion: 1, state: 1 }))).toBe(true)
      // remove, then any version is stored again
      yield* both((s) => s.remove("orders-1"))
      expect(yield* both((s) => s.load("orders-1"))).toEqual(Option.none())
      expect(yield* both((s) => s.save("orders-1", { version: 1, stateVersion: 1, state: null }))).toBe(true)
      expect(yield* both((s) => s.load("orders-1"))).toEqual(Option.some({ version: 1, stateVersion: 1, state: null }))
      // the row: keyed by category and id, the state as JSON text
      const sql = yield* clientIn(url)
      expect(yield* sql.unsafe(`SELECT category, stream_id, version::int, state_version::int, state FROM "${schema}".snapshots ORDER BY stream_id`).values).toEqual([
        ["orders", "1", 1, 1, "null"],
        ["orders", "2", 1, 1, JSON.stringify(odd)],
        ["orders", "3", 9999, 1, "1"],
        ["orders", "5", 1, 1, null]
      ])

      // bad streams: typed errors before any I/O, on both
      for (const bad of ["nodash", "-1", "bad category-1", "orders-"]) {
        for (const s of [pg, memory]) {
          expect((yield* Effect.flip(s.load(bad)))._tag).toBe("InvalidArgument")
          expect((yield* Effect.flip(s.save(bad, { version: 1, stateVersion: 1, state: {} })))._tag).toBe("InvalidArgument")
          expect((yield* Effect.flip(s.remove(bad)))._tag).toBe("InvalidArgument")
        }
      }
      // a NUL in the id cannot be stored here: refused on save, nothing there to load or remove
      const nul = yield* Effect.flip(pg.save("orders-a\u0000b", { version: 1, stateVersion: 1, state: {} }))
      expect(nul).toMatchObject({ _tag: "InvalidArgument", argument: "stream" })
      expect(yield* pg.load("orders-a\u0000b")).toEqual(Option.none())
      yield* pg.remove("orders-a\u0000b")
      // a state JSON cannot encode, and versions that are not integers
      const cyclic: Record<string, unknown> = {}
      cyclic.self = cyclic
      expect(yield* Effect.flip(pg.save("orders-4", { version: 1, stateVersion: 1, state: cyclic }))).toMatchObject({ _tag: "InvalidArgument", argument: "snapshot.state" })
      expect(yield* Effect.flip(pg.save("orders-4", { version: 1.5, stateVersion: 1, state: {} }))).toMatchObject({ _tag: "InvalidArgument", argument: "snapshot.version" })
      expect(yield* pg.load("orders-4")).toEqual(Option.none())
    }).pipe(Effect.scoped))

  it.live("saves racing from two processes end with the newest; each version is stored at most once", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_snap_race")
      const one = Context.get(yield* servicesIn(url, { schema }), Snapshots.SnapshotStore)
      const two = Context.get(yield* servicesIn(url, { schema }), Snapshots.SnapshotStore)
      const versions = Array.from({ length: 40 }, (_, i) => 1 + ((i * 17) % 40))
      const stored = yield* Effect.all(
        versions.map((v, i) => (i % 2 === 0 ? one : two).save("race-1", { version: v, stateVersion: 1, state: { v } })),
        { concurrency: "unbounded" }
      )
      expect(stored.some((x) => x)).toBe(true)
      expect(yield* one.load("race-1")).toEqual(Option.some({ version: 40, stateVersion: 1, state: { v: 40 } }))
      // once the newest is there, nothing older is taken
      expect(yield* two.save("race-1", { version: 39, stateVersion: 1, state: {} })).toBe(false)
    }).pipe(Effect.scoped))

  it.live("a save inside a caller's transaction runs outside it: the caller's rollback does not undo it", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_snap_outside")
      const ctx = yield* servicesIn(url, { schema })
      const snapshots = Context.get(ctx, Snapshots.SnapshotStore)
      const keys = Context.get(ctx, PersonalData.KeyStore)
      const sql = yield* clientIn(url)
      const outcome = yield* sql.withTransaction(
        Effect.gen(function*() {
          yield* Effect.orDie(snapshots.save("tx-1", { version: 3, stateVersion: 1, state: "kept" }))
          yield* Effect.orDie(keys.getOrCreate("tx-subject"))
          return yield* Effect.fail("rolled back" as const)
        })
      ).pipe(Effect.flip)
      expect(outcome).toBe("rolled back")
      expect(yield* snapshots.load("tx-1")).toEqual(Option.some({ version: 3, stateVersion: 1, state: "kept" }))
      expect(yield* sql.unsafe(`SELECT count(*)::int FROM "${schema}".data_keys WHERE subject = 'tx-subject'`).values).toEqual([[1]])
    }).pipe(Effect.scoped))
})

describe("PostgreSQL projection store", () => {
  it.live("one member holds a lease at a time; a member's own acquire renews it (same token); a release lets the next in with a larger epoch", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_proj_lease")
      const a = Context.get(yield* servicesIn(url, { schema }), Projection.ProjectionStore)
      const b = Context.get(yield* servicesIn(url, { schema }), Projection.ProjectionStore)
      const t1 = yield* a.acquire("orders.view", "member-a", 10_000)
      expect(t1).toBe("member-a:1")
      expect(yield* b.acquire("orders.view", "member-b", 10_000)).toBeUndefined()
      expect(yield* a.acquire("orders.view", "member-a", 10_000)).toBe(t1)
      expect(yield* a.renew("orders.view", t1!, 10_000)).toBe(true)
      // a token that is not the holder's renews nothing and releases nothing
      expect(yield* b.renew("orders.view", "member-b:1", 10_000)).toBe(false)
      expect(yield* b.renew("orders.view", "member-a:2", 10_000)).toBe(false)
      yield* b.release("orders.view", "member-b:1")
      expect(yield* b.acquire("orders.view", "member-b", 10_000)).toBeUndefined()
      // many members at once: exactly one wins
      const racing = yield* Effect.all(
        Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).acquire("orders.race", `m${i}`, 10_000)),
        { concurrency: "unbounded" }
      )
      expect(racing.filter((t) => t !== undefined).length).toBe(1)
      // released: the next holder's epoch is larger, and the old token is dead
      yield* a.release("orders.view", t1!)
      const t2 = yield* b.acquire("orders.view", "member-b", 10_000)
      expect(t2).toBe("member-b:2")
      expect(yield* a.renew("orders.view", t1!, 10_000)).toBe(false)
      yield* b.release("orders.view", t2!)
      expect(yield* a.acquire("orders.view", "member-a", 10_000)).toBe("member-a:3")
      // leases of different projections are apart
      expect(yield* b.acquire("orders.other", "member-b", 10_000)).toBe("member-b:1")
    }).pipe(Effect.scoped))

  it.live("a lease expires on the database's clock: after its TTL (real time) another member takes it with a new epoch, and the old holder can renew nothing nor save (LeaseLost)", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_proj_expiry")
      const a = Context.get(yield* servicesIn(url, { schema }), Projection.ProjectionStore)
      const b = Context.get(yield* servicesIn(url, { schema }), Projection.ProjectionStore)
      const t1 = (yield* a.acquire("p", "member-a", 400))!
      expect(yield* b.acquire("p", "member-b", 400)).toBeUndefined()
      const sql = yield* clientIn(url)
      // the expiry is the database's time plus the TTL
      const rows = yield* sql.unsafe(`SELECT (extract(epoch FROM lease_until - clock_timestamp()) * 1000)::float8 FROM "${schema}".projections WHERE name = 'p'`).values
      const left = Number(rows[0]?.[0])
      expect(left).toBeGreaterThan(0)
      expect(left).toBeLessThanOrEqual(400)
      yield* Effect.sleep("700 millis")
      expect(yield* a.renew("p", t1, 400)).toBe(false)
      const t2 = (yield* b.acquire("p", "member-b", 10_000))!
      expect(t2).toBe("member-b:2")
      expect(yield* Effect.flip(a.save("p", t1, { generation: 0, cursor: ["1-0"], resetDone: 0 }))).toMatchObject({ _tag: "CheckpointRejected", reason: "LeaseLost" })
      // the old holder's release leaves the new lease alone
      yield* a.release("p", t1)
      expect(yield* a.acquire("p", "member-c", 10_000)).toBeUndefined()
      yield* b.save("p", t2, { generation: 0, cursor: ["2-0"], resetDone: 0 })
      // an expired lease of the same member begins anew: a new epoch
      const t3 = (yield* a.acquire("q", "member-a", 200))!
      yield* Effect.sleep("400 millis")
      expect(yield* a.acquire("q", "member-a", 10_000)).not.toBe(t3)
    }).pipe(Effect.scoped))

  it.effect("the process's clock does not decide: moved an hour on (TestClock), the lease still holds and renews", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_proj_clock")
      const a = Context.get(yield* servicesIn(url, { schema }), Projection.ProjectionStore)
      const memory = Projection.makeMemoryStore()
      const t = (yield* a.acquire("p", "member-a", 60_000))!
      const tm = (yield* memory.acquire("p", "member-a", 60_000))!
      yield* TestClock.adjust("1 hour")
      // in memory the lease follows the Effect clock and has expired; on PostgreSQL, the database's
      expect(yield* memory.acquire("p", "member-b", 60_000)).not.toBeUndefined()
      expect(yield* memory.renew("p", tm, 60_000)).toBe(false)
      expect(yield* a.acquire("p", "member-b", 60_000)).toBeUndefined()
      expect(yield* a.renew("p", t, 60_000)).toBe(true)
    }).pipe(Effect.scoped))

  it.live("checkpoints: load after save returns what was saved; save checks the lease and the generation; rebuild starts a generation without a cursor", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_proj_ckpt")
      const pg = Context.get(yield* servicesIn(url, { schema }), Projection.ProjectionStore)
      const memory = Projection.makeMemoryStore()
      const both = <A, E>(f: (s: Projection.ProjectionStore.Service) => Effect.Effect<A, E>) =>
        Effect.map(Effect.all([Effect.either(f(pg)), Effect.either(f(memory))]), ([a, b]) => {
          expect(a).toEqual(b)
          return a
        })
      const get = <A, E>(e: Either.Either<A, E>) => Either.getOrThrow(e)
      expect(get(yield* both((s) => s.load("shop.totals")))).toEqual({ generation: 0, cursor: undefined, resetDone: 0, category: undefined })
      const tokenPg = (yield* pg.acquire("shop.totals", "m", 10_000))!
      const tokenMem = (yield* memory.acquire("shop.totals", "m", 10_000))!
      const save = (checkpoint: Projection.Checkpoint) =>
        both((s) => s.save("shop.totals", s === pg ? tokenPg : tokenMem, checkpoint))
      const first: Projection.Checkpoint = { generation: 0, cursor: ["12-0", "0-0", "7-3"], resetDone: 0, category: "orders" }
      expect(get(yield* save(first))).toBeUndefined()
      expect(get(yield* both((s) => s.load("shop.totals")))).toEqual(first)
      const second: Projection.Checkpoint = { generation: 0, cursor: ["1700000000000-5", "3-0", "9-0"], resetDone: 0, category: "orders" }
      get(yield* save(second))
      expect(get(yield* both((s) => s.load("shop.totals")))).toEqual(second)
      // rebuild: a new generation, no cursor, the rest kept
      expect(get(yield* both((s) => s.rebuild("shop.totals")))).toBe(1)
      expect(get(yield* both((s) => s.load("shop.totals")))).toEqual({ generation: 1, cursor: undefined, resetDone: 0, category: "orders" })
      // a save of the old generation is refused, lease or not
      const stale = yield* save(second)
      expect(Either.isLeft(stale) && stale.left).toMatchObject({ _tag: "CheckpointRejected", projection: "shop.totals", reason: "GenerationChanged" })
      expect(get(yield* both((s) => s.load("shop.totals")))).toEqual({ generation: 1, cursor: undefined, resetDone: 0, category: "orders" })
      // the new generation, once reset
      get(yield* save({ generation: 1, cursor: undefined, resetDone: 1, category: "orders" }))
      get(yield* save({ generation: 1, cursor: ["5-0", "0-0", "0-0"], resetDone: 1, category: "orders" }))
      expect(get(yield* both((s) => s.load("shop.totals")))).toEqual({ generation: 1, cursor: ["5-0", "0-0", "0-0"], resetDone: 1, category: "orders" })
      // a rebuild of a projection never run creates it at generation 1
      expect(get(yield* both((s) => s.rebuild("shop.never")))).toBe(1)
      // without the lease: LeaseLost (checked before the generation)
      const noLease = yield* Effect.flip(pg.save("shop.never", "someone:1", { generation: 0, cursor: undefined, resetDone: 0 }))
      expect(noLease).toMatchObject({ _tag: "CheckpointRejected", reason: "LeaseLost" })
      yield* pg.release("shop.totals", tokenPg)
      expect(yield* Effect.flip(pg.save("shop.totals", tokenPg, { generation: 1, cursor: undefined, resetDone: 1 }))).toMatchObject({ reason: "LeaseLost" })
      expect((yield* pg.load("shop.totals")).cursor).toEqual(["5-0", "0-0", "0-0"])
    }).pipe(Effect.scoped))

  it.live("names are checked as on Redis; bad members, TTLs and cursors are typed errors before any I/O", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_proj_names")
      const pg = Context.get(yield* servicesIn(url, { schema }), Projection.ProjectionStore)
      for (const bad of ["", "has space", "a/b", "x".repeat(129), "nul\u0000"]) {
        expect((yield* Effect.flip(pg.acquire(bad, "m", 1000)))._tag).toBe("InvalidArgument")
        expect((yield* Effect.flip(pg.renew(bad, "m:1", 1000)))._tag).toBe("InvalidArgument")
        expect((yield* Effect.flip(pg.release(bad, "m:1")))._tag).toBe("InvalidArgument")
        expect((yield* Effect.flip(pg.load(bad)))._tag).toBe("InvalidArgument")
        expect((yield* Effect.flip(pg.save(bad, "m:1", { generation: 0, cursor: undefined, resetDone: 0 })))._tag).toBe("InvalidArgument")
        expect((yield* Effect.flip(pg.rebuild(bad)))._tag).toBe("InvalidArgument")
      }
      expect(yield* pg.acquire("A-z_0.9-", "m", 1000)).toBe("m:1")
      expect(yield* Effect.flip(pg.acquire("p", "m\u0000", 1000))).toMatchObject({ _tag: "InvalidArgument", argument: "member" })
      expect(yield* Effect.flip(pg.acquire("p", "m", 0))).toMatchObject({ _tag: "InvalidArgument", argument: "ttlMillis" })
      const token = (yield* pg.acquire("p", "m", 10_000))!
      expect(yield* pg.renew("p", "m\u0000:1", 1000)).toBe(false)
      expect(yield* Effect.flip(pg.save("p", token, { generation: 0, cursor: ["not an entry id"], resetDone: 0 }))).toMatchObject({ _tag: "InvalidArgument", argument: "checkpoint.cursor" })
      expect(yield* Effect.flip(pg.save("p", token, { generation: 0, cursor: undefined, resetDone: 0, category: "a\u0000" }))).toMatchObject({ _tag: "InvalidArgument" })
      expect(yield* pg.load("p")).toEqual({ generation: 0, cursor: undefined, resetDone: 0, category: undefined })
    }).pipe(Effect.scoped))
})

describe("PostgreSQL key store", () => {
  it.live("20 getOrCreate at once for one subject, from two processes (two pools): one key; forget, then get finds none and a new write makes a new key", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_keys")
      const one = Context.get(yield* servicesIn(url, { schema, personalData: { cacheTtl: "200 millis" } }), PersonalData.KeyStore)
      const two = Context.get(yield* servicesIn(url, { schema, personalData: { cacheTtl: "200 millis" } }), PersonalData.KeyStore)
      const sql = yield* clientIn(url)
      for (const subject of ["alice", "bob@example.com", "ünïcødé", "carol"]) {
        const keys = yield* Effect.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? one : two).getOrCreate(subject)), { concurrency: "unbounded" })
        expect(new Set(keys.map((k) => k.id)).size, subject).toBe(1)
        expect(new Set(keys.map((k) => Buffer.from(Redacted.value(k.material)).toString("hex"))).size).toBe(1)
        expect(Redacted.value(keys[0]!.material).length).toBe(32)
        const stored = yield* sql.unsafe(`SELECT key_id, octet_length(material)::int, encode(material, 'hex') FROM "${schema}".data_keys WHERE subject = $1`, [subject]).values
        expect(stored).toEqual([[keys[0]!.id, 32, Buffer.from(Redacted.value(keys[0]!.material)).toString("hex")]])
      }
      const alice = yield* one.getOrCreate("alice")
      expect(Option.map(yield* two.get("alice"), (k) => k.id)).toEqual(Option.some(alice.id))
      expect(yield* one.get("nobody")).toEqual(Option.none())
      // forgotten here: gone at once, here; in the other process within its cacheTtl
      yield* one.forget("alice")
      expect(yield* one.get("alice")).toEqual(Option.none())
      expect(yield* sql.unsafe(`SELECT count(*)::int FROM "${schema}".data_keys WHERE subject = 'alice'`).values).toEqual([[0]])
      yield* Effect.sleep("300 millis")
      expect(yield* two.get("alice")).toEqual(Option.none())
      const again = yield* two.getOrCreate("alice")
      expect(again.id).not.toBe(alice.id)
      expect(Option.map(yield* one.get("alice"), (k) => k.id)).toEqual(Option.some(again.id))
      // forgetting a subject without a key is fine
      yield* one.forget("nobody")
    }).pipe(Effect.scoped))

  it.live("a NUL in a subject: no key is made (KeyStoreError before any I/O), none is found; failures are KeyStoreErrors that carry no key material", () =>
    Effect.gen(function*() {
      const { schema, url } = yield* fresh("chronicle_keys_bad")
      const keys = Context.get(yield* servicesIn(url, { schema }), PersonalData.KeyStore)
      expect(yield* Effect.flip(keys.getOrCreate("a\u0000b"))).toMatchObject({ _tag: "KeyStoreError", operation: "getOrCreate" })
      expect(yield* keys.get("a\u0000b")).toEqual(Option.none())
      yield* keys.forget("a\u0000b")
      const key = yield* keys.getOrCreate("dave")
      const sql = yield* clientIn(url)
      yield* sql.unsafe(`DROP TABLE "${schema}".data_keys`)
      const failed = yield* Effect.flip(keys.getOrCreate("erin"))
      expect(failed._tag).toBe("KeyStoreError")
      expect(failed.operation).toBe("getOrCreate")
      expect(failed.reason).toContain("42P01")
      expect((yield* Effect.flip(keys.forget("dave")))._tag).toBe("KeyStoreError")
      const hex = Buffer.from(Redacted.value(key.material)).toString("hex")
      const b64 = Buffer.from(Redacted.value(key.material)).toString("base64")
      expect(JSON.stringify(failed)).not.toContain(hex)
      expect(JSON.stringify(failed)).not.toContain(b64)
      expect(String(key.material)).not.toContain(b64)
    }).pipe(Effect.scoped))
})

describe("PostgreSQL schema upgrade", () => {
  it.live("a schema made at version 1 with events in it is upgraded in place to the current version: its events still read, and the new services work", () =>
    Effect.gen(function*() {
      expect(schemaVersion).toBe(2)
      const { schema, url } = yield* fresh("chronicle_upgrade")
      const sql = yield* clientIn(url)
      // version 1 exactly as it was made: step 1's statements (all from 0, less those after 1) and its version row
      const all = migrations(schema, 0)
      const afterOne = migrations(schema, 1)
      expect(afterOne.length).toBeGreaterThan(0)
      const stepOne = all.slice(0, all.length - afterOne.length)
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql.unsafe(`CREATE SCHEMA "${schema}"`)
        yield* sql.unsafe(`CREATE TABLE "${schema}".schema_version (only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row), version int NOT NULL)`)
        for (const statement of stepOne) yield* sql.unsafe(statement)
        yield* sql.unsafe(`INSERT INTO "${schema}".schema_version (only_row, version) VALUES (true, 1)`)
      }))
      const tablesBefore = yield* sql.unsafe(`SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`, [schema]).values
      expect(tablesBefore.map((r) => r[0])).toEqual(["categories", "events", "partitions", "schema_version", "streams"])
      // events written by version 1's append function (one partition: every stream in partition 0)
      const ids = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()]
      const written = yield* sql.unsafe(`SELECT r_status FROM "${schema}".append($1, $2, $3, $4, $5, $6, $7::uuid[], $8, $9, $10)`, [
        "things", 1, 0, ["1", "2"], [-1, -1], [2, 1], ids, ["Noted", "Noted", "Noted"], [`{"n":1}`, `{"n":2}`, `{"n":3}`], ["", "", ""]
      ]).values
      expect(written).toEqual([["ok"], ["ok"]])

      // the current code's layer upgrades it
      const ctx = yield* servicesIn(url, { schema, partitions: 1 })
      expect(yield* sql.unsafe(`SELECT version FROM "${schema}".schema_version`).values).toEqual([[schemaVersion]])
      const tablesAfter = yield* sql.unsafe(`SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`, [schema]).values
      expect(tablesAfter.map((r) => r[0])).toEqual([
        "acks", "categories", "data_keys", "dead_letters", "deliveries", "events", "group_members", "group_partitions", "groups",
        "partitions", "pending_redeliveries", "projections", "redeliveries", "schema_version", "snapshots", "streams"
      ])
      const store = Context.get(ctx, EventStore.EventStore)
      const one = yield* collect(store.read("things-1"))
      expect(one.map((e) => [e.version, e.eventId, e.data])).toEqual([[1, ids[0], { n: 1 }], [2, ids[1], { n: 2 }]])
      const log = yield* collect(store.readCategory("things"))
      expect(log.map((e) => e.position.entryId)).toEqual(["1-0", "2-0", "3-0"])
      // a replay of a version-1 append is still recognised, and the log goes on after it
      const replay = yield* store.append("things-1", [{ eventId: ids[0]!, type: "Noted", data: { n: 1 } }, { eventId: ids[1]!, type: "Noted", data: { n: 2 } }])
      expect(replay.replayed).toBe(true)
      const next = yield* store.append("things-2", [{ eventId: crypto.randomUUID(), type: "Noted", data: {} }], { expectedVersion: 1 })
      expect(next.positions[0]!.entryId).toBe("4-0")
      // and the services of version 2
      expect(yield* Context.get(ctx, Snapshots.SnapshotStore).save("things-1", { version: 2, stateVersion: 1, state: { n: 3 } })).toBe(true)
      expect(yield* Context.get(ctx, Projection.ProjectionStore).acquire("things.view", "m", 1000)).toBe("m:1")
      expect((yield* Context.get(ctx, PersonalData.KeyStore).getOrCreate("subject")).id).toMatch(/^[0-9a-f-]{36}$/)
      // a second start finds it at the current version and changes nothing
      yield* servicesIn(url, { schema, partitions: 1 })
      expect(yield* sql.unsafe(`SELECT version FROM "${schema}".schema_version`).values).toEqual([[schemaVersion]])
      expect(yield* Context.get(ctx, Snapshots.SnapshotStore).load("things-1")).toEqual(Option.some({ version: 2, stateVersion: 1, state: { n: 3 } }))
    }).pipe(Effect.scoped))
})
