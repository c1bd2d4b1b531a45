/**
 * Positions on PostgreSQL are a gapless prefix in commit order, under the conditions that
 * break sequence-based stores:
 *  - writers in separate stores (separate pools and connections) over 4 partitions, each
 *    append sleeping a random while INSIDE its locked call (a test-only trigger on the
 *    test's own schema: nothing the production path pays for), and a writer that calls
 *    the append function in a transaction and then rolls it back;
 *  - catch-up readers reading from their cursors all along: every partition reads
 *    exactly 1, 2, 3, … with no hole at every step, and each stream in version order;
 *  - at the end, each partition holds exactly positions 1..head, every acknowledged
 *    event once, and nothing of the rolled-back calls (whose positions others reused).
 * A control shows the trap itself on this server: positions from a sequence let a reader
 * of `pos > cursor` skip an event for good. And a session idle in a transaction elsewhere (holding an xid and a snapshot) does not
 * hold readers back: catch-up read latency and append-to-live-reader latency with and
 * without it, in the same run.
 */
import { describe, expect, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Chunk, Context, Deferred, Effect, Fiber, Layer, Ref, Stream } from "effect"
import { EventStore } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { partitionOf } from "../../src/internal/ids.js"
import { clientLayer, postgresFile } from "../support/postgres.js"

const { server, schemas } = postgresFile()

const P = 4

/** A store of its own (its own pool) in `schema`, in the current scope. */
const storeIn = (url: string, schema: string, maxConnections = 4) =>
  Effect.map(
    Layer.build(PostgresChronicle.layer({ schema, partitions: P }).pipe(Layer.provide(clientLayer(url, maxConnections)))),
    (ctx) => Context.get(ctx, EventStore.EventStore)
  )

/** A plain client, in the current scope. */
const clientIn = (url: string, maxConnections = 2) => Effect.map(Layer.build(clientLayer(url, maxConnections)), (ctx) => Context.get(ctx, PgClient.PgClient))

const event = (data: Record<string, unknown>): EventStore.NewEvent => ({ eventId: crypto.randomUUID(), type: "Noted", data })

/** A seeded generator, so that a failing run can be repeated. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const posOf = (e: EventStore.RecordedEvent) => Number(e.position.entryId.split("-")[0])

/** What a reader saw so far, checked as it goes: positions 1, 2, 3, … per partition, versions 1, 2, 3, … per stream. */
const makeChecker = () => {
  const lastPos = Array.from({ length: P }, () => 0)
  const lastVersion = new Map<string, number>()
  const problems: Array<string> = []
  const ids = new Set<string>()
  return {
    lastPos,
    ids,
    problems,
    see: (e: EventStore.RecordedEvent) => {
      const p = e.position.partition
      const pos = posOf(e)
      if (pos !== lastPos[p]! + 1) problems.push(`partition ${p}: position ${pos} after ${lastPos[p]}`)
      lastPos[p] = pos
      const v = lastVersion.get(e.stream) ?? 0
      if (e.version !== v + 1) problems.push(`${e.stream}: version ${e.version} after ${v}`)
      lastVersion.set(e.stream, e.version)
      ids.add(e.eventId)
    }
  }
}

