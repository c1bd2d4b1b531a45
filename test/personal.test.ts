/**
 * Personal data that can be forgotten, on memory and on Redis: fields marked
 * `Contract.personal` are stored encrypted under their subject's key; after
 * `PersonalData.forget(A)` nothing stored holds A's plaintext (on Redis, every key of the
 * test's own server is read), A's fields read as the contract's forgotten values, B's in
 * clear, and a projection rebuilt afterwards holds none of A's. A value altered in
 * storage, or moved to another event, fails authentication with a typed error; without
 * a key store the typed path refuses to write personal fields.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Fiber, Layer, Option, Redacted, Schedule, Schema, Stream } from "effect"
import { Aggregate, Chronicle, Contract, DeadLetters, EventStore, PersonalData, Producer, Projection, Snapshots, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { SubscriberSuite } from "effect-chronicle/testing"
import { Redis } from "ioredis"
import { startRedisServer } from "./support/redisServer.js"

const Customers = Contract.make("customers", {
  Registered: {
    email: Contract.personal(Schema.String, { forgotten: "(forgotten)" }),
    name: Contract.personal(Schema.String, { forgotten: "" }),
    plan: Schema.String
  },
  EmailChanged: { email: Contract.personal(Schema.String, { forgotten: "(forgotten)" }) }
})
const Orders = Contract.make("orders", {
  Placed: { customerId: Contract.subject(Schema.String), address: Contract.personal(Schema.String, { forgotten: "" }), total: Schema.Int }
})

const ALICE = ["alice@example.com", "Alice Liddell", "alice.l@example.org", "1 Wonderland Way"]
const BOB = ["bob@example.com", "Bob Builder", "2 Fixit Lane"]

type Services = Chronicle.Services

const scenario = (name: string, layer: Layer.Layer<Services, unknown>, stored: Effect.Effect<string>) =>
  describe(`personal data: ${name}`, () => {
    it.live("after forget(A), nothing stored holds A's plaintext, A reads as forgotten and B in clear; a rebuilt projection holds none of A's", () =>
      Effect.gen(function*() {
        const ctx = yield* Layer.build(layer)
        yield* Effect.gen(function*() {
          const customers = yield* Producer.make(Customers)
          const orders = yield* Producer.make(Orders)
          yield* customers.Registered({ email: ALICE[0]!, name: ALICE[1]!, plan: "gold" }, { entityId: "alice" })
          yield* customers.EmailChanged({ email: ALICE[2]! }, { entityId: "alice" })
          yield* customers.Registered({ email: BOB[0]!, name: BOB[1]!, plan: "free" }, { entityId: "bob" })
          yield* orders.Placed({ customerId: "alice", address: ALICE[3]!, total: 12 }, { entityId: "o1" })
          yield* orders.Placed({ customerId: "bob", address: BOB[2]!, total: 30 }, { entityId: "o2" })

          // encrypted from the start: no plaintext of either subject is stored
          const before = yield* stored
          for (const text of [...ALICE, ...BOB]) expect(before.includes(text), text).toBe(false)

          // a subscriber handles them in clear while the keys exist; it refuses free plans,
          // so a dead letter is stored too (and scanned below)
          const seen: Array<string> = []
          const sub = yield* Effect.fork(Subscriber.run(Customers, {
            group: "mail",
            retry: Schedule.recurs(0),
            handlers: {
              Registered: (e) => (e.plan === "free" ? Effect.fail("no mail on the free plan") : Effect.sync(() => seen.push(e.email))),
              EmailChanged: (e) => Effect.sync(() => seen.push(e.email))
            }
          }))
          yield* SubscriberSuite.waitUntil("the subscriber", Effect.map(DeadLetters.list("mail"), (l) => seen.length === 2 && l.length === 1).pipe(Effect.orElseSucceed(() => false)))
          yield* Fiber.interrupt(sub)
          expect(seen.slice().sort()).toEqual([ALICE[0], ALICE[2]].sort())

          // a projection: a read model of names, rebuilt after the forget
          const names = new Map<string, string>()
          const projection = Projection.make({
            name: "names",
            contract: Customers,
            handlers: {
              Registered: (e: { readonly name: string; readonly email: string }, c: Projection.ProjectionContext) =>
                Effect.sync(() => names.set(c.envelope.entityId, `${e.name} <${e.email}>`)),
              EmailChanged: () => Effect.void
            },
            reset: Effect.sync(() => names.clear())
          })
          const run = yield* Effect.fork(Projection.run(projection))
          yield* SubscriberSuite.waitUntil("the projection", Effect.sync(() => names.size === 2))
          expect(names.get("alice")).toBe(`${ALICE[1]} <${ALICE[0]}>`)

          yield* PersonalData.forget("alice")
          yield* Projection.rebuild(projection)
          yield* SubscriberSuite.waitUntil("the rebuilt projection", Effect.sync(() => names.size === 2 && names.get("alice") === " <(forgotten)>"))
          yield* Fiber.interrupt(run)
          const model = JSON.stringify(Array.from(names))
          for (const text of ALICE) expect(model.includes(text), text).toBe(false)
          expect(names.get("bob")).toBe(`${BOB[1]} <${BOB[0]}>`)

          // reads: A forgotten (the orders where A is the subject too), B in clear
          const typedCustomers = yield* EventStore.forContract(Customers)
          const typedOrders = yield* EventStore.forContract(Orders)
          const events = (s: Stream.Stream<{ readonly event: unknown }, unknown>) => Effect.map(Stream.runCollect(s), (c) => Chunk.toReadonlyArray(c).map((r) => r.event))
          expect(yield* events(typedCustomers.read("alice"))).toEqual([
            Customers.make.Registered({ email: "(forgotten)", name: "", plan: "gold" }),
            Customers.make.EmailChanged({ email: "(forgotten)" })
          ])
          expect(yield* events(typedCustomers.read("bob"))).toEqual([Customers.make.Registered({ email: BOB[0]!, name: BOB[1]!, plan: "free" })])
          expect(yield* events(typedOrders.read("o1"))).toEqual([Orders.make.Placed({ customerId: "alice", address: "", total: 12 })])
          expect(yield* events(typedOrders.read("o2"))).toEqual([Orders.make.Placed({ customerId: "bob", address: BOB[2]!, total: 30 })])

          // and still nothing of either in what is stored
          const after = yield* stored
          for (const text of [...ALICE, ...BOB]) expect(after.includes(text), text).toBe(false)
        }).pipe(Effect.provide(ctx))
      }).pipe(Effect.scoped), 60_000)

    it.live("a value altered in storage, moved to another event, or opened with a wrong key fails authentication with PersonalDataError; without a key store nothing personal is written", () =>
      Effect.gen(function*() {
        const ctx = yield* Layer.build(layer)
        yield* Effect.gen(function*() {
          const store = yield* EventStore.EventStore
          const typed = yield* EventStore.forContract(Customers)
          yield* typed.append("carol", [Customers.make.Registered({ email: "carol@example.com", name: "Carol", plan: "free" })])
          // encryption leaves ids alone: the same batch again is a replay, though its ciphertext differs
          const again = yield* typed.append("carol", [Customers.make.Registered({ email: "carol@example.com", name: "Carol", plan: "free" })], {
            eventIds: [Chunk.toReadonlyArray(yield* Stream.runCollect(store.read("customers-carol")))[0]!.eventId]
          })
          expect([again.replayed, again.firstVersion]).toEqual([true, 1])
          // an id given in upper case is stored in lower case: the value still opens
          const upper = crypto.randomUUID().toUpperCase()
          yield* typed.append("upper", [Customers.make.Registered({ email: "u@example.com", name: "U", plan: "free" })], { eventIds: [upper] })
          expect(Chunk.toReadonlyArray(yield* Stream.runCollect(typed.read("upper"))).map((r) => [r.eventId, (r.event as { email: string }).email])).toEqual([[upper.toLowerCase(), "u@example.com"]])
          const [stored] = Chunk.toReadonlyArray(yield* Stream.runCollect(store.read("customers-carol")))
          const sealed = (stored!.data as { readonly email: { readonly ct: string } }).email
          const flipped = { ...sealed, ct: (sealed.ct[0] === "A" ? "B" : "A") + sealed.ct.slice(1) }
          // the raw path stores what it is given: an altered copy, and the intact one under another event id
          yield* store.append("customers-carol", [
            { eventId: crypto.randomUUID(), type: "Registered", data: { ...(stored!.data as object), email: flipped } },
            { eventId: crypto.randomUUID(), type: "Registered", data: stored!.data }
          ])
          const read = (from: number) => Effect.flip(Stream.runCollect(typed.read("carol", { from, limit: 1 })))
          const altered = yield* read(2)
          const moved = yield* read(3)
          expect([altered._tag, moved._tag]).toEqual(["PersonalDataError", "PersonalDataError"])
          expect(String(altered.message)).toContain("email")
          expect(String(altered.message).includes("carol@example.com")).toBe(false)
          // the original still reads
          expect(Chunk.toReadonlyArray(yield* Stream.runCollect(typed.read("carol", { limit: 1 }))).map((r) => r.event)).toEqual([
            Customers.make.Registered({ email: "carol@example.com", name: "Carol", plan: "free" })
          ])
        }).pipe(Effect.provide(ctx))
        // a key store that answers with the right key id but other bytes (a corrupted key):
        // a typed error, never garbage
        const real = Context.get(ctx as Context.Context<Services>, PersonalData.KeyStore)
        const wrongKeys = PersonalData.KeyStore.of({
          ...real,
          get: (subject) => Effect.map(real.get(subject), Option.map((k) => ({ id: k.id, material: Redacted.make(new Uint8Array(32).fill(7)) })))
        })
        const wrong = yield* Effect.flip(Effect.flatMap(EventStore.forContract(Customers), (t) => Stream.runCollect(t.read("carol", { limit: 1 })))).pipe(
          Effect.provide(Context.add(Context.omit(PersonalData.KeyStore)(ctx as Context.Context<Services>), PersonalData.KeyStore, wrongKeys))
        )
        expect(wrong._tag).toBe("PersonalDataError")
        // no key store: the typed path refuses before anything is written
        const withoutKeys = Context.omit(PersonalData.KeyStore)(ctx as Context.Context<Services>)
        const refused = yield* Effect.flip(Effect.flatMap(EventStore.forContract(Customers), (t) => t.append("dave", [Customers.make.Registered({ email: "dave@example.com", name: "Dave", plan: "free" })]))).pipe(
          Effect.provide(withoutKeys)
        )
        expect(refused._tag).toBe("PersonalDataError")
        const dave = yield* Stream.runCollect(Context.get(ctx as Context.Context<Services>, EventStore.EventStore).read("customers-dave"))
        expect(Chunk.size(dave)).toBe(0)
      }).pipe(Effect.scoped), 60_000)
  })

// memory: what the store holds (events raw, dead letters), read back through the store itself
const memoryDump = (ctx: () => Context.Context<Services> | undefined) =>
  Effect.suspend(() => {
    const c = ctx()
    if (c === undefined) return Effect.succeed("")
    const store = Context.get(c, EventStore.EventStore)
    return Effect.map(
      Effect.all([
        Effect.map(Stream.runCollect(store.readCategory("customers")), Chunk.toReadonlyArray),
        Effect.map(Stream.runCollect(store.readCategory("orders")), Chunk.toReadonlyArray),
        DeadLetters.list("mail").pipe(Effect.provide(c), Effect.orElseSucceed(() => []))
      ]),
      (parts) => JSON.stringify(parts)
    ).pipe(Effect.orDie)
  })

let memoryCtx: Context.Context<Services> | undefined = undefined
const memoryLayer = Layer.scopedContext(Effect.tap(Layer.build(Chronicle.layerMemory), (c) => Effect.sync(() => (memoryCtx = c as Context.Context<Services>))))
scenario("in memory", memoryLayer as Layer.Layer<Services, unknown>, memoryDump(() => memoryCtx))

// Redis: every key of this test's own server, whatever its type
const server = await startRedisServer()
const raw = new Redis(server.url)
const redisDump = Effect.promise(async () => {
  const parts: Array<string> = []
  let cursor = "0"
  do {
    const [next, keys] = await raw.scan(cursor, "COUNT", 500)
    cursor = next
    for (const key of keys) {
      const type = await raw.type(key)
      parts.push(key)
      if (type === "string") parts.push((await raw.get(key)) ?? "")
      else if (type === "hash") parts.push(JSON.stringify(await raw.hgetall(key)))
      else if (type === "list") parts.push(JSON.stringify(await raw.lrange(key, 0, -1)))
      else if (type === "set") parts.push(JSON.stringify(await raw.smembers(key)))
      else if (type === "zset") parts.push(JSON.stringify(await raw.zrange(key, 0, -1, "WITHSCORES")))
      else if (type === "stream") parts.push(JSON.stringify(await raw.xrange(key, "-", "+")))
      else parts.push(`(${type})`)
    }
  } while (cursor !== "0")
  return parts.join("\n")
})
const redisLayer = RedisChronicle.layer({ prefix: "pd", partitions: 2 }).pipe(Layer.provide(RedisClient.layer({ url: server.url })))
scenario("on Redis", redisLayer as Layer.Layer<Services, unknown>, redisDump)

describe("personal data: aggregates", () => {
  it.effect("an aggregate over a contract with personal fields loads A as forgotten after forget(A), and takes no snapshot (its state would hold personal data in clear)", () =>
    Effect.gen(function*() {
      const Account = Aggregate.make({
        contract: Customers,
        command: Schema.Struct({ email: Schema.String }),
        initialState: { email: "", changes: 0 },
        evolve: (s: { readonly email: string; readonly changes: number }, e: { readonly email: string }) => ({ email: e.email, changes: s.changes + 1 }),
        decide: (command: { readonly email: string }) => Effect.succeed([Customers.make.EmailChanged({ email: command.email })]),
        snapshotEvery: 1,
        stateSchema: Schema.Struct({ email: Schema.String, changes: Schema.Number })
      })
      yield* Aggregate.handle(Account, "erin", { email: "erin@example.com" })
      yield* Aggregate.handle(Account, "erin", { email: "erin@example.net" })
      expect((yield* Aggregate.load(Account, "erin")).state).toEqual({ email: "erin@example.net", changes: 2 })
      const snapshots = yield* Snapshots.SnapshotStore
      expect(Option.isNone(yield* snapshots.load("customers-erin"))).toBe(true)
      yield* PersonalData.forget("erin")
      expect((yield* Aggregate.load(Account, "erin")).state).toEqual({ email: "(forgotten)", changes: 2 })
    }).pipe(Effect.provide(Chronicle.layerMemory)))
})

describe("personal data: contracts and messages", () => {
  it.effect("a personal mark inside a struct or an array is a contract issue (it would be stored in clear); errors of personal events and commands name paths, never values", () =>
    Effect.gen(function*() {
      const Nested = Contract.make("nested", {
        Moved: { address: Schema.Struct({ street: Contract.personal(Schema.String) }), tags: Schema.Array(Contract.personal(Schema.String)) }
      })
      expect(Nested.issues.length).toBe(2)
      expect((yield* Effect.flip(EventStore.forContract(Nested)))._tag).toBe("InvalidContract")

      const Strict = Contract.make("strict", {
        Registered: { email: Contract.personal(Schema.String.pipe(Schema.pattern(/@example\.org$/)), { forgotten: "(forgotten)@example.org" }) }
      })
      const typed = yield* EventStore.forContract(Strict)
      const bad = yield* Effect.flip(typed.append("zoe", [Strict.make.Registered({ email: "zoe@example.com" })]))
      expect(bad._tag).toBe("InvalidEvent")
      expect(JSON.stringify(bad).includes("zoe@example.com")).toBe(false)
      const Account = Aggregate.make({
        contract: Customers,
        command: Schema.Struct({ email: Schema.String.pipe(Schema.pattern(/@example\.org$/)) }),
        initialState: 0,
        evolve: (n: number) => n + 1,
        decide: (command: { readonly email: string }) => Effect.succeed([Customers.make.EmailChanged({ email: command.email })])
      })
      const refused = yield* Effect.flip(Aggregate.handle(Account, "zoe", { email: "zoe@example.com" }))
      expect(refused._tag).toBe("InvalidCommand")
      expect(JSON.stringify(refused).includes("zoe@example.com")).toBe(false)
    }).pipe(Effect.provide(Chronicle.layerMemory)))
})

describe("personal data on Redis: the key store", () => {
  it.live("a subject forgotten by another process is forgotten here within cacheTtl: a write after it makes a new key instead of writing under the destroyed one", () =>
    Effect.gen(function*() {
      const layer = () =>
        RedisChronicle.layer({ prefix: "pd2", partitions: 2, personalData: { cacheTtl: "200 millis" } }).pipe(Layer.provide(RedisClient.layer({ url: server.url })))
      const one = yield* Layer.build(layer())
      const two = yield* Layer.build(layer())
      const write = (ctx: Context.Context<Services>, email: string) =>
        Effect.flatMap(EventStore.forContract(Customers), (t) => t.append("frank", [Customers.make.EmailChanged({ email })])).pipe(Effect.provide(ctx))
      const emails = (ctx: Context.Context<Services>) =>
        Effect.flatMap(EventStore.forContract(Customers), (t) => Stream.runCollect(t.read("frank"))).pipe(
          Effect.map((c) => Chunk.toReadonlyArray(c).map((r) => (r.event as { email: string }).email)),
          Effect.provide(ctx)
        )
      yield* write(one as Context.Context<Services>, "frank@example.com")
      yield* PersonalData.forget("frank").pipe(Effect.provide(two))
      yield* Effect.sleep("300 millis")
      yield* write(one as Context.Context<Services>, "frank@example.net")
      expect(yield* emails(two as Context.Context<Services>)).toEqual(["(forgotten)", "frank@example.net"])
    }).pipe(Effect.scoped))

  it.live("keys live under their own prefix, apart from the events; a forgotten subject's key is gone", () =>
    Effect.gen(function*() {
      const keys = yield* Effect.promise(() => raw.keys("pd-keys:*"))
      expect(keys.length).toBeGreaterThan(0)
      expect(keys.includes("pd-keys:key:alice")).toBe(false)
      expect(keys.includes("pd-keys:key:bob")).toBe(true)
      const events = yield* Effect.promise(() => raw.keys("pd:*"))
      expect(events.some((k) => k.includes(":key:"))).toBe(false)
    }))
})

afterAll(async () => {
  raw.disconnect()
  await server.stop()
})
