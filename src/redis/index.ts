/**
 * The Redis backend of effect-chronicle.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as RedisClient from "./RedisClient.js"

/** @since 0.1.0 */
export * as RedisChronicle from "./RedisChronicle.js"

/** @since 0.1.0 */
export * as RedisInspect from "./inspect.js"
