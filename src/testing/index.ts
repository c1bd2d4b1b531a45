/**
 * Testing support: the backend conformance suites.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as EventStoreSuite from "./EventStoreSuite.js"

/** @since 0.1.0 */
export * as SubscriberSuite from "./SubscriberSuite.js"

/** @since 0.2.0 */
export * as DeliveryChecker from "./DeliveryChecker.js"

/** @since 0.1.0 */
export * as DeciderSpec from "./DeciderSpec.js"

/** @since 0.1.0 */
export * as AggregateSuite from "./AggregateSuite.js"
