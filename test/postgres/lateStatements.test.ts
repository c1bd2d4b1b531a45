/**
 * Consumer-group statements that run on the server after the member gave up on their
 * reply (a command timeout: the statement was queued behind a slow one, or the server
 * was frozen, and the driver's cancel came too late). Such a statement must never leave
 * a partition stuck.
 */
import { describe, expect, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Fiber, Layer, Schema } from "effect"
import { ConsumerGroups, Contract, EventStore, Subscriber } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { clientLayer, postgresFile } from "../support/postgres.js"

const { server, schemas } = postgresFile()

/** A store in a fresh schema (one partition per category), with the client beside it. */
const storeWithClient = (name: string) =>
  Effect.gen(function*() {
    const s = yield* Effect.promise(() => server.get())
    const schema = s.freshSchema(name)
    schemas.add(schema)
    const ctx = yield* Layer.build(
      Layer.merge(PostgresChronicle.layer({ schema, partitions: 1 }), Layer.effectContext(Effect.context<PgClient.PgClient>())).pipe(
        Layer.provide(clientLayer(s.url, 4))
      )
    )
    return { ctx, schema, sql: Context.get(ctx, PgClient.PgClient) }
  })

/** The first page of a claim of (owner, epoch) on partition 0, as a statement sent earlier and given up on would run. */
const lateClaim = (sql: PgClient.PgClient, schema: string, category: string, owner: string, epoch: number) =>
  sql.unsafe(`SELECT * FROM "${schema}".claim('g', $1, 0, $2, $3, 1::smallint, 0, 100)`, [category, owner, epoch]).values

describe("PostgreSQL groups: statements that run late", () => {
  it.live("a claim's first page that runs after the member's claim ended (it moves the fence on) does not fence the partition's reads off for good", () =>
    Effect.gen(function*() {
      const { ctx, schema, sql } = yield* storeWithClient("chronicle_late")
      const Late = Contract.make("late", { Happened: { n: Schema.Int } })
      const store = yield* EventStore.forContract(Late).pipe(Effect.provide(ctx))
      const handled: Array<number> = []
      const sub = yield* Effect.fork(Subscriber.run(Late, {
        group: "g",
        consumer: "c",
        leaseTtl: "2 seconds",
        heartbeat: "200 millis",
        handlers: { Happened: (event) => Effect.sync(() => handled.push(event.n)) }
      }).pipe(Effect.provide(ctx)))
      yield* store.append("e1", [Late.make.Happened({ n: 1 })])
      yield* Effect.sleep("50 millis").pipe(Effect.repeat({ until: () => handled.length === 1 }), Effect.timeout("10 seconds"))

      // the member's claim is over (it reads); a first page of a claim of the same lease,
      // sent earlier and given up on, runs only now
      const [row] = yield* sql.unsafe(`SELECT owner, epoch::int FROM "${schema}".group_partitions WHERE grp = 'g' AND partition = 0`).values
      const [owner, epoch] = row as [string, number]
      yield* lateClaim(sql, schema, "late", owner, epoch)

      // the partition goes on: new events are handled
      yield* store.append("e1", [Late.make.Happened({ n: 2 }), Late.make.Happened({ n: 3 })])
      const done = yield* Effect.sleep("50 millis").pipe(
        Effect.repeat({ until: () => handled.includes(3) }),
        Effect.timeout("10 seconds"),
        Effect.option
      )
      yield* Fiber.interrupt(sub)
      expect(done._tag, `handled ${JSON.stringify(handled)}`).toBe("Some")
      expect(handled.slice(0, 3)).toEqual([1, 2, 3])
    }).pipe(Effect.scoped), 60_000)

  it.live("a read after a late claim takes nothing and fails, retryable; claiming again tells the member the fence and reads go on", () =>
    Effect.gen(function*() {
      const { ctx, schema, sql } = yield* storeWithClient("chronicle_late_read")
      const groups = Context.get(ctx, ConsumerGroups.ConsumerGroups)
      const store = Context.get(ctx, EventStore.EventStore)
      const event = (n: number): EventStore.NewEvent => ({ eventId: crypto.randomUUID(), type: "Happened", data: { n } })
      yield* store.append("lr-1", [event(1), event(2)])
      const info = yield* groups.ensureGroup("g", "lr", "start")
      const member = "m:1"
      const lease = (yield* groups.acquire(info, 0, member, 30_000))!
      const claimAll = Effect.gen(function*() {
        for (let cursor: ConsumerGroups.ClaimCursor | undefined = ConsumerGroups.claimStart; cursor !== undefined;) {
          cursor = (yield* groups.claim(lease, member, cursor, 100)).next
        }
      })
      yield* claimAll
      expect((yield* groups.read(lease, member, 1)).deliveries.map((d) => d.event instanceof Error ? -1 : d.event.version)).toEqual([1])

      yield* lateClaim(sql, schema, "lr", member, ConsumerGroups.epochOf(lease))
      const fenced = yield* Effect.flip(groups.read(lease, member, 10))
      expect(fenced._tag).toBe("StoreUnavailable")
      expect(EventStore.isRetryable(fenced)).toBe(true)
      // nothing was taken: the next entry is still the second one
      const [row] = yield* sql.unsafe(`SELECT delivered::int FROM "${schema}".group_partitions WHERE grp = 'g' AND partition = 0`).values
      expect(row).toEqual([1])

      yield* claimAll
      const next = yield* groups.read(lease, member, 10)
      expect(next.deliveries.map((d) => d.event instanceof Error ? -1 : d.event.version)).toEqual([2])
    }).pipe(Effect.scoped), 60_000)
})
