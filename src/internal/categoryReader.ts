/**
 * Reading a category: pages from each partition merged by commit time (the entry id's, or
 * the one the backend gives), then (live) waits
 * for what is appended after the cursor. Cursor-based throughout, so the switch from
 * catching up to following has no gap and no duplicate. Shared by every backend.
 *
 * @internal
 */
import { Chunk, Effect, Option, Stream } from "effect"
import type { CategoryCursor } from "../Envelope.js"
import type { CaughtUp, ReadError, RecordedEvent } from "../EventStore.js"
import { compareEntryIds } from "./ids.js"

export interface CategorySource<R> {
  readonly partitions: number
  /** At most `count` entries of partition `p` after entry id `after`, oldest first. */
  readonly page: (p: number, after: string, count: number) => Effect.Effect<ReadonlyArray<RecordedEvent>, ReadError, R>
  /** The entry id of the last entry of each partition ("0-0" when empty). */
  readonly ends: Effect.Effect<CategoryCursor, ReadError, R>
  /**
   * Optional: the pages of several partitions at once, one per `[partition, after]` asked
   * for, in that order (a backend that can read them in one round trip). When absent,
   * `page` is called for each partition concurrently.
   */
  readonly pages?: ((wanted: ReadonlyArray<readonly [p: number, after: string]>, count: number) => Effect.Effect<ReadonlyArray<ReadonlyArray<RecordedEvent>>, ReadError, R>) | undefined
  /**
   * Optional: the commit time (ms) by which partitions are merged, where the entry ids do
   * not carry it (PostgreSQL's `pos-0`). When absent, partitions are merged by entry id
   * (Redis's and the memory store's `ms-seq`, which is the commit time). Either way each
   * partition's own order is kept.
   */
  readonly commitTime?: ((e: RecordedEvent) => number) | undefined
}

/** Waits until something exists after `cursor` and returns it (or returns nothing after a while). */
export type Follow<R> = (cursor: CategoryCursor, count: number) => Effect.Effect<ReadonlyArray<RecordedEvent>, ReadError, R>

interface State {
  readonly cursor: Array<string>
  readonly buffers: Array<Array<RecordedEvent>>
  readonly exhausted: Array<boolean>
  readonly live: boolean
}

const byEntryId = (a: RecordedEvent, b: RecordedEvent) => {
  const c = compareEntryIds(a.position.entryId, b.position.entryId)
  return c !== 0 ? c : a.position.partition - b.position.partition
}

/** Merges by commit time, then partition, then entry id. */
const byTime = (time: (e: RecordedEvent) => number) => (a: RecordedEvent, b: RecordedEvent) =>
  time(a) - time(b) || a.position.partition - b.position.partition || compareEntryIds(a.position.entryId, b.position.entryId)

/**
 * Orders events that came from several partitions, keeping each partition's order: the
 * key of an event is the largest commit time of its partition so far, so that a clock
 * that went back within a partition cannot reorder it.
 */
const mergeByTime = (events: ReadonlyArray<RecordedEvent>, time: (e: RecordedEvent) => number): Array<RecordedEvent> => {
  const last = new Map<number, number>()
  const keyed = events.map((e, i) => {
    const p = e.position.partition
    const key = Math.max(last.get(p) ?? -Infinity, time(e))
    last.set(p, key)
    return { e, key, i }
  })
  keyed.sort((a, b) => a.key - b.key || a.e.position.partition - b.e.position.partition || a.i - b.i)
  return keyed.map((k) => k.e)
}

/** Takes events in merge order while every partition that may hold more has something buffered. */
const drain = (s: State, compare: (a: RecordedEvent, b: RecordedEvent) => number): Array<RecordedEvent> => {
  const out: Array<RecordedEvent> = []
  const heads = s.buffers.map(() => 0)
  for (;;) {
    let best = -1
    for (let p = 0; p < s.buffers.length; p++) {
      const buf = s.buffers[p]!
      if (heads[p]! >= buf.length) {
        if (!s.exhausted[p]) {
          best = -2
          break
        }
        continue
      }
      if (best === -1 || compare(buf[heads[p]!]!, s.buffers[best]![heads[best]!]!) < 0) best = p
    }
    if (best < 0) break
    const e = s.buffers[best]![heads[best]!]!
    heads[best]!++
    out.push(e)
    s.cursor[best] = e.position.entryId
  }
  for (let p = 0; p < s.buffers.length; p++) if (heads[p]! > 0) s.buffers[p] = s.buffers[p]!.slice(heads[p])
  return out
}

export const readCategory = <R, RF>(
  source: CategorySource<R>,
  from: CategoryCursor | "start" | "end",
  pageSize: number,
  follow: Follow<RF> | undefined
): Stream.Stream<RecordedEvent | CaughtUp, ReadError, R | RF> => {
  const start = from === "end"
    ? source.ends
    : Effect.succeed(from === "start" ? Array.from({ length: source.partitions }, () => "0-0") : from)
  const compare = source.commitTime === undefined ? byEntryId : byTime(source.commitTime)
  return Stream.unwrap(Effect.map(start, (cursor0) => {
    const initial: State = {
      cursor: cursor0.slice(),
      buffers: cursor0.map(() => []),
      exhausted: cursor0.map(() => false),
      live: false
    }
    return Stream.paginateChunkEffect(initial, (s): Effect.Effect<readonly [Chunk.Chunk<RecordedEvent | CaughtUp>, Option.Option<State>], ReadError, R | RF> => {
      if (s.live) {
        return Effect.map(follow!(s.cursor, pageSize), (events) => {
          const sorted = source.commitTime === undefined ? events.slice().sort(byEntryId) : mergeByTime(events, source.commitTime)
          for (const e of sorted) s.cursor[e.position.partition] = e.position.entryId
          return [Chunk.unsafeFromArray(sorted), Option.some(s)] as const
        })
      }
      const wanted: Array<number> = []
      for (let p = 0; p < source.partitions; p++) if (s.buffers[p]!.length === 0 && !s.exhausted[p]) wanted.push(p)
      const fill = (p: number, events: ReadonlyArray<RecordedEvent>) => {
        s.buffers[p] = events.slice()
        if (events.length < pageSize) s.exhausted[p] = true
      }
      const read = source.pages !== undefined && wanted.length > 1
        ? Effect.map(source.pages(wanted.map((p) => [p, s.cursor[p]!] as const), pageSize), (pages) => wanted.forEach((p, i) => fill(p, pages[i] ?? [])))
        : Effect.forEach(wanted, (p) => Effect.map(source.page(p, s.cursor[p]!, pageSize), (events) => fill(p, events)), { concurrency: "unbounded", discard: true })
      return read.pipe(
        Effect.map(() => {
          const out = drain(s, compare)
          if (out.length > 0) return [Chunk.unsafeFromArray<RecordedEvent | CaughtUp>(out), Option.some(s)] as const
          const done = s.exhausted.every((x, p) => x && s.buffers[p]!.length === 0)
          if (!done) return [Chunk.empty<RecordedEvent | CaughtUp>(), Option.some(s)] as const
          if (follow === undefined) return [Chunk.empty<RecordedEvent | CaughtUp>(), Option.none()] as const
          const caughtUp: CaughtUp = { _tag: "CaughtUp", cursor: s.cursor.slice() }
          return [Chunk.of<RecordedEvent | CaughtUp>(caughtUp), Option.some({ ...s, live: true })] as const
        })
      )
    })
  }))
}
