/**
 * The event store on Redis.
 *
 * Appends are coalesced per partition: the batches that arrive in the same turn of the
 * event loop for one partition, up to `maxEvents` events, go in ONE call of the append
 * script on a dedicated connection, which checks and applies each batch on its own and
 * returns one result per batch. Measured against a single script call per append on an
 * auto-pipelined connection, this roughly doubles throughput: Node and Redis then work
 * at the same time instead of taking turns (DESIGN.md, Performance). A batch larger than
 * `maxEvents` goes alone, still in one atomic call.
 *
 * @internal
 */
import { Chunk, Duration, Effect, Option, Stream } from "effect"
import type { Redis } from "ioredis"
import type { CategoryCursor, Position } from "../Envelope.js"
import {
  type AppendError,
  AppendOutcomeUnknown,
  type AppendResult,
  checkCategory,
  EventDecodeError,
  EventStore,
  IdempotencyMismatch,
  InvalidArgument,
  type Limits,
  PartitionCountMismatch,
  type PartitionsConfig,
  PermissionDenied,
  type ReadCategoryOptions,
  ReplicationTimeout,
  type ReadError,
  type ReadOptions,
  type RecordedEvent,
  type StoreError,
  type StreamCaughtUp,
  StoreUnavailable,
  WrongExpectedVersion,
  WrongKeyType
} from "../EventStore.js"
import { type PreparedAppend, prepareAppend } from "../internal/append.js"
import { type Follow, readCategory } from "../internal/categoryReader.js"
import { partitionOf } from "../internal/ids.js"
import { partitionsFor, validateFrom, validatePageSize, validateLimits, validatePartitions, validateReadOptions } from "../internal/options.js"
import { fieldsOf, toRecorded } from "../internal/record.js"
import { followStream } from "../internal/streamReader.js"
import { isValidPrefix, type Keys, makeKeys } from "./keys.js"
import { makeNotices } from "./notices.js"
import { RedisClient, type RedisConnectionError } from "./RedisClient.js"
import { encodeAppendCall } from "./resp.js"
import { APPEND, evalScript, READ_STREAM } from "./scripts.js"

export interface RedisStoreOptions {
  readonly prefix: string
  readonly partitions: PartitionsConfig
  readonly limits: Limits
  /** Events per coalesced call (docs/semantics.md §3: at most 512). */
  readonly maxEventsPerCall: number
  /** Coalesced calls in flight on the append connection at once. */
  readonly maxCallsInFlight: number
  /** Block time of one live read before it is issued again. */
  readonly liveBlock: Duration.Duration
  /** What "acknowledged" waits for beyond the primary's memory (docs/semantics.md §9). */
  readonly durability: Durability | undefined
}

export interface Durability {
  /** Replicas that must confirm each call (WAIT). */
  readonly replicas: number
  /** How long to wait for them. */
  readonly timeout: Duration.Duration
  /** Also wait for the primary's (and the replicas') AOF fsync (WAITAOF, Redis 7.2+). */
  readonly aof: boolean
}

interface Pending {
  readonly prepared: PreparedAppend
  readonly partition: number
  readonly enqueued: number
  settled: boolean
  readonly resume: (effect: Effect.Effect<AppendResult, AppendError>) => void
}

interface Queue {
  readonly tag: string
  readonly partition: number
  readonly keyLog: string
  readonly keyStreams: string
  readonly items: Array<Pending>
  listed: boolean
}

interface Call {
  readonly items: ReadonlyArray<Pending>
  readonly deadline: number
}

const eventIdsOf = (p: PreparedAppend) => p.events.map((e) => e.eventId)

/** A failure that happened before the request was written: nothing was sent. */
class NotSent {
  constructor(readonly cause: unknown) {}
}

type RawEntry = [string, Array<string>]

