/**
 * Live reads: a screen following one order (`read(stream, { live: true })`) while other
 * orders are busy, and a report that counts only what is placed after it asked for the
 * category's end (`end(category)`). In memory by default; with DATABASE_URL set, on
 * PostgreSQL; with REDIS_URL set, on Redis.
 *
 * Run: npx tsx examples/live-reads/main.ts
 */
import { Chunk, Console, Deferred, Effect, Fiber, Layer, Schema, Stream } from "effect"
import { Chronicle, Contract, EventStore } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"

const Orders = Contract.make("orders", {
  Placed: { sku: Schema.String },
  Packed: {},
  Shipped: { carrier: Schema.String }
})

const program = Effect.gen(function*() {
  const orders = yield* EventStore.forContract(Orders)
  const store = yield* EventStore.EventStore
  yield* orders.append("o-1", [Orders.make.Placed({ sku: "book" })])

  // the screen of order o-1: what it holds now, then each change as it comes
  const shown = yield* Deferred.make<void>()
  const screen = yield* orders.read("o-1", { live: true }).pipe(
    Stream.tap((x) => (EventStore.isStreamCaughtUp(x) ? Deferred.succeed(shown, undefined) : Effect.void)),
    Stream.map((x) => (EventStore.isStreamCaughtUp(x) ? `-- up to date at v${x.version} --` : `v${x.version} ${x.event._tag}`)),
    Stream.take(4),
    Stream.runCollect,
    Effect.fork
  )
  yield* Deferred.await(shown)

  // the report counts what is placed from now on, however late its read starts
  const end = yield* store.end("orders")
  for (let i = 2; i <= 50; i++) yield* orders.append(`o-${i}`, [Orders.make.Placed({ sku: "pen" })])
  yield* orders.append("o-1", [Orders.make.Packed({})])
  yield* orders.append("o-1", [Orders.make.Shipped({ carrier: "post" })])

  const placedSince = yield* orders.readCategory({ from: end, live: true }).pipe(
    Stream.filter((x) => !EventStore.isCaughtUp(x)),
    Stream.take(51),
    Stream.runCount
  )
  for (const line of Chunk.toReadonlyArray(yield* Fiber.join(screen))) yield* Console.log(line)
  yield* Console.log(`events since the report asked: ${placedSince}`)
})

const backend: Layer.Layer<Chronicle.Services> = process.env.DATABASE_URL
  ? PostgresChronicle.layer({ schema: `live_reads_${Date.now().toString(36)}` }).pipe(Layer.provide(PostgresChronicle.clientLayerConfig()), Layer.orDie)
  : process.env.REDIS_URL
  ? RedisChronicle.layer({ prefix: `live-reads-${Date.now()}` }).pipe(Layer.provide(RedisClient.layerConfig()), Layer.orDie)
  : Chronicle.layerMemory

Effect.runPromise(program.pipe(Effect.provide(backend)))
