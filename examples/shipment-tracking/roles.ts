/**
 * The three roles of shipment tracking, each usable in one process or in its own:
 * - the producer places orders;
 * - the group "transit" moves each order to its next state by producing the next event;
 * - the group "reporter" prints every change.
 */
import { Config, type ConfigError, Console, Effect, Layer } from "effect"
import { Chronicle, Producer, Subscriber } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Shipments } from "./contract.js"

/** Places `count` orders, `order-1` … `order-<count>`, `pauseMillis` apart. */
export const placeOrders = (count: number, pauseMillis = 0) =>
  Effect.gen(function*() {
    const producer = yield* Producer.make(Shipments)
    for (let i = 1; i <= count; i++) {
      const orderId = `order-${i}`
      // the event id derives from the order: placing the same order again is a no-op
      yield* producer.OrderPlaced(
        { orderId, product: i % 2 === 0 ? "lamp" : "book", quantity: i, email: `customer${i}@example.com` },
        { entityId: orderId, eventId: orderEventId(i) }
      )
      if (pauseMillis > 0) yield* Effect.sleep(pauseMillis)
    }
  })

const orderEventId = (i: number) => `00000000-0000-4000-8000-${i.toString(16).padStart(12, "0")}`

/** The group "transit": each step produces the next, with ids derived from its cause. */
export const transit = Subscriber.layer(Shipments, {
  group: "transit",
  consumer: "transit",
  leaseTtl: "2 seconds",
  heartbeat: "500 millis",
  handlers: {
    OrderPlaced: (event, ctx) => ctx.produce(Shipments).Packing({ orderId: event.orderId, station: "A" }, { entityId: event.orderId }),
    Packing: (event, ctx) => ctx.produce(Shipments).OnDelivery({ orderId: event.orderId, carrier: "bike" }, { entityId: event.orderId }),
    OnDelivery: (event, ctx) => ctx.produce(Shipments).OnReceived({ orderId: event.orderId, signedBy: "the customer" }, { entityId: event.orderId }),
    OnReceived: () => Effect.void
  }
})

/** The group "reporter": prints every change. */
export const reporter = Subscriber.layer(Shipments, {
  group: "reporter",
  consumer: "reporter",
  leaseTtl: "2 seconds",
  heartbeat: "500 millis",
  handlers: {
    OrderPlaced: (e) => Console.log(`${e.orderId}: placed (${e.quantity} x ${e.product})`),
    Packing: (e) => Console.log(`${e.orderId}: packing at station ${e.station}`),
    OnDelivery: (e) => Console.log(`${e.orderId}: on delivery by ${e.carrier}`),
    OnReceived: (e) => Console.log(`${e.orderId}: received, signed by ${e.signedBy}`)
  }
})

/**
 * In memory by default; on PostgreSQL when DATABASE_URL is set (schema from
 * CHRONICLE_PG_SCHEMA, default "shipments"); on Redis when REDIS_URL is set (prefix from
 * CHRONICLE_PREFIX, default "shipments").
 */
export const Store = Layer.unwrapEffect(
  Effect.gen(function*(): Effect.fn.Return<Layer.Layer<Chronicle.Services, unknown>, ConfigError.ConfigError> {
    const database = yield* Config.option(Config.string("DATABASE_URL"))
    if (database._tag === "Some" && database.value !== "") {
      const schema = yield* Config.string("CHRONICLE_PG_SCHEMA").pipe(Config.withDefault("shipments"))
      return PostgresChronicle.layer({ schema }).pipe(Layer.provide(PostgresChronicle.clientLayerConfig()))
    }
    const url = yield* Config.option(Config.string("REDIS_URL"))
    if (url._tag === "None" || url.value === "") return Chronicle.layerMemory
    const prefix = yield* Config.string("CHRONICLE_PREFIX").pipe(Config.withDefault("shipments"))
    return RedisChronicle.layer({ prefix }).pipe(Layer.provide(RedisClient.layerConfig()))
  })
)
