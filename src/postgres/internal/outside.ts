/**
 * The store's statements run on its own connections, never on a caller's transaction.
 * `@effect/sql` runs a statement on the transaction connection found in the fiber's
 * context, under one tag shared by every SqlClient: an append made inside a caller's
 * `withTransaction` (of any client) would otherwise join it, hold the partition's lock
 * until the caller commits, and be undone by the caller's rollback after it was
 * acknowledged; a coalesced call would carry other callers' batches into it.
 *
 * @internal
 */
import { TransactionConnection } from "@effect/sql/SqlClient"
import { Context, Effect } from "effect"

/** `self` without any caller's transaction connection in its context. */
export const outside = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.mapInputContext(self, (context: Context.Context<R>) => Context.omit(TransactionConnection)(context) as Context.Context<R>)
