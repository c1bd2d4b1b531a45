/**
 * effect-chronicle: event sourcing for Effect.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Contract from "./Contract.js"

/** @since 0.1.0 */
export * as Envelope from "./Envelope.js"

/** @since 0.1.0 */
export * as EventStore from "./EventStore.js"

/** @since 0.1.0 */
export * as Chronicle from "./Chronicle.js"

/** @since 0.1.0 */
export * as Producer from "./Producer.js"

/** @since 0.1.0 */
export * as Subscriber from "./Subscriber.js"

/** @since 0.1.0 */
export * as DeadLetters from "./DeadLetters.js"

/** @since 0.1.0 */
export * as ConsumerGroups from "./ConsumerGroups.js"

/** @since 0.1.0 */
export * as Snapshots from "./Snapshots.js"

/** @since 0.1.0 */
export * as Aggregate from "./Aggregate.js"

/** @since 0.1.0 */
export * as Projection from "./Projection.js"

/** @since 0.2.0 */
export * as PersonalData from "./PersonalData.js"
