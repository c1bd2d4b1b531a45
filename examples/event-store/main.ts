/**
 * A first look at effect-chronicle on the in-memory store: a contract, typed appends with
 * optimistic concurrency, an idempotent retry, and reads of a stream and a category.
 *
 * Run: npm start            (in memory)
 *      REDIS_URL=redis://127.0.0.1:6379 npx tsx examples/event-store/main.ts   (the same program on Redis)
 *      DATABASE_URL=postgres://localhost/postgres npx tsx examples/event-store/main.ts   (on PostgreSQL)
 */
import { Console, Effect, Layer, Schema, Stream } from "effect"
import { Chronicle, Contract, EventStore } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"

const Shipments = Contract.make("shipments", {
  OrderPlaced: { product: Schema.String, quantity: Schema.Int, email: Contract.personal(Schema.String) },
  Packing: { station: Schema.String },
  OnDelivery: { carrier: Schema.String },
  OnReceived: { signedBy: Schema.String }
})

const program = Effect.gen(function*() {
  const shipments = yield* EventStore.forContract(Shipments)

  const placed = yield* shipments.append("order-1", [
    Shipments.make.OrderPlaced({ product: "book", quantity: 2, email: "ada@example.com" })
  ], { expectedVersion: "no-stream" })
  yield* Console.log(`order-1 placed at version ${placed.lastVersion}`)

  // optimistic concurrency: a writer that read version 0 is told the stream moved on
  const stale = yield* Effect.flip(
    shipments.append("order-1", [Shipments.make.Packing({ station: "A" })], { expectedVersion: 0 })
  )
  yield* Console.log(`a stale writer gets ${stale._tag}: ${stale.message}`)

  // idempotency: the same ids again are a replay, answered with the original versions
  const eventIds = [crypto.randomUUID(), crypto.randomUUID()]
  const next = [Shipments.make.Packing({ station: "A" }), Shipments.make.OnDelivery({ carrier: "bike" })]
  const first = yield* shipments.append("order-1", next, { expectedVersion: 1, eventIds })
  const again = yield* shipments.append("order-1", next, { expectedVersion: 1, eventIds })
  yield* Console.log(`retry with the same ids: replayed=${again.replayed}, versions ${again.firstVersion}..${again.lastVersion} (first time ${first.firstVersion}..${first.lastVersion})`)

  yield* shipments.append("order-2", [Shipments.make.OrderPlaced({ product: "lamp", quantity: 1, email: "alan@example.com" })])
  yield* shipments.append("order-1", [Shipments.make.OnReceived({ signedBy: "Ada" })], { expectedVersion: 3 })

  yield* Console.log("order-1, in order:")
  yield* shipments.read("order-1").pipe(
    Stream.runForEach((r) => Console.log(`  v${r.version} ${r.event._tag}`))
  )
  yield* Console.log("the shipments category (each partition in commit order, partitions interleaved):")
  yield* shipments.readCategory().pipe(
    Stream.runForEach((r) => Console.log(`  ${r.stream} v${r.version} ${r.event._tag}`))
  )
})

const redisUrl = process.env.REDIS_URL
const databaseUrl = process.env.DATABASE_URL
const Store: Layer.Layer<Chronicle.Services, unknown> = databaseUrl !== undefined && databaseUrl !== ""
  ? PostgresChronicle.layer({ schema: `example_${Date.now().toString(36)}` }).pipe(Layer.provide(PostgresChronicle.clientLayerConfig()))
  : redisUrl !== undefined && redisUrl !== ""
  ? RedisChronicle.layer({ prefix: `example_${Date.now().toString(36)}` }).pipe(Layer.provide(RedisClient.layerConfig()))
  : Chronicle.layerMemory

Effect.runPromise(program.pipe(Effect.provide(Store))).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
