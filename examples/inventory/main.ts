/**
 * Inventory end to end: commands through the aggregate, read models through a projection.
 *
 * Run: npx tsx examples/inventory/main.ts   (in memory; DATABASE_URL switches to PostgreSQL, REDIS_URL to Redis)
 */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Console, Effect, Fiber, Layer } from "effect"
import { Aggregate, Chronicle, Projection } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { InventoryItem } from "./domain.js"
import { makeReadModels } from "./readModels.js"

const program = Effect.gen(function*() {
  const { projection, read } = yield* makeReadModels
  const runner = yield* Effect.fork(Projection.run(projection))
  yield* Aggregate.handle(InventoryItem, "lamp", { _tag: "Create", name: "Desk lamp" })
  yield* Aggregate.handle(InventoryItem, "lamp", { _tag: "CheckIn", count: 12 })
  yield* Aggregate.handle(InventoryItem, "lamp", { _tag: "Remove", count: 5 })
  yield* Aggregate.handle(InventoryItem, "chair", { _tag: "Create", name: "Chair" })
  yield* Aggregate.handle(InventoryItem, "chair", { _tag: "Rename", name: "Office chair" })
  yield* Aggregate.handle(InventoryItem, "chair", { _tag: "Deactivate" })
  const refused = yield* Effect.flip(Aggregate.handle(InventoryItem, "lamp", { _tag: "Remove", count: 100 }))
  yield* Console.log(`removing 100 lamps: ${refused._tag}`)
  const late = yield* Effect.flip(Aggregate.handle(InventoryItem, "chair", { _tag: "CheckIn", count: 1 }))
  yield* Console.log(`checking in a deactivated chair: ${late._tag}`)
  yield* Projection.awaitCaughtUp(projection)
  const models = yield* read
  for (const item of models.list.values()) {
    const d = models.details.get(item.id)!
    yield* Console.log(`${item.id}: ${item.name}${item.active ? "" : " (deactivated)"}, ${d.count} in stock, version ${d.version}`)
  }
  yield* Fiber.interrupt(runner)
})

const Store = Layer.unwrapEffect(
  Effect.map(Config.all([Config.option(Config.string("DATABASE_URL")), Config.option(Config.string("REDIS_URL"))]), ([database, redis]): Layer.Layer<Chronicle.Services, unknown> =>
    database._tag === "Some" && database.value !== ""
      ? PostgresChronicle.layer({ schema: `inventory_${Date.now().toString(36)}` }).pipe(Layer.provide(PostgresChronicle.clientLayerConfig()))
      : redis._tag === "None" || redis.value === ""
      ? Chronicle.layerMemory
      : RedisChronicle.layer({ prefix: `inventory_${Date.now().toString(36)}` }).pipe(Layer.provide(RedisClient.layerConfig())))
)

NodeRuntime.runMain(program.pipe(Effect.provide(Store)))
