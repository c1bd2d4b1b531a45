/**
 * Small helpers shared across modules.
 *
 * @internal
 */
import { Clock, Context } from "effect"
import * as DefaultServices from "effect/DefaultServices"

/** The real clock, for polling helpers that must not stall under a test clock. */
export const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)

/** The message of anything thrown or failed with. */
export const messageOf = (e: unknown): string =>
  e instanceof Error
    ? e.message
    : typeof e === "object" && e !== null && typeof (e as { message?: unknown }).message === "string"
    ? (e as { message: string }).message
    : String(e)

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Whether a string is well-formed Unicode: no lone surrogate (it would have no UTF-8 form). */
export const isWellFormed = (s: string): boolean => !LONE_SURROGATE.test(s)
