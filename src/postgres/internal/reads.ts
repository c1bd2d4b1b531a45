/**
 * Reads on PostgreSQL: one stream by version (one query a page; live: read again when
 * its partition may have moved), a category's partitions by position (`pos > cursor
 * ORDER BY pos LIMIT n` for every partition in ONE query, `unnest` + `LATERAL`), and
 * where a category ends (its partitions' heads: their last positions).
 *
 * The committed rows of a partition are always the prefix `1..head` (positions are
 * assigned under the partition's row lock, held to commit), so a cursor never skips a
 * row that commits later, and no reader waits on another transaction: a session idle in
 * a transaction elsewhere does not hold readers back.
 *
 * @internal
 */
import type { PgClient } from "@effect/sql-pg/PgClient"
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
  type StreamCaughtUp
} from "../../EventStore.js"
import { type Follow, readCategory as followCategory } from "../../internal/categoryReader.js"
import { partitionOf } from "../../internal/ids.js"
import { validateFrom, validatePageSize, validateReadOptions } from "../../internal/options.js"
import { commitMillis, recordOf } from "../../internal/record.js"
import type { Reads } from "../../internal/storeService.js"
import { followStream, pagedStream } from "../../internal/streamReader.js"
import type { Heads } from "./heads.js"
import { makeRun, type Run } from "./deadline.js"
import type { Registry } from "./registry.js"
import { headsQuery } from "./schema.js"

/** Versions per page of a stream read. */
const STREAM_PAGE = 256

/** The columns every read selects, in this order. */
const COLUMNS = `e.partition, e.pos::text, e.stream_id, e.version::text, e.event_id::text, e.type, e.data, e.meta, extract(epoch FROM e.recorded_at) * 1000`

type Row = readonly [number, string, string, string, string, string, string, string, number]

/** The position of an entry id `a-b` in a partition: entries after it have `pos > a`. */
const afterPos = (entryId: string): string => entryId.slice(0, entryId.indexOf("-"))

const decodeRows = (category: string, rows: ReadonlyArray<ReadonlyArray<unknown>>): Effect.Effect<Array<RecordedEvent>, EventDecodeError> => {
  const out: Array<RecordedEvent> = []
  for (const raw of rows) {
    const r = raw as Row
    const e = recordOf(category, Number(r[0]), `${r[1]}-0`, r[4], r[2], r[3], r[5], r[6], r[7], Math.floor(Number(r[8])))
    if (e instanceof EventDecodeError) return Effect.fail(e)
    out.push(e)
  }
  return Effect.succeed(out)
}

/** A NUL cannot be stored in a PostgreSQL text value: no stream with one in its name exists. */
export const hasNul = (s: string) => s.includes("\u0000")