export const makeRedisStore = (options: RedisStoreOptions) =>
  Effect.gen(function*() {
    if (!isValidPrefix(options.prefix)) {
      return yield* new InvalidArgument({ argument: "prefix", reason: `${JSON.stringify(options.prefix)} must be 1 to 64 of [A-Za-z0-9_.:-]` })
    }
    const invalid = validatePartitions(options.partitions)
    if (invalid) return yield* invalid
    const invalidLimits = validateLimits(options.limits)
    if (invalidLimits) return yield* invalidLimits
    const client = yield* RedisClient
    const keys: Keys = makeKeys(options.prefix)
    const limits = options.limits

    yield* checkEvictionPolicy(client)

    const conn: Redis = yield* client.dedicated("append")
    const notices = yield* makeNotices(client)

    // -----------------------------------------------------------------------
    // The partition registry (docs/semantics.md §4)
    // -----------------------------------------------------------------------
    const known = new Map<string, number>()
    const mismatch = (category: string, recorded: number, configured: number) =>
      new PartitionCountMismatch({ category, recorded: Number.isSafeInteger(recorded) ? recorded : -1, configured })
    /** A category's partition count: recorded when first written (SET NX); reads only look it up. */
    const resolvePartitions = (category: string, register = true): Effect.Effect<number, StoreError> => {
      const hit = known.get(category)
      if (hit !== undefined) return Effect.succeed(hit)
      const configured = partitionsFor(options.partitions, category)
      if (!register) {
        return client.call("registry", (r) => r.get(keys.category(category))).pipe(
          Effect.flatMap((recorded) => {
            if (recorded === null) return Effect.succeed(configured)
            const n = Number(recorded)
            if (n !== configured) return Effect.fail(mismatch(category, n, configured))
            known.set(category, n)
            return Effect.succeed(n)
          })
        )
      }
      return client.call("registry", (r) =>
        Promise.all([
          r.call("SET", keys.category(category), String(configured), "NX", "GET") as Promise<string | null>,
          r.sadd(keys.categories, category)
        ])).pipe(
          Effect.flatMap(([previous]) => {
            const recorded = previous === null ? configured : Number(previous)
            if (recorded !== configured) return Effect.fail(mismatch(category, recorded, configured))
            known.set(category, configured)
            return Effect.succeed(configured)
          })
        )
    }

    // -----------------------------------------------------------------------
    // The append coalescer
    // -----------------------------------------------------------------------
    const queues = new Map<string, Queue>()
    const ready: Array<Queue> = []
    const calls = new Set<Call>()
    let queued = 0
    let scheduled = false
    let sweeper: ReturnType<typeof setInterval> | undefined = undefined
    const timeoutMs = Duration.toMillis(client.commandTimeout)

    const queueOf = (category: string, partition: number): Queue => {
      const tag = keys.tag(category, partition)
      let q = queues.get(tag)
      if (q === undefined) {
        q = { tag, partition, keyLog: keys.log(category, partition), keyStreams: keys.streams(category, partition), items: [], listed: false }
        queues.set(tag, q)
      }
      return q
    }

    const settle = (item: Pending, effect: Effect.Effect<AppendResult, AppendError>) => {
      if (item.settled) return
      item.settled = true
      item.resume(effect)
    }

    // Deadlines: an Effect timeout per append costs about as much as the Redis round trip
    // itself (measured ~25 µs of CPU), so one timer sweeps the queues (oldest first) and the
    // calls in flight instead.
    const sweep = () => {
      const now = Date.now()
      for (const q of queues.values()) {
        for (const item of q.items) {
          if (item.enqueued + timeoutMs > now) break
          if (!item.settled) {
            queued--
            settle(item, Effect.fail(new StoreUnavailable({ operation: "append", reason: `not sent within ${timeoutMs} ms` })))
          }
        }
      }
      for (const call of calls) {
        if (call.deadline > now) continue
        calls.delete(call)
        for (const item of call.items) {
          settle(item, Effect.fail(new AppendOutcomeUnknown({ stream: item.prepared.stream, eventIds: eventIdsOf(item.prepared), reason: `no reply within ${timeoutMs} ms` })))
        }
      }
      if (queued === 0 && calls.size === 0 && sweeper !== undefined) {
        clearInterval(sweeper)
        sweeper = undefined
      }
    }

    // When nothing is in flight, the queue is flushed at the end of the current microtask
    // batch: appends issued together (by fibers run in the same batch) share one call, and
    // a lone append pays no extra turn of the event loop (measured: ~30 µs on the
    // reference machine). While a call is in flight, appends gather for a turn of the loop
    // before a second call goes, and the rest wait for a reply: the busier the store, the
    // larger its calls.
    const schedule = () => {
      if (!scheduled) {
        scheduled = true
        if (calls.size === 0) queueMicrotask(pump)
        else setImmediate(pump)
      }
    }

    const enqueue = (item: Pending) => {
      const q = queueOf(item.prepared.category, item.partition)
      q.items.push(item)
      queued++
      if (sweeper === undefined) sweeper = setInterval(sweep, Math.max(10, Math.min(250, timeoutMs / 10)))
      if (!q.listed) {
        q.listed = true
        ready.push(q)
      }
      if (calls.size < options.maxCallsInFlight) schedule()
    }

    const take = (q: Queue): Array<Pending> => {
      const out: Array<Pending> = []
      let events = 0
      let i = 0
      for (; i < q.items.length; i++) {
        const next = q.items[i]!
        if (next.settled) continue
        const n = next.prepared.events.length
        if (out.length > 0 && events + n > options.maxEventsPerCall) break
        out.push(next)
        events += n
        if (events >= options.maxEventsPerCall) {
          i++
          break
        }
      }
      queued -= out.length
      if (i >= q.items.length) q.items.length = 0
      else q.items.splice(0, i)
      return out
    }

    function pump() {
      scheduled = false
      while (calls.size < options.maxCallsInFlight && ready.length > 0) {
        const q = ready.shift()!
        const items = take(q)
        if (q.items.length > 0) ready.push(q)
        else q.listed = false
        if (items.length > 0) send(q, items)
      }
    }

    const send = (q: Queue, items: Array<Pending>) => {
      const call: Call = { items, deadline: Date.now() + timeoutMs + durabilityMillis }
      calls.add(call)
      const encode = (withSource: boolean): Promise<unknown> => {
        const command = encodeAppendCall(APPEND, withSource, q.tag, q.keyLog, q.keyStreams, items)
        if (command !== undefined) {
          conn.sendCommand(command)
          return command.promise
        }
        const argv: Array<string | number> = [withSource ? APPEND.source : APPEND.sha, 2 + 2 * items.length, q.keyLog, q.keyStreams]
        for (const item of items) argv.push(q.tag + ":ids:" + item.prepared.entityId, q.tag + ":s:" + item.prepared.entityId)
        argv.push(items.length)
        for (const { prepared: p } of items) {
          argv.push(p.entityId, p.expected, p.events.length)
          for (const e of p.events) argv.push(e.eventId, e.type, e.data, e.meta)
        }
        return conn.call(withSource ? "EVAL" : "EVALSHA", argv) as Promise<unknown>
      }
      const attempt = () =>
        encode(false).catch((error: unknown) =>
          error instanceof Error && error.message.startsWith("NOSCRIPT") ? encode(true) : Promise.reject(error)
        )
      const done = () => {
        calls.delete(call)
        if (ready.length > 0) pump()
      }
      const run = conn.status === "ready"
        ? attempt()
        : whenReady(conn, client.commandTimeout).then(attempt, (error: unknown) => Promise.reject(new NotSent(error)))
      run.then(
        (reply) => {
          if (durability === undefined) {
            done()
            return deliver(q, items, reply)
          }
          // WAIT counts the writes of this connection: sent on it, right after the call
          confirm().then(
            (confirmed) => {
              done()
              deliver(q, items, reply, confirmed)
            },
            (error: unknown) => {
              done()
              // the confirmation itself failed (a dropped connection, say): not confirmed
              void error
              deliver(q, items, reply, { confirmed: 0 })
            }
          )
        },
        (error: unknown) => {
          done()
          failAll(items, error)
        }
      )
    }

    const failAll = (items: ReadonlyArray<Pending>, error: unknown) => {
      const sent = !(error instanceof NotSent)
      const cause = error instanceof NotSent ? error.cause : error
      const message = cause instanceof Error ? cause.message : String(cause)
      const seen = client.lastError(conn)
      const reason = seen !== undefined && /Connection is closed/.test(message) ? `${message} (${seen})` : message
      for (const item of items) {
        let failure: AppendError
        if (!sent || /^(OOM|Stream isn't writeable|BUSY|LOADING|MASTERDOWN|READONLY)/.test(reason)) {
          failure = new StoreUnavailable({ operation: "append", reason })
        } else if (reason.startsWith("NOPERM")) {
          failure = new PermissionDenied({ operation: "append", reason })
        } else {
          failure = new AppendOutcomeUnknown({ stream: item.prepared.stream, eventIds: eventIdsOf(item.prepared), reason })
        }
        settle(item, Effect.fail(failure))
      }
    }

    const durability = options.durability
    const durabilityMillis = durability === undefined ? 0 : Duration.toMillis(durability.timeout)
    const required = durability === undefined ? 0 : durability.replicas
    /** How many replicas confirmed this connection's writes (and, with aof, whether the disks did). */
    const confirm = async (): Promise<{ readonly confirmed: number }> => {
      if (durability!.aof) {
        const [local, replicas] = (await conn.call("WAITAOF", 1, required, durabilityMillis)) as [number, number]
        // the primary's own fsync is required too: without it nothing is confirmed
        return { confirmed: local >= 1 ? replicas : -1 }
      }
      return { confirmed: Number(await conn.call("WAIT", required, durabilityMillis)) }
    }

    const deliver = (q: Queue, items: ReadonlyArray<Pending>, reply: unknown, confirmation?: { readonly confirmed: number }) => {
      if (!Array.isArray(reply) || reply.length !== items.length) {
        return failAll(items, new Error(`unexpected reply from the append script: ${JSON.stringify(reply)?.slice(0, 200)}`))
      }
      const short = confirmation !== undefined && confirmation.confirmed < required
      for (let b = 0; b < items.length; b++) {
        const r = reply[b] as Array<unknown>
        const p = items[b]!.prepared
        if (short && (r[0] === "ok" || r[0] === "replay")) {
          settle(items[b]!, Effect.fail(new ReplicationTimeout({ stream: p.stream, eventIds: eventIdsOf(p), required, confirmed: confirmation.confirmed })))
        } else {
          settle(items[b]!, resultOf(q.partition, p, r))
        }
      }
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (sweeper !== undefined) clearInterval(sweeper)
        for (const q of queues.values()) {
          for (const item of q.items) {
            settle(item, Effect.fail(new StoreUnavailable({ operation: "append", reason: "the store was closed" })))
          }
          q.items.length = 0
        }
      })
    )

    const resultOf = (partition: number, p: PreparedAppend, r: Array<unknown>): Effect.Effect<AppendResult, AppendError> => {
      const stream = p.stream
      switch (r[0]) {
        case "ok":
        case "replay": {
          const first = Number(r[1])
          const positions: Array<Position> = []
          for (let i = 2; i < r.length; i++) positions.push({ partition, entryId: r[i] as string })
          if (positions.length !== p.events.length) {
            return Effect.fail(new AppendOutcomeUnknown({ stream, eventIds: eventIdsOf(p), reason: "the reply lists fewer positions than events" }))
          }
          return Effect.succeed({ stream, firstVersion: first, lastVersion: first + p.events.length - 1, positions, replayed: r[0] === "replay" })
        }
        case "wev":
          return Effect.fail(new WrongExpectedVersion({ stream, expected: p.expectedVersion, actual: Number(r[1]) }))
        case "mismatch":
        case "known": {
          const i = Number(r[1])
          const stored = r[2] as string | null
          const eventId = p.events[i]?.eventId ?? "?"
          const reason = r[0] === "known"
            ? `this id was written earlier (as ${stored}) but the batch's first id is new`
            : i === 0
            ? `the id's stored entry ${JSON.stringify(stored)} cannot be read`
            : stored === null
            ? "the batch replays an earlier append, but this id was not part of it"
            : `the batch replays an earlier append, but this id was written as ${stored}, not at the next version with type ${p.events[i]?.type}`
          return Effect.fail(new IdempotencyMismatch({ stream, eventId, reason }))
        }
        case "type":
          return Effect.fail(new WrongKeyType({ key: String(r[1]), expected: String(r[2]), actual: String(r[3]) }))
        default:
          return Effect.fail(new AppendOutcomeUnknown({ stream, eventIds: eventIdsOf(p), reason: `unexpected reply ${JSON.stringify(r)?.slice(0, 200)}` }))
      }
    }

    // every check runs inside the Effect (when it runs, not when it is made)
    const append: EventStore["Type"]["append"] = (stream, events, appendOptions) =>
      Effect.suspend(() => {
        const prepared = prepareAppend(stream, events, appendOptions?.expectedVersion, limits)
        if (prepared instanceof Error) return Effect.fail(prepared)
        const cached = known.get(prepared.category)
        return cached !== undefined ? submit(prepared, cached) : Effect.flatMap(resolvePartitions(prepared.category), (partitions) => submit(prepared, partitions))
      })

    const submit = (prepared: PreparedAppend, partitions: number) =>
      Effect.async<AppendResult, AppendError>((resume) => {
        // No canceler: one costs more than the rest of the append (measured ~4 µs of CPU
        // per call). An append interrupted while queued is still sent; like any append
        // whose caller stopped waiting, its outcome is then unknown to that caller.
        enqueue({ prepared, partition: partitionOf(prepared.entityId, partitions), enqueued: Date.now(), settled: false, resume })
      })

    // -----------------------------------------------------------------------
    // Reads
    // -----------------------------------------------------------------------
    const decodeEntry = (category: string, partition: number, entry: RawEntry | null, version: number, stream: string) =>
      entry === null
        ? new EventDecodeError({ stream, version, partition, reason: "the stream lists a log entry that does not exist" })
        : toRecorded(category, partition, entry[0], fieldsOf(entry[1]))

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
      const { category, id, forward, limit } = checked
      const pageSize = 256
      if (checked.live) {
        // the count decides the keys followed: recorded (or checked) before the first read
        return Stream.unwrap(Effect.map(resolvePartitions(category, true), (partitions) => {
          const p = partitionOf(id, partitions)
          return followStream<never>({
            page: (from, count) => Effect.map(readPage(category, p, id, stream, true, from, count), (r) => r.events),
            watch: notices.watch(keys.notice(category, p, id)),
            recheck: options.liveBlock
          }, checked.from ?? 1, pageSize)
        }))
      }
      return Stream.unwrap(Effect.map(resolvePartitions(category, false), (partitions) => {
        const p = partitionOf(id, partitions)
        interface S {
          readonly from: number
          readonly remaining: number
        }
        return Stream.paginateChunkEffect<S, RecordedEvent, ReadError, never>(
          { from: checked.from ?? (forward ? 1 : 0), remaining: limit },
          (s) => {
            const count = Math.min(pageSize, s.remaining)
            if (count === 0) return Effect.succeed([emptyChunk, noState] as const)
            return Effect.map(readPage(category, p, id, stream, forward, s.from, count), ({ events, lo }) => {
              const got = events.length
              if (!forward) events.reverse()
              const next: S | undefined = forward
                ? (got < count ? undefined : { from: lo + got, remaining: s.remaining - got })
                : (got === 0 || lo <= 1 ? undefined : { from: lo - 1, remaining: s.remaining - got })
              return [chunkOf(events), next === undefined ? noState : someState(next)] as const
            })
          }
        )
      }))
    }

    const page = (category: string, p: number, after: string, count: number) =>
      client.call("readCategory", (r) => r.xrange(keys.log(category, p), `(${after}`, "+", "COUNT", count) as Promise<Array<RawEntry>>).pipe(
        Effect.flatMap((entries) => decodeAll(category, p, entries))
      )

    const decodeAll = (category: string, p: number, entries: ReadonlyArray<RawEntry>): Effect.Effect<Array<RecordedEvent>, EventDecodeError> => {
      const out: Array<RecordedEvent> = []
      for (const [id, fields] of entries) {
        const r = toRecorded(category, p, id, fieldsOf(fields))
        if (r instanceof EventDecodeError) return Effect.fail(r)
        out.push(r)
      }
      return Effect.succeed(out)
    }

    const ends = (category: string, partitions: number) =>
      client.call("readCategory", (r) =>
        Promise.all(Array.from({ length: partitions }, (_, p) => r.xrevrange(keys.log(category, p), "+", "-", "COUNT", 1)))).pipe(
          Effect.map((replies): CategoryCursor => replies.map((entries) => entries[0]?.[0] ?? "0-0"))
        )

    const readCategoryImpl = (category: string, readOptions?: ReadCategoryOptions & { readonly live?: boolean | undefined }) => {
      const invalidCategory = checkCategory(category)
      if (invalidCategory) return Stream.fail(invalidCategory)
      const pageSize = validatePageSize(readOptions?.pageSize)
      if (pageSize instanceof InvalidArgument) return Stream.fail(pageSize)
      const live = readOptions?.live === true
      return Stream.unwrapScoped(Effect.gen(function*() {
        // a live reader follows the partitions it knows of: their count is recorded (or
        // found different, and refused) before anything is read
        const partitions = yield* resolvePartitions(category, live)
        const from = validateFrom(category, readOptions?.from, partitions)
        if (from instanceof InvalidArgument) return yield* from
        // "end" is where the category ends when the stream starts, before any connection is made
        const start = from === "end" ? yield* ends(category, partitions) : from
        let follow: Follow<never> | undefined = undefined
        if (live) {
          const blocking = yield* client.blocking("live").pipe(
            Effect.mapError((e: RedisConnectionError) => new StoreUnavailable({ operation: "readCategory", reason: e.message }))
          )
          const logKeys = Array.from({ length: partitions }, (_, p) => keys.log(category, p))
          const blockMs = Duration.toMillis(options.liveBlock)
          follow = (cursor, count) =>
            client.callBlocking("readCategory", blocking, options.liveBlock, (r) =>
              r.xread("COUNT", count, "BLOCK", blockMs, "STREAMS", ...logKeys, ...cursor) as Promise<Array<[string, Array<RawEntry>]> | null>).pipe(
                Effect.flatMap((reply) =>
                  reply === null ? Effect.succeed([]) : Effect.map(
                    Effect.forEach(reply, ([key, entries]) => decodeAll(category, logKeys.indexOf(key), entries)),
                    (xs) => xs.flat()
                  )
                )
              )
        }
        return readCategory(
          { partitions, page: (p, after, count) => page(category, p, after, count), ends: ends(category, partitions) },
          start,
          pageSize,
          follow
        )
      }))
    }

    return EventStore.of({
      append,
      read: read as EventStore["Type"]["read"],
      readCategory: readCategoryImpl as EventStore["Type"]["readCategory"],
      partitions: (category) => {
        const invalidCategory = checkCategory(category)
        return invalidCategory ? Effect.fail(invalidCategory) : resolvePartitions(category, false)
      },
      end: (category) => {
        const invalidCategory = checkCategory(category)
        return invalidCategory ? Effect.fail(invalidCategory) : Effect.flatMap(resolvePartitions(category, false), (partitions) => ends(category, partitions))
      },
      limits
    })
  })