describe("PostgreSQL ordering", () => {
  it.live("writers in separate stores sleeping inside their locked appends, rollbacks, catch-up readers throughout: every partition reads 1..head with no hole, each stream in order", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => server.get())
      const schema = s.freshSchema("chronicle_order")
      schemas.add(schema)
      const category = "orders"
      const writers = yield* Effect.forEach(Array.from({ length: 6 }), () => storeIn(s.url, schema))
      const admin = yield* clientIn(s.url)
      // the hook: a random sleep of up to 3 ms inside every append that writes, after the
      // partition's row is locked and before commit; it counts its calls
      yield* admin.unsafe(`CREATE SEQUENCE "${schema}".test_sleeps`)
      yield* admin.unsafe(`CREATE FUNCTION "${schema}".test_sleep() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM nextval('"${schema}".test_sleeps'); PERFORM pg_sleep(random() * 0.003); RETURN NULL; END $$`)
      yield* admin.unsafe(`CREATE TRIGGER test_sleep AFTER INSERT ON "${schema}".events FOR EACH STATEMENT EXECUTE FUNCTION "${schema}".test_sleep()`)

      const acknowledged = yield* Ref.make(new Map<string, Array<string>>())
      const done = yield* Deferred.make<void>()
      const perWriter = 120
      const writerOf = new Map(writers.map((_, w) => [w, new Set<string>()]))
      const writer = (store: EventStore.EventStore.Service, w: number) =>
        Effect.gen(function*() {
          const next = random(1000 + w)
          for (let i = 0; i < perWriter; i++) {
            const stream = `${category}-s${Math.floor(next() * 24)}`
            const batch = Array.from({ length: 1 + Math.floor(next() * 3) }, (_, j) => event({ w, i, j }))
            const r = yield* store.append(stream, batch)
            yield* Ref.update(acknowledged, (m) => m.set(stream, [...(m.get(stream) ?? []), ...batch.map((e) => e.eventId)]))
            for (const e of batch) writerOf.get(w)!.add(e.eventId)
            expect(r.positions.length).toBe(batch.length)
          }
        })

      // calls the append function in a transaction of its own, holds the lock a while, rolls back
      const rolledBack: Array<{ readonly partition: number; readonly positions: ReadonlyArray<number>; readonly ids: ReadonlyArray<string> }> = []
      const rollbacks = Effect.gen(function*() {
        const sql = yield* clientIn(s.url, 1)
        const next = random(7)
        for (let i = 0; i < 30; i++) {
          const id = `s${Math.floor(next() * 24)}`
          const partition = partitionOf(id, P)
          const ids = [crypto.randomUUID(), crypto.randomUUID()]
          const outcome = yield* sql.withTransaction(
            Effect.gen(function*() {
              const rows = yield* sql.unsafe(
                `SELECT r_status, r_positions::text[] FROM "${schema}".append($1, $2, $3, $4, $5, $6, $7::uuid[], $8, $9, $10, $11)`,
                [category, P, partition, [id], [-1], [2], ids, ["Noted", "Noted"], ['{"rolled":1}', '{"rolled":2}'], ["", ""], 0]
              ).values
              const row = rows[0] as [string, Array<string>]
              yield* Effect.sleep(`${Math.floor(next() * 4)} millis`)
              return yield* Effect.fail({ _tag: "RollBack" as const, status: row[0], positions: row[1].map(Number) })
            })
          ).pipe(Effect.flip)
          if (outcome._tag === "RollBack") {
            expect(outcome.status).toBe("ok")
            rolledBack.push({ partition, positions: outcome.positions, ids })
          } else {
            return yield* Effect.die(outcome)
          }
          yield* Effect.sleep("2 millis")
        }
      }).pipe(Effect.scoped)

      // catch-up readers, from their cursors, over and over until the writers are done
      const reader = (store: EventStore.EventStore.Service) =>
        Effect.gen(function*() {
          const checker = makeChecker()
          let reads = 0
          for (;;) {
            const finished = yield* Deferred.isDone(done)
            const cursor = checker.lastPos.map((pos) => `${pos}-0`)
            yield* Stream.runForEach(store.readCategory(category, { from: cursor, pageSize: 64 }), (e) => Effect.sync(() => checker.see(e)))
            reads++
            if (finished) return { checker, reads }
            yield* Effect.sleep("3 millis")
          }
        })

      const readerFibers = yield* Effect.forEach([writers[0]!, writers[3]!], (store) => Effect.fork(reader(store)))
      // a live reader too, in a store of its own that writes nothing (it sees others' appends by polling)
      const watcher = yield* storeIn(s.url, schema, 2)
      const liveChecker = makeChecker()
      const live = yield* Effect.fork(
        Stream.runForEach(
          watcher.readCategory(category, { live: true }).pipe(Stream.filter((x): x is EventStore.RecordedEvent => !EventStore.isCaughtUp(x))),
          (e) => Effect.sync(() => liveChecker.see(e))
        )
      )
      yield* Effect.all([...writers.map((store, w) => writer(store, w)), rollbacks], { concurrency: "unbounded", discard: true })
      yield* Deferred.succeed(done, undefined)
      const results = yield* Effect.forEach(readerFibers, Fiber.join)

      // the end state: heads, positions 1..head with no hole, every acknowledged id once
      const heads = (yield* admin.unsafe(`SELECT g, coalesce(max(e.pos), 0)::text FROM generate_series(0, ${P - 1}) g LEFT JOIN "${schema}".events e ON e.category = $1 AND e.partition = g GROUP BY g ORDER BY g`, [category]).values)
        .map((r) => Number(r[1]))
      expect(heads.length).toBe(P)
      const acked = yield* Ref.get(acknowledged)
      const total = [...acked.values()].reduce((n, ids) => n + ids.length, 0)
      expect(heads.reduce((a, b) => a + b, 0)).toBe(total)
      for (let p = 0; p < P; p++) {
        const positions = (yield* admin.unsafe(`SELECT e.pos::text FROM "${schema}".events e WHERE e.category = $1 AND e.partition = $2 ORDER BY e.pos`, [category, p]).values)
          .map((r) => Number(r[0]))
        expect(positions, `partition ${p}`).toEqual(Array.from({ length: heads[p]! }, (_, i) => i + 1))
      }
      const all = Chunk.toReadonlyArray(yield* Stream.runCollect(writers[5]!.readCategory(category)))
      expect(all.length).toBe(total)
      for (const [stream, ids] of acked) {
        // writers raced on a stream: the same ids, and each writer's own in the order it appended them
        const stored = all.filter((e) => e.stream === stream).map((e) => e.eventId)
        expect(stored.slice().sort(), stream).toEqual(ids.slice().sort())
        const order = new Map(stored.map((id, i) => [id, i]))
        for (const w of writerOf.keys()) {
          const mine = ids.filter((id) => writerOf.get(w)!.has(id)).map((id) => order.get(id)!)
          expect(mine).toEqual(mine.slice().sort((a, b) => a - b))
        }
        const versions = (yield* Stream.runCollect(writers[1]!.read(stream))).pipe(Chunk.toReadonlyArray).map((e) => e.version)
        expect(versions).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1))
      }
      // the rolled-back calls took positions that later appends took again, and left nothing
      expect(rolledBack.length).toBe(30)
      const byId = new Set(all.map((e) => e.eventId))
      for (const r of rolledBack) for (const id of r.ids) expect(byId.has(id)).toBe(false)
      const reused = rolledBack.filter((r) => r.positions.every((pos) => pos <= heads[r.partition]!)).length
      expect(reused, "rolled-back positions written again by later appends").toBeGreaterThan(0)
      // the hook ran inside the appends that wrote
      const sleeps = Number((yield* admin.unsafe(`SELECT last_value::text FROM "${schema}".test_sleeps`).values)[0]![0])
      expect(sleeps).toBeGreaterThanOrEqual(6 * perWriter)

      // the readers: no hole and no disorder at any step, and in the end everything
      for (const { checker, reads } of results) {
        expect(checker.problems).toEqual([])
        expect(reads).toBeGreaterThan(5)
        expect(checker.lastPos).toEqual(heads)
        expect(checker.ids.size).toBe(total)
      }
      yield* Effect.gen(function*() {
        while (liveChecker.ids.size < total) yield* Effect.sleep("20 millis")
      }).pipe(Effect.timeout("10 seconds"))
      yield* Fiber.interrupt(live)
      expect(liveChecker.problems).toEqual([])
      expect(liveChecker.lastPos).toEqual(heads)
      yield* Effect.logInfo(`ordering: ${total} events, heads ${heads.join(",")}, ${sleeps} sleeps, ${rolledBack.length} rollbacks (${reused} reused), reads ${results.map((r) => r.reads).join(",")}`)
    }).pipe(Effect.scoped), 180_000)

  it.live("control: with positions from a sequence (taken at INSERT, seen at COMMIT), a reader of pos > cursor skips an event for good, which the store's lock prevents", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => server.get())
      const schema = s.freshSchema("chronicle_control")
      schemas.add(schema)
      const admin = yield* clientIn(s.url)
      yield* admin.unsafe(`CREATE SCHEMA "${schema}"`)
      yield* admin.unsafe(`CREATE TABLE "${schema}".log (pos bigserial PRIMARY KEY, note text)`)
      const slow = yield* clientIn(s.url, 1)
      const fast = yield* clientIn(s.url, 1)
      const taken = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      // A takes position 1 and commits late; B takes position 2 and commits at once
      const a = yield* Effect.fork(slow.withTransaction(Effect.gen(function*() {
        yield* slow.unsafe(`INSERT INTO "${schema}".log (note) VALUES ('slow')`)
        yield* Deferred.succeed(taken, undefined)
        yield* Deferred.await(release)
      })))
      yield* Deferred.await(taken)
      yield* fast.unsafe(`INSERT INTO "${schema}".log (note) VALUES ('fast')`)
      const read = (after: number) =>
        Effect.map(admin.unsafe(`SELECT l.pos::text FROM "${schema}".log l WHERE l.pos > $1 ORDER BY l.pos`, [after]).values, (rows) => rows.map((r) => Number(r[0])))
      let cursor = 0
      const problems: Array<string> = []
      const step = (positions: ReadonlyArray<number>) => {
        for (const pos of positions) {
          if (pos !== cursor + 1) problems.push(`position ${pos} after ${cursor}`)
          cursor = pos
        }
      }
      step(yield* read(cursor))
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(a)
      step(yield* read(cursor))
      expect(problems).toEqual(["position 2 after 0"])
      // and the reader, at its cursor 2, never sees position 1
      expect(cursor).toBe(2)
      expect(yield* read(0)).toEqual([1, 2])
    }).pipe(Effect.scoped))

  it.live("a session idle in a transaction elsewhere (an xid and a snapshot held) does not slow readers: catch-up reads and append-to-live-reader latency, with and without it", () =>
    Effect.gen(function*() {
      const s = yield* Effect.promise(() => server.get())
      const schema = s.freshSchema("chronicle_idle")
      schemas.add(schema)
      const category = "idle"
      const writer = yield* storeIn(s.url, schema)
      // the live reader is in another store: it learns of the writer's appends by polling only
      const readerStore = yield* storeIn(s.url, schema)
      for (let i = 0; i < 20; i++) {
        yield* writer.append(`${category}-${i % 10}`, Array.from({ length: 50 }, (_, j) => event({ i, j })))
      }
      const seen = new Map<string, number>()
      const caughtUp = yield* Deferred.make<void>()
      const live = yield* Effect.fork(
        Stream.runForEach(readerStore.readCategory(category, { live: true }), (x) =>
          EventStore.isCaughtUp(x) ? Deferred.succeed(caughtUp, undefined) : Effect.sync(() => {
            seen.set(x.eventId, performance.now())
          }))
      )
      yield* Deferred.await(caughtUp)

      const median = (xs: ReadonlyArray<number>) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
      /** Median catch-up read of the whole category (1,000 events), and median append-to-delivery latency. */
      const measure = (label: string) =>
        Effect.gen(function*() {
          const reads: Array<number> = []
          for (let i = 0; i < 15; i++) {
            const t = performance.now()
            const n = Chunk.size(yield* Stream.runCollect(readerStore.readCategory(category)))
            reads.push(performance.now() - t)
            expect(n).toBeGreaterThanOrEqual(1000)
          }
          const latencies: Array<number> = []
          for (let i = 0; i < 15; i++) {
            const e = event({ label, i })
            const t = performance.now()
            yield* writer.append(`${category}-${i % 10}`, [e])
            const arrived = yield* Effect.gen(function*() {
              for (;;) {
                const at = seen.get(e.eventId)
                if (at !== undefined) return at
                yield* Effect.sleep("1 millis")
              }
            }).pipe(Effect.timeout("5 seconds"))
            latencies.push(arrived - t)
            // let the reader's polling settle back to its slowest, the same before each append
            yield* Effect.sleep(`${20 + (i % 3) * 10} millis`)
          }
          return { read: median(reads), delivery: median(latencies) }
        })

      const before = yield* measure("without")
      // the idle session: a repeatable-read transaction that read the events table, holds an xid, and waits
      const idle = yield* clientIn(s.url, 1)
      const open = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(
        idle.withTransaction(
          Effect.gen(function*() {
            yield* idle.unsafe("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield* idle.unsafe(`SELECT count(*) FROM "${schema}".events`)
            yield* idle.unsafe("SELECT txid_current()")
            yield* Deferred.succeed(open, undefined)
            yield* Deferred.await(release)
          })
        )
      )
      yield* Deferred.await(open)
      const admin = yield* clientIn(s.url, 1)
      const states = yield* admin.unsafe(`SELECT count(*)::int FROM pg_stat_activity WHERE state = 'idle in transaction' AND backend_xid IS NOT NULL`).values
      const during = yield* measure("with")
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.interrupt(live)
      yield* Effect.logInfo(`idle transaction: catch-up read ${before.read.toFixed(1)} ms without, ${during.read.toFixed(1)} ms with; delivery ${before.delivery.toFixed(1)} ms without, ${during.delivery.toFixed(1)} ms with`)
      expect(Number(states[0]![0]), "the idle session holds an xid while readers are measured").toBe(1)
      // room for noise (a shared machine): within 3x and 30 ms of the baseline
      expect(during.read).toBeLessThan(before.read * 3 + 30)
      expect(during.delivery).toBeLessThan(before.delivery * 3 + 30)
    }).pipe(Effect.scoped), 120_000)
})
