/**
 * Dead letters: events a group could not handle, parked per (group, partition). Nothing
 * is lost: `replay` hands them back to the group's own consumers (through each
 * partition's redelivery stream, read before new entries, with `redelivered` true);
 * `purge` deletes them.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import { ConsumerGroups, type DeadLetter, type GroupError } from "./ConsumerGroups.js"

/**
 * Every dead letter of a group, oldest first within each partition.
 *
 * @since 0.1.0
 * @category operations
 */
export const list = (group: string): Effect.Effect<ReadonlyArray<DeadLetter>, GroupError, ConsumerGroups> =>
  Effect.flatMap(ConsumerGroups, (groups) => groups.deadLetters(group))

/**
 * Hands dead letters (all, or those `ids`) back to the group's consumers; returns how
 * many. A replayed event runs after newer events of its entity.
 *
 * @since 0.1.0
 * @category operations
 */
export const replay = (group: string, ids?: ReadonlyArray<string>): Effect.Effect<number, GroupError, ConsumerGroups> =>
  Effect.flatMap(ConsumerGroups, (groups) => groups.replay(group, ids))

/**
 * Deletes dead letters (all, or those `ids`); returns how many.
 *
 * @since 0.1.0
 * @category operations
 */
export const purge = (group: string, ids?: ReadonlyArray<string>): Effect.Effect<number, GroupError, ConsumerGroups> =>
  Effect.flatMap(ConsumerGroups, (groups) => groups.purge(group, ids))
