/**
 * The parts every durable backend builds its `EventStore` from, and the service made of
 * them: the backend's append, its reads, and its partition registry (the recorded count
 * of each category).
 *
 * @internal
 */
import { Effect, Either, type Stream } from "effect"
import type { CategoryCursor } from "../Envelope.js"
import {
  type AppendError,
  type AppendRequest,
  type AppendResult,
  checkCategory,
  EventStore,
  InvalidArgument,
  type Limits,
  type ReadCategoryOptions,
  type ReadError,
  type ReadOptions,
  type RecordedEvent,
  type StoreError,
  type StreamCaughtUp
} from "../EventStore.js"
import { notAList, readItem, Unreadable } from "./items.js"

export interface Reads {
  readonly read: (stream: string, options?: ReadOptions) => Stream.Stream<RecordedEvent | StreamCaughtUp, ReadError>
  readonly readCategory: (category: string, options?: ReadCategoryOptions & { readonly live?: boolean | undefined }) => Stream.Stream<unknown, ReadError>
  /** The end of every partition of a category now ("0-0" for an empty one). */
  readonly ends: (category: string, partitions: number) => Effect.Effect<CategoryCursor, StoreError>
}

/** A category's partition count: recorded, or (`register`) recorded now from the configuration. */
export type ResolvePartitions = (category: string, register: boolean) => Effect.Effect<number, StoreError | InvalidArgument>

/** `appendMany`'s refusal of what is not a list of appends. */
export const notAppends = (appends: unknown): InvalidArgument | undefined => {
  const reason = notAList(appends)
  return reason === undefined ? undefined : new InvalidArgument({ argument: "appends", reason })
}

/**
 * An item of `appendMany` read once (a getter that throws is a bad input, reported as
 * one); what it holds is checked by the append it becomes.
 */
export const requestOf = (a: unknown): AppendRequest | InvalidArgument => {
  const r = readItem(a, "a stream and events", (item): AppendRequest => {
    const { events, expectedVersion, stream } = item as AppendRequest
    return { stream, events, expectedVersion }
  })
  return r instanceof Unreadable ? new InvalidArgument({ argument: "appends", reason: r.reason }) : r
}

/**
 * `appendMany` from `append`: the streams side by side, each stream's batches one after
 * the other in the order given.
 */
export const appendManyOf = (append: EventStore["Type"]["append"]): EventStore["Type"]["appendMany"] => (appends) =>
  Effect.suspend(() => {
    const invalid = notAppends(appends)
    if (invalid) return Effect.fail(invalid)
    const out: Array<Either.Either<AppendResult, AppendError | InvalidArgument>> = new Array(appends.length)
    const requests: Array<AppendRequest> = new Array(appends.length)
    const byStream = new Map<string, Array<number>>()
    for (let i = 0; i < appends.length; i++) {
      const r = requestOf(appends[i])
      if (r instanceof InvalidArgument) {
        out[i] = Either.left(r)
        continue
      }
      requests[i] = r
      const list = byStream.get(r.stream)
      if (list === undefined) byStream.set(r.stream, [i])
      else list.push(i)
    }
    return Effect.as(
      Effect.forEach(byStream.values(), (indices) =>
        Effect.forEach(indices, (i) => {
          const r = requests[i]!
          return Effect.map(Effect.either(append(r.stream, r.events, r)), (result) => {
            out[i] = result
          })
        }, { discard: true }), { concurrency: "unbounded", discard: true }),
      out
    )
  })

export const storeService = (
  append: EventStore["Type"]["append"],
  reads: Reads,
  resolve: ResolvePartitions,
  limits: Limits,
  appendMany: EventStore["Type"]["appendMany"] = appendManyOf(append)
): EventStore["Type"] =>
  EventStore.of({
    append,
    appendMany,
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
