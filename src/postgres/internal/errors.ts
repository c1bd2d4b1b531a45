/**
 * What a failed statement means, decided once, here (docs/semantics.md §5: the backend
 * classifies; nothing else reads error texts). Three cases:
 *
 * - not sent: no connection could be had (refused, pool closed, connect timeout). Nothing
 *   ran: `StoreUnavailable`, retryable.
 * - the server answered with an error (it carries a SQLSTATE): the statement failed, and
 *   with it its transaction, so nothing was written. Retryable for serialization
 *   failures (40001), deadlocks (40P01), lock and statement timeouts (55P03, 57014), a
 *   server shutting down or starting (57P01–57P03), lack of resources (53…), connection
 *   exceptions (08…) and a read-only server (25006, a standby after a failover);
 *   `PermissionDenied` for 42501; otherwise not retryable.
 * - no answer (the connection was lost after the statement was sent): for an append the
 *   outcome is unknown (`AppendOutcomeUnknown`, safe to retry with the same ids); for
 *   anything else `StoreUnavailable`, retryable (reads write nothing).
 *
 * @internal
 */
import type { SqlError } from "@effect/sql/SqlError"
import { AppendOutcomeUnknown, PermissionDenied, StoreUnavailable } from "../../EventStore.js"

export interface Classified {
  readonly kind: "not-sent" | "server" | "lost"
  /** The SQLSTATE, for a server error. */
  readonly code: string | undefined
  readonly reason: string
  readonly retryable: boolean
}

const SQLSTATE = /^[0-9A-Z]{5}$/

const retryableCode = (code: string): boolean =>
  code === "40001" || code === "40P01" || code === "55P03" || code === "57014" || code === "25006" ||
  code === "57P01" || code === "57P02" || code === "57P03" || code.startsWith("53") || code.startsWith("08")

/** The driver's error under a `SqlError` (or the value itself). */
const causeOf = (error: unknown): unknown =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "SqlError" ? (error as SqlError).cause : error

const textOf = (u: unknown): string => (u instanceof Error ? u.message : typeof u === "string" ? u : String(u))

export const classify = (error: unknown): Classified => {
  const cause = causeOf(error)
  const outer = typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "SqlError" ? (error as SqlError).message : ""
  const code = typeof cause === "object" && cause !== null ? (cause as { code?: unknown }).code : undefined
  if (typeof code === "string" && SQLSTATE.test(code) && typeof (cause as { severity?: unknown }).severity === "string") {
    return { kind: "server", code, reason: `${textOf(cause)} (SQLSTATE ${code})`, retryable: retryableCode(code) }
  }
  const reason = cause === undefined ? outer : textOf(cause)
  // @effect/sql-pg says so when no connection could be had: nothing was sent
  if (outer.startsWith("Failed to acquire connection") || outer.startsWith("PgClient:")) {
    return { kind: "not-sent", code: undefined, reason, retryable: true }
  }
  return { kind: "lost", code: undefined, reason, retryable: true }
}

/** A failed statement that writes nothing, as the store's error. */
export const storeError = (operation: string, error: unknown): StoreUnavailable | PermissionDenied => {
  const c = classify(error)
  if (c.code === "42501") return new PermissionDenied({ operation, reason: c.reason })
  return new StoreUnavailable({ operation, reason: c.reason, retryable: c.retryable })
}

/** A failed append call, as each of its batches' error. */
export const appendError = (stream: string, eventIds: ReadonlyArray<string>, error: unknown): StoreUnavailable | PermissionDenied | AppendOutcomeUnknown => {
  const c = classify(error)
  if (c.kind === "lost") return new AppendOutcomeUnknown({ stream, eventIds, reason: c.reason })
  if (c.code === "42501") return new PermissionDenied({ operation: "append", reason: c.reason })
  return new StoreUnavailable({ operation: "append", reason: c.reason, retryable: c.retryable })
}
