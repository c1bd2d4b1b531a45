/**
 * The parts every durable backend builds its `EventStore` from, and the service made of
 * them: the backend's append, its reads, and its partition registry (the recorded count
 * of each category).
 *
 * @internal
 */
import { Effect, type Stream } from "effect"
import type { CategoryCursor } from "../Envelope.js"
import {
  checkCategory,
  EventStore,
  type InvalidArgument,
  type Limits,
  type ReadCategoryOptions,
  type ReadError,
  type ReadOptions,
  type RecordedEvent,
  type StoreError,
  type StreamCaughtUp
} from "../EventStore.js"

export interface Reads {
  readonly read: (stream: string, options?: ReadOptions) => Stream.Stream<RecordedEvent | StreamCaughtUp, ReadError>
  readonly readCategory: (category: string, options?: ReadCategoryOptions & { readonly live?: boolean | undefined }) => Stream.Stream<unknown, ReadError>
  /** The end of every partition of a category now ("0-0" for an empty one). */
  readonly ends: (category: string, partitions: number) => Effect.Effect<CategoryCursor, StoreError>
}

/** A category's partition count: recorded, or (`register`) recorded now from the configuration. */
export type ResolvePartitions = (category: string, register: boolean) => Effect.Effect<number, StoreError | InvalidArgument>

export const storeService = (
  append: EventStore["Type"]["append"],
  reads: Reads,
  resolve: ResolvePartitions,
  limits: Limits
): EventStore["Type"] =>
  EventStore.of({
    append,
    read: reads.read as EventStore["Type"]["read"],
    readCategory: reads.readCategory as EventStore["Type"]["readCategory"],
    partitions: (category) => {
      const invalidCategory = checkCategory(category)
      return invalidCategory ? Effect.fail(invalidCategory) : resolve(category, false)
    },
    end: (category) => {
      const invalidCategory = checkCategory(category)
      return invalidCategory
        ? Effect.fail(invalidCategory)
        : Effect.flatMap(resolve(category, false), (partitions) => reads.ends(category, partitions))
    },
    limits
  })
