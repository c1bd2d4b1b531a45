/**
 * The in-memory event store: the same rules as the Redis store (docs/semantics.md §1–4), with
 * state in a closure. Appends are synchronous, so each is atomic; entry ids follow
 * Redis's `ms-seq` scheme from the Effect `Clock`, so `TestClock` controls commit times.
 *
 * @internal
 */
import { Clock, Duration, Effect, Stream } from "effect"
import type { CategoryCursor, Position } from "../Envelope.js"
import {
  type AppendError,
  type AppendResult,
  type EventDecodeError,
  checkCategory,
  EventStore,
  IdempotencyMismatch,
  InvalidArgument,
  type Limits,
  type PartitionsConfig,
  type ReadCategoryOptions,
  type ReadError,
  type ReadOptions,
  type RecordedEvent,
  type StreamCaughtUp,
  WrongExpectedVersion
} from "../EventStore.js"
import { prepareAppend } from "./append.js"
import { appendManyOf } from "./storeService.js"
import { type Follow, readCategory } from "./categoryReader.js"
import { compareEntryIds, partitionOf } from "./ids.js"
import { partitionsFor, validateFrom, validatePageSize, validateLimits, validatePartitions, validateReadOptions } from "./options.js"
import { type StoredFields, toRecorded } from "./record.js"
import { followStream } from "./streamReader.js"

interface Entry {
  readonly id: string
  readonly ms: number
  readonly seq: number
  readonly fields: StoredFields
}

interface Partition {
  readonly entries: Array<Entry>
  lastMs: number
  lastSeq: number
}

interface StreamState {
  readonly partition: number
  readonly entries: Array<Entry>
  readonly ids: Map<string, { readonly version: number; readonly type: string }>
}

interface Category {
  readonly name: string
  readonly partitions: Array<Partition>
  readonly streams: Map<string, StreamState>
  readonly waiters: Set<() => void>
  /** Live readers of single streams, by entity id. */
  readonly watchers: Map<string, Set<() => void>>
}

/** The index of the first entry after `after`. */
const firstAfter = (entries: ReadonlyArray<Entry>, after: string): number => {
  let lo = 0
  let hi = entries.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (compareEntryIds(entries[mid]!.id, after) <= 0) lo = mid + 1
    else hi = mid
  }
  return lo
}

export interface MemoryOptions {
  readonly partitions: PartitionsConfig
  readonly limits: Limits
}

/**
 * What the in-memory consumer groups need from the in-memory log.
 */
export interface MemoryLog {
  /** The partition count of a category (fixed when first touched). */
  readonly partitionsOf: (category: string) => number
  /** At most `count` entries of a partition after entry id `after`, decoded. */
  readonly entriesAfter: (category: string, p: number, after: string, count: number) => ReadonlyArray<{ readonly id: string; readonly event: RecordedEvent | EventDecodeError }>
  /** How many entries of a partition come after `after`. */
  readonly countAfter: (category: string, p: number, after: string) => number
  /** The id of a partition's last entry ("0-0" when empty). */
  readonly lastId: (category: string, p: number) => string
  /** One entry by id. */
  readonly entry: (category: string, p: number, id: string) => RecordedEvent | EventDecodeError | undefined
  /** Calls `wake` after every append to the category (and on `notify`) until the returned function is called. */
  readonly subscribe: (category: string, wake: () => void) => () => void
  /** Wakes the category's subscribers. */
  readonly notify: (category: string) => void
}

