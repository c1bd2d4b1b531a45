/**
 * Producers: one typed method per event of a contract.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type * as Contract from "./Contract.js"
import type { Position } from "./Envelope.js"
import type { KeyStoreError, PersonalDataError } from "./PersonalData.js"
import {
  type AppendError,
  type EventStore,
  type ExpectedVersion,
  forContract,
  type InvalidContract,
  type TypedStore,
  type UnknownEventType
} from "./EventStore.js"

/**
 * Per-call options of a producer method. Only `entityId` is required.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProduceOptions {
  /** The entity: the event goes to the stream `<contract name>-<entityId>`. */
  readonly entityId: string
  /** Default `"any"`. */
  readonly expectedVersion?: ExpectedVersion | undefined
  /** The event's id (a UUID); minted (UUIDv7) when absent. Pass one to make a retry idempotent. */
  readonly eventId?: string | undefined
  readonly correlationId?: string | undefined
  readonly causationId?: string | undefined
}

/**
 * What a producer method can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type ProduceError = AppendError | UnknownEventType | PersonalDataError | KeyStoreError

/**
 * One method per event of the contract: `producer.OrderPlaced(fields, { entityId })`.
 *
 * @since 0.1.0
 * @category models
 */
export type Producer<C extends Contract.Any> = {
  readonly [K in Contract.Tag<C>]: (fields: Contract.FieldsOf<C, K>, options: ProduceOptions) => Effect.Effect<Position, ProduceError>
}

/**
 * How a producer picks ids and causality when the caller does not: used by handlers,
 * whose follow-up events derive their ids from the event that caused them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Derivation {
  /** The id of the next event this producer writes to `stream`. */
  readonly eventId: (stream: string) => string
  readonly correlationId?: string | undefined
  readonly causationId?: string | undefined
  readonly traceparent?: string | undefined
}

/**
 * A producer over an already typed store; with a `Derivation`, event ids and causality
 * default to derived values.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromStore = <C extends Contract.Any>(store: TypedStore<C>, derivation?: Derivation): Producer<C> => {
  const producer: Record<string, (fields: object, options: ProduceOptions) => Effect.Effect<Position, ProduceError>> = {}
  for (const tag of store.contract.tags) {
    const make = store.contract.make[tag] as (fields: object) => Contract.Event<C>
    producer[tag] = (fields, options) =>
      Effect.suspend(() => {
        const eventId = options.eventId ?? derivation?.eventId(`${store.contract.name}-${options.entityId}`)
        return Effect.map(
          store.append(options.entityId, [make(fields)], {
            expectedVersion: options.expectedVersion,
            eventIds: eventId === undefined ? undefined : [eventId],
            correlationId: options.correlationId ?? derivation?.correlationId,
            causationId: options.causationId ?? derivation?.causationId,
            traceparent: derivation?.traceparent
          }),
          (result) => result.positions[0]!
        )
      })
  }
  return producer as unknown as Producer<C>
}

/**
 * A producer for a contract: each method validates its event with the contract's schema,
 * appends it to the stream of `entityId` (expected version `"any"` unless given) and
 * returns its position.
 *
 * @example
 * ```ts
 * const program = Effect.gen(function*() {
 *   const producer = yield* Producer.make(Shipments)
 *   yield* producer.OrderPlaced({ product: "book", quantity: 1 }, { entityId: "order-1" })
 * })
 *
 * // or as a service of the application
 * class ShipmentsProducer extends Effect.Service<ShipmentsProducer>()("app/ShipmentsProducer", {
 *   effect: Producer.make(Shipments)
 * }) {}
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <C extends Contract.Any>(contract: C): Effect.Effect<Producer<C>, InvalidContract, EventStore> =>
  Effect.map(forContract(contract), (store) => fromStore(store))