export const makeReads = (
  sql: PgClient,
  schema: string,
  registry: Registry,
  heads: Heads,
  recheck: Duration.Duration,
  readTimeout: Duration.Duration
): Reads => {
  const s = `"${schema}"`

  /**
   * A read's statement outside any caller's transaction, its failures classified, within
   * `readTimeout`: a connection gone silent fails the read, retryable, at the deadline,
   * instead of holding it (and a live reader) for good.
   */
  // the read ends at the deadline; the statement's cancel goes on in the background
  const query: (operation: "read" | "readCategory", text: string, params: ReadonlyArray<unknown>) => ReturnType<Run> = makeRun(sql, readTimeout, "background")
  const forwardSql = `SELECT ${COLUMNS} FROM ${s}.events e WHERE e.category = $1 AND e.stream_id = $2 AND e.version >= $3 ORDER BY e.version LIMIT $4`
  const backwardSql = `SELECT ${COLUMNS} FROM ${s}.events e WHERE e.category = $1 AND e.stream_id = $2 AND e.version <= $3 ORDER BY e.version DESC LIMIT $4`
  const pagesSql = `SELECT ${COLUMNS} FROM unnest($2::int[], $3::bigint[]) AS c(p, after)
    CROSS JOIN LATERAL (SELECT * FROM ${s}.events x WHERE x.category = $1 AND x.partition = c.p AND x.pos > c.after ORDER BY x.pos LIMIT $4) e
    ORDER BY e.partition, e.pos`
  const headsSql = headsQuery(schema)

  const streamPage = (category: string, id: string, forward: boolean, from: number, count: number) =>
    hasNul(id)
      ? Effect.succeed<Array<RecordedEvent>>([])
      : query("read", forward ? forwardSql : backwardSql, [category, id, from, count]).pipe(
        Effect.flatMap((rows) => decodeRows(category, rows))
      )

  const read = (stream: string, readOptions?: ReadOptions): Stream.Stream<RecordedEvent | StreamCaughtUp, ReadError> => {
    const checked = validateReadOptions(stream, readOptions)
    if (checked instanceof Error) return Stream.fail(checked)
    const { category, forward, id, limit } = checked
    if (checked.live) {
      // the count decides the partition followed: recorded (or checked) before the first read
      return Stream.unwrap(Effect.map(registry.resolve(category, true), (partitions) =>
        followStream<never>({
          page: (from, count) => streamPage(category, id, true, from, count),
          watch: Effect.map(heads.watch(category, [partitionOf(id, partitions)], id), (w) => w.latch),
          recheck
        }, checked.from ?? 1, STREAM_PAGE)))
    }
    return Stream.unwrap(Effect.map(registry.resolve(category, false), () =>
      pagedStream((from, count) => streamPage(category, id, forward, from, count), checked.from ?? (forward ? 1 : Number.MAX_SAFE_INTEGER), forward, limit, STREAM_PAGE)))
  }

  const pages = (category: string, wanted: ReadonlyArray<readonly [number, string]>, count: number) =>
    query("readCategory", pagesSql, [category, wanted.map(([p]) => p), wanted.map(([, after]) => afterPos(after)), count]).pipe(
      Effect.flatMap((rows) => decodeRows(category, rows)),
      Effect.map((events) => {
        const byPartition = new Map<number, Array<RecordedEvent>>()
        for (const e of events) {
          const p = e.position.partition
          let list = byPartition.get(p)
          if (list === undefined) byPartition.set(p, list = [])
          list.push(e)
        }
        return wanted.map(([p]) => byPartition.get(p) ?? [])
      })
    )

  const ends = (category: string, partitions: number) =>
    query("readCategory", headsSql, [category]).pipe(
      Effect.map((rows): CategoryCursor => {
        const cursor = Array.from({ length: partitions }, () => "0-0")
        for (const row of rows) {
          const p = Number(row[0])
          if (p < partitions) cursor[p] = `${row[1]}-0`
        }
        return cursor
      })
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
      // "end" is where the category ends when the stream starts
      const start = from === "end" ? yield* ends(category, partitions) : from
      let follow: Follow<never> | undefined = undefined
      if (live) {
        // registered before anything is read: no append between a read and the wait goes unnoticed
        const watch = yield* heads.watch(category, undefined, undefined)
        const wait = Effect.raceFirst(watch.latch.await, Effect.sleep(recheck))
        follow = (cursor, count) =>
          Effect.suspend(() => {
            watch.latch.unsafeClose()
            // only the partitions seen (or not yet known) to hold more than the cursor
            const wanted: Array<readonly [number, string]> = []
            for (let p = 0; p < partitions; p++) {
              const head = watch.head(p)
              if (head === undefined || head > Number(afterPos(cursor[p]!))) wanted.push([p, cursor[p]!])
            }
            return wanted.length === 0 ? Effect.succeed([]) : Effect.map(pages(category, wanted, count), (xs) => xs.flat())
          }).pipe(Effect.flatMap((events) => (events.length > 0 ? Effect.succeed(events) : Effect.as(wait, events))))
      }
      return followCategory(
        {
          partitions,
          page: (p, after, count) => Effect.map(pages(category, [[p, after]], count), (xs) => xs[0] ?? []),
          pages: (wanted, count) => pages(category, wanted, count),
          ends: ends(category, partitions),
          // positions say nothing of time across partitions: merged by commit time
          commitTime: commitMillis
        },
        start,
        pageSize,
        follow
      )
    }))
  }

  return { read, readCategory, ends }
}
