/**
 * Reads: one stream (paged through the READ_STREAM script, one round trip a page; live:
 * re-read on each append notice), a category's log (XRANGE per partition; live: XREAD
 * BLOCK over every partition on a connection of its own, or on a cluster, where one
 * command cannot span partitions, a read of each partition on each partition notice),
 * and where a category ends.
 *
 * @internal
 */
import { Duration, Effect, Stream } from "effect"
import type { CategoryCursor } from "../../Envelope.js"
import {
  checkCategory,
  EventDecodeError,
  InvalidArgument,
  type ReadCategoryOptions,
  type ReadError,
  type ReadOptions,
  type RecordedEvent,
  StoreUnavailable,
  type StreamCaughtUp,
  WrongKeyType
} from "../../EventStore.js"
import { type Follow, readCategory as followCategory } from "../../internal/categoryReader.js"
import { partitionOf } from "../../internal/ids.js"
import { validateFrom, validatePageSize, validateReadOptions } from "../../internal/options.js"
import type { Reads } from "../../internal/storeService.js"
import { followStream, pagedStream } from "../../internal/streamReader.js"
import type { RedisClient, RedisConnectionError } from "../RedisClient.js"
import type { Keys } from "./keys.js"
import type { Notices } from "./notices.js"
import type { Registry } from "./registry.js"
import { decodeEntries, decodeEntry, type RawEntry } from "./replies.js"
import { evalScript, READ_STREAM } from "./scripts.js"

/** Versions per page of a stream read. */
const STREAM_PAGE = 256

export const makeReads = (
  client: RedisClient.Service,
  keys: Keys,
  registry: Registry,
  notices: Notices,
  liveBlock: Duration.Duration
): Reads => {
  /** One page of a stream, oldest first, in one round trip: `count` versions from `from` (forwards), or up to `from` (backwards). */
  const readPage = (category: string, p: number, id: string, stream: string, forward: boolean, from: number, count: number) => {
    const callKeys = [keys.log(category, p), keys.list(category, p, id)]
    return client.call("read", (r) => evalScript(r, READ_STREAM, callKeys, [forward ? "f" : "b", from, count]) as Promise<Array<unknown>>).pipe(
      Effect.mapError((e) => (e._tag === "WrongKeyType" ? new WrongKeyType({ key: callKeys[1]!, expected: "list", actual: "another type" }) : e)),
      Effect.flatMap((reply) => {
        const lo = Number(reply[0])
        const events: Array<RecordedEvent> = []
        for (let i = 1; i < reply.length; i++) {
          const r = decodeEntry(category, p, reply[i] as RawEntry | null, lo + i - 1, stream)
          if (r instanceof EventDecodeError) return Effect.fail(r)
          events.push(r)
        }
        return Effect.succeed({ lo, events })
      })
    )
  }

  const read = (stream: string, readOptions?: ReadOptions): Stream.Stream<RecordedEvent | StreamCaughtUp, ReadError> => {
    const checked = validateReadOptions(stream, readOptions)
    if (checked instanceof Error) return Stream.fail(checked)
    const { category, forward, id, limit } = checked
    if (checked.live) {
      // the count decides the keys followed: recorded (or checked) before the first read
      return Stream.unwrap(Effect.map(registry.resolve(category, true), (partitions) => {
        const p = partitionOf(id, partitions)
        return followStream<never>({
          page: (from, count) => Effect.map(readPage(category, p, id, stream, true, from, count), (r) => r.events),
          watch: notices.watch(keys.notice(category, p, id)),
          recheck: liveBlock
        }, checked.from ?? 1, STREAM_PAGE)
      }))
    }
    return Stream.unwrap(Effect.map(registry.resolve(category, false), (partitions) => {
      const p = partitionOf(id, partitions)
      // backwards from 0: from the stream's last version
      return pagedStream((from, count) =>
        Effect.map(readPage(category, p, id, stream, forward, from, count), ({ events }) => (forward ? events : events.reverse())), checked.from ?? (forward ? 1 : 0), forward, limit, STREAM_PAGE)
    }))
  }

  const page = (category: string, p: number, after: string, count: number) =>
    client.call("readCategory", (r) => r.xrange(keys.log(category, p), `(${after}`, "+", "COUNT", count) as Promise<Array<RawEntry>>).pipe(
      Effect.flatMap((entries) => decodeEntries(category, p, entries))
    )

  const ends = (category: string, partitions: number) =>
    client.call("readCategory", (r) =>
      Promise.all(Array.from({ length: partitions }, (_, p) => r.xrevrange(keys.log(category, p), "+", "-", "COUNT", 1)))).pipe(
        Effect.map((replies): CategoryCursor => replies.map((entries) => entries[0]?.[0] ?? "0-0"))
      )

  const readCategory = (category: string, readOptions?: ReadCategoryOptions & { readonly live?: boolean | undefined }) => {
    const invalidCategory = checkCategory(category)
    if (invalidCategory) return Stream.fail(invalidCategory)
    const pageSize = validatePageSize(readOptions?.pageSize)
    if (pageSize instanceof InvalidArgument) return Stream.fail(pageSize)
    const live = readOptions?.live === true
    return Stream.unwrapScoped(Effect.gen(function*() {
      // a live reader follows the partitions it knows of: their count is recorded (or
      // found different, and refused) before anything is read
      const partitions = yield* registry.resolve(category, live)
      const from = validateFrom(category, readOptions?.from, partitions)
      if (from instanceof InvalidArgument) return yield* from
      // "end" is where the category ends when the stream starts, before any connection is made
      const start = from === "end" ? yield* ends(category, partitions) : from
      let follow: Follow<never> | undefined = undefined
      if (live && client.cluster) {
        // one read cannot span partitions on a cluster: wait for any partition's notice,
        // then read each partition after its cursor (the latch is closed before the
        // reads, so a notice during them is not lost)
        const latch = yield* notices.watch(Array.from({ length: partitions }, (_, p) => keys.partitionNotice(category, p)))
        const wait = Effect.raceFirst(latch.await, Effect.sleep(liveBlock))
        follow = (cursor, count) =>
          Effect.suspend(() => {
            latch.unsafeClose()
            return Effect.forEach(cursor, (after, p) => page(category, p, after, count), { concurrency: "unbounded" })
          }).pipe(
            Effect.flatMap((pages) => {
              const events = pages.flat()
              return events.length > 0 ? Effect.succeed(events) : Effect.as(wait, events)
            })
          )
      } else if (live) {
        const blocking = yield* client.blocking("live").pipe(
          Effect.mapError((e: RedisConnectionError) => new StoreUnavailable({ operation: "readCategory", reason: e.message }))
        )
        const logKeys = Array.from({ length: partitions }, (_, p) => keys.log(category, p))
        const blockMs = Duration.toMillis(liveBlock)
        follow = (cursor, count) =>
          client.callBlocking("readCategory", blocking, liveBlock, (r) =>
            r.xread("COUNT", count, "BLOCK", blockMs, "STREAMS", ...logKeys, ...cursor) as Promise<Array<[string, Array<RawEntry>]> | null>).pipe(
              Effect.flatMap((reply) =>
                reply === null ? Effect.succeed([]) : Effect.map(
                  Effect.forEach(reply, ([key, entries]) => decodeEntries(category, logKeys.indexOf(key), entries)),
                  (xs) => xs.flat()
                )
              )
            )
      }
      return followCategory(
        { partitions, page: (p, after, count) => page(category, p, after, count), ends: ends(category, partitions) },
        start,
        pageSize,
        follow
      )
    }))
  }

  return { read, readCategory, ends }
}