export const makeMemoryStore = (options: MemoryOptions): Effect.Effect<{ readonly store: EventStore["Type"]; readonly log: MemoryLog }, InvalidArgument> =>
  Effect.gen(function*() {
    const invalidPartitions = validatePartitions(options.partitions)
    if (invalidPartitions) return yield* invalidPartitions
    const invalidLimits = validateLimits(options.limits)
    if (invalidLimits) return yield* invalidLimits
    const categories = new Map<string, Category>()
    const limits = options.limits

    const category = (name: string): Category => {
      let c = categories.get(name)
      if (c === undefined) {
        const p = partitionsFor(options.partitions, name)
        c = {
          name,
          partitions: Array.from({ length: p }, () => ({ entries: [], lastMs: 0, lastSeq: 0 })),
          streams: new Map(),
          waiters: new Set(),
          watchers: new Map()
        }
        categories.set(name, c)
      }
      return c
    }

    const toEvent = (c: Category, p: number, e: Entry) => {
      const r = toRecorded(c.name, p, e.id, e.fields)
      return r instanceof Error ? Effect.fail(r) : Effect.succeed(r)
    }

    const append: EventStore["Type"]["append"] = (stream, events, appendOptions) =>
      Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<AppendResult, AppendError> => {
        const prepared = prepareAppend(stream, events, appendOptions?.expectedVersion, limits)
        if (prepared instanceof Error) return Effect.fail(prepared)
        const c = category(prepared.category)
        const pIndex = partitionOf(prepared.entityId, c.partitions.length)
        const partition = c.partitions[pIndex]!
        const s = c.streams.get(prepared.entityId)
        const current = s?.entries.length ?? 0
        const batch = prepared.events
        const known = s?.ids.get(batch[0]!.eventId)
        if (s !== undefined && known !== undefined) {
          for (let i = 0; i < batch.length; i++) {
            const at = s.ids.get(batch[i]!.eventId)
            if (at === undefined || at.version !== known.version + i || at.type !== batch[i]!.type) {
              return Effect.fail(
                new IdempotencyMismatch({
                  stream,
                  eventId: batch[i]!.eventId,
                  reason: at === undefined
                    ? `the batch replays an earlier append from version ${known.version}, but this id was not part of it`
                    : `the batch replays an earlier append, but this id was written at version ${at.version} as ${at.type}, not at ${known.version + i} as ${batch[i]!.type}`
                })
              )
            }
          }
          const positions: Array<Position> = []
          for (let i = 0; i < batch.length; i++) positions.push({ partition: pIndex, entryId: s.entries[known.version - 1 + i]!.id })
          const result: AppendResult = { stream, firstVersion: known.version, lastVersion: known.version + batch.length - 1, positions, replayed: true }
          return Effect.succeed(result)
        }
        if (s !== undefined) {
          for (let i = 1; i < batch.length; i++) {
            const at = s.ids.get(batch[i]!.eventId)
            if (at !== undefined) {
              return Effect.fail(
                new IdempotencyMismatch({
                  stream,
                  eventId: batch[i]!.eventId,
                  reason: `this id was written at version ${at.version} but the batch's first id is new`
                })
              )
            }
          }
        }
        const e = prepared.expected
        if (!(e === -1 || (e === -2 && current > 0) || e === current)) {
          return Effect.fail(new WrongExpectedVersion({ stream, expected: prepared.expectedVersion, actual: current }))
        }
        const target: StreamState = s ?? { partition: pIndex, entries: [], ids: new Map() }
        if (s === undefined) c.streams.set(prepared.entityId, target)
        const positions: Array<Position> = []
        for (let i = 0; i < batch.length; i++) {
          const ev = batch[i]!
          if (now > partition.lastMs) {
            partition.lastMs = now
            partition.lastSeq = 0
          } else partition.lastSeq++
          const version = current + i + 1
          const entry: Entry = {
            id: `${partition.lastMs}-${partition.lastSeq}`,
            ms: partition.lastMs,
            seq: partition.lastSeq,
            fields: { e: ev.eventId, i: prepared.entityId, v: String(version), t: ev.type, d: ev.data, m: ev.meta }
          }
          partition.entries.push(entry)
          target.entries.push(entry)
          target.ids.set(ev.eventId, { version, type: ev.type })
          positions.push({ partition: pIndex, entryId: entry.id })
        }
        for (const wake of Array.from(c.waiters)) wake()
        const watching = c.watchers.get(prepared.entityId)
        if (watching !== undefined) for (const wake of Array.from(watching)) wake()
        const result: AppendResult = { stream, firstVersion: current + 1, lastVersion: current + batch.length, positions, replayed: false }
        return Effect.succeed(result)
      })

    const entriesOf = (name: string, id: string) => categories.get(name)?.streams.get(id)

    const read = (stream: string, readOptions?: ReadOptions): Stream.Stream<RecordedEvent | StreamCaughtUp, ReadError> => {
      const checked = validateReadOptions(stream, readOptions)
      if (checked instanceof Error) return Stream.fail(checked)
      const { category: name, id, forward, from, limit } = checked
      if (checked.live) return live(name, id, from ?? 1)
      return Stream.suspend(() => {
        const s = entriesOf(name, id)
        if (s === undefined) return Stream.empty
        const c = categories.get(name)!
        const picked: Array<Entry> = []
        if (forward) {
          for (let v = from ?? 1; v <= s.entries.length && picked.length < limit; v++) picked.push(s.entries[v - 1]!)
        } else {
          for (let v = Math.min(from ?? s.entries.length, s.entries.length); v >= 1 && picked.length < limit; v--) picked.push(s.entries[v - 1]!)
        }
        return Stream.mapEffect(Stream.fromIterable(picked), (e) => toEvent(c, s.partition, e))
      })
    }

    const live = (name: string, id: string, from: number) =>
      followStream<never>({
        page: (version, count) =>
          Effect.suspend(() => {
            const s = entriesOf(name, id)
            if (s === undefined) return Effect.succeed([])
            const c = categories.get(name)!
            return Effect.forEach(s.entries.slice(version - 1, version - 1 + count), (e) => toEvent(c, s.partition, e))
          }),
        watch: Effect.acquireRelease(
          Effect.sync(() => {
            const c = category(name)
            const latch = Effect.unsafeMakeLatch(false)
            const wake = () => latch.unsafeOpen()
            let set = c.watchers.get(id)
            if (set === undefined) c.watchers.set(id, set = new Set())
            set.add(wake)
            return { c, latch, wake }
          }),
          ({ c, wake }) =>
            Effect.sync(() => {
              const set = c.watchers.get(id)
              set?.delete(wake)
              if (set?.size === 0) c.watchers.delete(id)
            })
        ).pipe(Effect.map(({ latch }) => latch)),
        // every append wakes the stream's readers: nothing to catch up on by polling
        recheck: Duration.infinity
      }, from, 256)

    const collect = (c: Category, p: number, after: string, count: number): Array<Entry> => {
      const entries = c.partitions[p]!.entries
      const i = firstAfter(entries, after)
      return entries.slice(i, i + count)
    }

    const readCategoryImpl = (name: string, readOptions?: ReadCategoryOptions & { readonly live?: boolean | undefined }) => {
      const invalid = checkCategory(name)
      if (invalid) return Stream.fail(invalid)
      const pageSize = validatePageSize(readOptions?.pageSize)
      if (pageSize instanceof InvalidArgument) return Stream.fail(pageSize)
      return Stream.suspend(() => {
        const c = category(name)
        const from = validateFrom(name, readOptions?.from, c.partitions.length)
        if (from instanceof InvalidArgument) return Stream.fail(from)
        const decodeAll = (p: number, entries: ReadonlyArray<Entry>) => Effect.forEach(entries, (e) => toEvent(c, p, e))
        const follow: Follow<never> = (cursor, count) =>
          Effect.async<ReadonlyArray<Entry & { p: number }>>((resume) => {
            const check = () => {
              const found: Array<Entry & { p: number }> = []
              for (let p = 0; p < c.partitions.length; p++) {
                for (const e of collect(c, p, cursor[p]!, count)) found.push({ ...e, p })
              }
              if (found.length === 0) return
              c.waiters.delete(check)
              resume(Effect.succeed(found))
            }
            c.waiters.add(check)
            check()
            return Effect.sync(() => {
              c.waiters.delete(check)
            })
          }).pipe(Effect.flatMap((found) => Effect.forEach(found, (e) => toEvent(c, e.p, e))))
        return readCategory(
          {
            partitions: c.partitions.length,
            page: (p, after, count) => decodeAll(p, collect(c, p, after, count)),
            ends: Effect.sync((): CategoryCursor => c.partitions.map((part) => part.entries.at(-1)?.id ?? "0-0"))
          },
          from,
          pageSize,
          readOptions?.live === true ? follow : undefined
        )
      })
    }

    const store = EventStore.of({
      append,
      appendMany: appendManyOf(append),
      read: read as EventStore["Type"]["read"],
      readCategory: readCategoryImpl as EventStore["Type"]["readCategory"],
      partitions: (name) => {
        const invalid = checkCategory(name)
        return invalid ? Effect.fail(invalid) : Effect.sync(() => category(name).partitions.length)
      },
      end: (name) => {
        const invalid = checkCategory(name)
        return invalid ? Effect.fail(invalid) : Effect.sync((): CategoryCursor => category(name).partitions.map((part) => part.entries.at(-1)?.id ?? "0-0"))
      },
      limits
    })

    const decoded = (c: Category, p: number, e: Entry) => toRecorded(c.name, p, e.id, e.fields)
    const log: MemoryLog = {
      partitionsOf: (name) => category(name).partitions.length,
      entriesAfter: (name, p, after, count) => {
        const c = category(name)
        return collect(c, p, after, count).map((e) => ({ id: e.id, event: decoded(c, p, e) }))
      },
      countAfter: (name, p, after) => {
        const entries = category(name).partitions[p]!.entries
        return entries.length - firstAfter(entries, after)
      },
      lastId: (name, p) => category(name).partitions[p]!.entries.at(-1)?.id ?? "0-0",
      entry: (name, p, id) => {
        const c = category(name)
        const entries = c.partitions[p]!.entries
        const i = firstAfter(entries, id) - 1
        const e = entries[i]
        return e !== undefined && e.id === id ? decoded(c, p, e) : undefined
      },
      subscribe: (name, wake) => {
        const c = category(name)
        c.waiters.add(wake)
        return () => {
          c.waiters.delete(wake)
        }
      },
      notify: (name) => {
        for (const wake of Array.from(category(name).waiters)) wake()
      }
    }
    return { store, log }
  })