const emptyChunk = Chunk.empty<RecordedEvent>()
const chunkOf = <A>(xs: Array<A>) => Chunk.unsafeFromArray(xs)
const noState = Option.none<never>()
const someState = <S>(s: S) => Option.some(s)

/** Resolves when the connection is ready, or fails (nothing sent) after `timeout`. */
const whenReady = (redis: Redis, timeout: Duration.Duration): Promise<void> => {
  if (redis.status === "ready") return Promise.resolve()
  return new Promise((resolve, reject) => {
    const onReady = () => {
      clearTimeout(timer)
      resolve()
    }
    const timer = setTimeout(() => {
      redis.off("ready", onReady)
      reject(new Error(`the connection is ${redis.status}, not ready`))
    }, Duration.toMillis(timeout))
    redis.once("ready", onReady)
  })
}

/** Warns loudly when the server may evict keys: an event store must never lose data to eviction. */
const checkEvictionPolicy = (client: RedisClient.Service) =>
  client.call("info", (r) => r.info("memory")).pipe(
    Effect.flatMap((info) => {
      const policy = /maxmemory_policy:(\S+)/.exec(info)?.[1]
      return policy === undefined || policy === "noeviction"
        ? Effect.void
        : Effect.logWarning(
          `Redis at ${client.url} runs with maxmemory-policy ${policy}: it may EVICT EVENTS under memory pressure. ` +
            "Set `maxmemory-policy noeviction` for an event store."
        )
    }),
    Effect.catchAll((e) => Effect.logWarning(`could not check Redis's maxmemory-policy (${e.message}); it must be noeviction`))
  )
