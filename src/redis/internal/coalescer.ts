/**
 * The append coalescer. Appends are coalesced per partition: the batches that arrive in
 * the same turn of the event loop for one partition, up to `maxEventsPerCall` events, go
 * in ONE call of the append script on the append connection, which checks and applies
 * each batch on its own and returns one result per batch. Measured against a single
 * script call per append on an auto-pipelined connection, this roughly doubles
 * throughput: Node and Redis then work at the same time instead of taking turns
 * (DESIGN.md, Performance). A batch larger than `maxEventsPerCall` goes alone, still in
 * one atomic call.
 *
 * @internal
 */
import { Cause, Duration, Effect, Either, Exit, type Scope } from "effect"
import { type Cluster, Command, type Redis } from "ioredis"
import type { Connection } from "../RedisClient.js"
import {
  type AppendError,
  AppendOutcomeUnknown,
  type AppendResult,
  PermissionDenied,
  ReplicationTimeout,
  StoreUnavailable
} from "../../EventStore.js"
import type { PreparedAppend } from "../../internal/append.js"
import type { RedisClient } from "../RedisClient.js"
import type { Confirmer } from "./durability.js"
import type { Keys } from "./keys.js"
import { appendResult, eventIdsOf } from "./replies.js"
import { encodeAppendCall } from "./resp.js"
import { APPEND } from "./scripts.js"
import { whenReady } from "./server.js"
import { slotOf } from "./slot.js"

export interface CoalescerOptions {
  /** Events per coalesced call (docs/semantics.md §3: at most 512). */
  readonly maxEventsPerCall: number
  /** Coalesced calls in flight at once per partition on the append connection. */
  readonly maxCallsInFlight: number
}

/** A checked batch and its partition. */
export interface Submission {
  readonly prepared: PreparedAppend
  readonly partition: number
}

export interface Coalescer {
  /** Sends a checked batch to its partition; settles with the batch's own outcome. */
  readonly submit: (prepared: PreparedAppend, partition: number) => Effect.Effect<AppendResult, AppendError>
  /**
   * Sends checked batches, each to its partition (those of one partition in the order
   * given), in one step of the caller's fiber; settles once every batch has its outcome.
   */
  readonly submitMany: (batches: ReadonlyArray<Submission>) => Effect.Effect<Array<Either.Either<AppendResult, AppendError>>>
}

interface Pending {
  readonly prepared: PreparedAppend
  readonly partition: number
  readonly enqueued: number
  settled: boolean
  readonly resume: (exit: Exit.Exit<AppendResult, AppendError>) => void
}

/** The batches waiting for one partition. */
interface Queue {
  readonly tag: string
  readonly partition: number
  readonly keyLog: string
  readonly keyStreams: string
  /** The cluster slot of the partition's keys. */
  readonly slot: number
  readonly items: Array<Pending>
  listed: boolean
  /** Calls of this partition in flight. */
  inFlight: number
}

interface Call {
  readonly queue: Queue
  readonly items: ReadonlyArray<Pending>
  readonly deadline: number
}

interface Corkable {
  readonly cork: () => void
  readonly uncork: () => void
}

/** Batches after which an idle partition's first call leaves within the turn (see enqueue). */
const EARLY_BATCHES = 16

/** Redirections followed for one call (MOVED, ASK) before it fails as not sent. */
const MAX_REDIRECTS = 3

/** Where a redirection sends a call: a node's `host:port`, and whether ASKING goes first. */
interface Redirect {
  readonly node: string
  readonly asking: boolean
}

/** A call written, with the confirmation written behind it (when appends wait). */
interface Sent {
  readonly reply: Promise<unknown>
  readonly confirmation: Promise<unknown> | undefined
}

/** A call's reply, with the replicas that confirmed it (when appends wait). */
interface Settled {
  readonly reply: unknown
  readonly confirmed?: number
}

/** The error of a batch's failed outcome (every one the coalescer makes is a plain failure). */
const failureOf = (cause: Cause.Cause<AppendError>, p: PreparedAppend): AppendError => {
  const failure = Cause.failureOption(cause)
  return failure._tag === "Some"
    ? failure.value
    : new AppendOutcomeUnknown({ stream: p.stream, eventIds: eventIdsOf(p), reason: Cause.pretty(cause) })
}

/** A failure that happened before the request was written: nothing was sent. */
class NotSent {
  constructor(readonly cause: unknown) {}
}

/**
 * A coalescer writing on `conn`. Closing its scope fails what is still queued with
 * `StoreUnavailable` (nothing of it was sent).
 */
export const makeCoalescer = (
  client: RedisClient.Service,
  conn: Connection,
  keys: Keys,
  options: CoalescerOptions,
  confirmer: Confirmer | undefined
): Effect.Effect<Coalescer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const queues = new Map<string, Queue>()
    const ready: Array<Queue> = []
    const calls = new Set<Call>()
    let queued = 0
    let scheduled = false
    let sweeper: ReturnType<typeof setInterval> | undefined = undefined
    const timeoutMs = Duration.toMillis(client.commandTimeout)
    // calls in flight over all partitions: past this, appends wait here (where a timeout
    // means "not sent"), not in the server's queue
    const maxCallsTotal = Math.max(16, options.maxCallsInFlight)
    const confirmMs = confirmer?.millis ?? 0
    const required = confirmer?.required ?? 0

    // The plain connection a call goes on: on a cluster, that of the master of its slot
    // as the cluster client last mapped it (or a node named by a redirection).
    const nodeAt = (key: string): Redis | undefined =>
      (conn as Cluster).nodes("master").find((node) => `${node.options.host}:${node.options.port}` === key)
    const nodeOf = (slot: number): Redis | undefined => {
      if (!client.cluster) return conn as Redis
      const key = (conn as Cluster).slots[slot]?.[0]
      return key === undefined ? undefined : nodeAt(key)
    }
    // a node's connection that is closed (node connections do not reconnect: one that
    // dropped ends) takes nothing. One not yet open queues what it is given until it is
    // (the cluster client's node connections keep an offline queue), and a drop before
    // then fails it, unsent.
    const usable = (node: Redis | undefined): node is Redis =>
      node !== undefined && node.status !== "close" && node.status !== "end" && node.status !== "reconnecting"

    // found by category, then partition: no key string is built per append
    const byCategory = new Map<string, Array<Queue | undefined>>()
    const queueOf = (category: string, partition: number): Queue => {
      let list = byCategory.get(category)
      if (list === undefined) {
        list = []
        byCategory.set(category, list)
      }
      let q = list[partition]
      if (q === undefined) {
        const tag = keys.tag(category, partition)
        const keyLog = keys.log(category, partition)
        q = { tag, partition, keyLog, keyStreams: keys.streams(category, partition), slot: slotOf(keyLog), items: [], listed: false, inFlight: 0 }
        list[partition] = q
        queues.set(tag, q)
      }
      return q
    }

    const settle = (item: Pending, exit: Exit.Exit<AppendResult, AppendError>) => {
      if (item.settled) return
      item.settled = true
      item.resume(exit)
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
            settle(item, Exit.fail(new StoreUnavailable({ operation: "append", reason: `not sent within ${timeoutMs} ms` })))
          }
        }
      }
      for (const call of calls) {
        if (call.deadline > now) continue
        // past its deadline the call no longer holds its partition's place
        calls.delete(call)
        call.queue.inFlight--
        for (const item of call.items) {
          settle(item, Exit.fail(new AppendOutcomeUnknown({ stream: item.prepared.stream, eventIds: eventIdsOf(item.prepared), reason: `no reply within ${timeoutMs} ms` })))
        }
      }
      // places freed: what waits behind them goes now
      if (ready.length > 0) schedule()
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

    const enqueue = (item: Pending, early: boolean) => {
      const q = queueOf(item.prepared.category, item.partition)
      q.items.push(item)
      queued++
      if (sweeper === undefined) sweeper = setInterval(sweep, Math.max(10, Math.min(250, timeoutMs / 10)))
      if (!q.listed) {
        q.listed = true
        ready.push(q)
      }
      // a partition with nothing in flight sends a first call as soon as it holds
      // EARLY_BATCHES batches, without waiting for the end of the turn: Redis runs it
      // while the rest of a burst is still being prepared, and the rest follows. Batches
      // given together (submitMany) are all prepared already: they go in one call.
      if (early && q.inFlight === 0 && q.items.length >= EARLY_BATCHES && calls.size < maxCallsTotal) {
        const items = take(q)
        if (items.length > 0) send(q, items)
      }
      if (q.inFlight < options.maxCallsInFlight && calls.size < maxCallsTotal) schedule()
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

    /**
     * Sends what is queued, each partition up to its share of calls in flight. The calls
     * of one pump leave in one write (the socket corked meanwhile): a write is a system
     * call, and on a small machine one costs more than encoding a call.
     */
    function pump() {
      scheduled = false
      const socket = client.cluster ? undefined : (conn as { readonly stream?: Corkable }).stream
      const cork = ready.length > 1 && typeof socket?.cork === "function" && typeof socket.uncork === "function"
      if (cork) socket!.cork()
      try {
        for (let sent = true; sent && calls.size < maxCallsTotal;) {
          sent = false
          for (let i = ready.length; i > 0 && calls.size < maxCallsTotal; i--) {
            const q = ready.shift()!
            if (q.inFlight >= options.maxCallsInFlight) {
              ready.push(q)
              continue
            }
            const items = take(q)
            if (q.items.length > 0) ready.push(q)
            else q.listed = false
            if (items.length > 0) {
              send(q, items)
              sent = true
            }
          }
        }
      } finally {
        if (cork) socket!.uncork()
      }
    }

    const send = (q: Queue, items: Array<Pending>) => {
      const call: Call = { queue: q, items, deadline: Date.now() + timeoutMs + confirmMs }
      calls.add(call)
      q.inFlight++
      // The call and its confirmation go on one plain connection, one after the other in
      // the same write (see durability.ts); on a cluster, that of the master of the
      // partition's slot, so that no redirection or retry by the cluster client can move
      // one without the other.
      const write = (target: Redis, withSource: boolean, asking: boolean): Sent => {
        if (asking) target.sendCommand(new Command("asking", []))
        let command: Command | undefined = encodeAppendCall(APPEND, withSource, q.tag, q.keyLog, q.keyStreams, items, q.slot)
        if (command === undefined) {
          const argv: Array<string | number> = [withSource ? APPEND.source : APPEND.sha, 2 + 2 * items.length, q.keyLog, q.keyStreams]
          for (const item of items) argv.push(q.tag + ":ids:" + item.prepared.entityId, q.tag + ":s:" + item.prepared.entityId)
          argv.push(items.length)
          for (const { prepared: p } of items) {
            argv.push(p.entityId, p.expected, p.events.length)
            for (const e of p.events) argv.push(e.eventId, e.type, e.data, e.meta)
          }
          command = new Command(withSource ? "eval" : "evalsha", argv, { replyEncoding: "utf8" })
        }
        target.sendCommand(command)
        const confirmation = confirmer?.command()
        if (confirmation !== undefined) {
          target.sendCommand(confirmation)
          // read only when the call succeeded
          confirmation.promise.catch(() => undefined)
        }
        return { reply: command.promise, confirmation: confirmation?.promise }
      }
      const attempt = (withSource: boolean, redirects: number, to?: Redirect): Promise<Settled> => {
        let sent: Sent
        try {
          const target = to !== undefined ? nodeAt(to.node) : nodeOf(q.slot)
          if (!usable(target)) {
            // the cluster client maps the slot again, for the next call
            if (client.cluster) (conn as Cluster).refreshSlotsCache()
            return Promise.reject(new NotSent(new Error(`no connection to ${to?.node ?? `the master of slot ${q.slot}`}`)))
          }
          sent = write(target, withSource, to?.asking === true)
        } catch (error) {
          // refused before anything was written (the call could not be encoded)
          return Promise.reject(new NotSent(error))
        }
        return sent.reply.then(
          (reply) =>
            sent.confirmation === undefined
              ? { reply }
              : sent.confirmation.then(
                (r) => ({ reply, confirmed: confirmer!.confirmed(r) }),
                // the confirmation itself failed (a dropped connection, say): not confirmed
                () => ({ reply, confirmed: 0 })
              ),
          (error: unknown) => {
            const message = error instanceof Error ? error.message : ""
            if (message.startsWith("NOSCRIPT") && !withSource) return attempt(true, redirects, to)
            // a redirection: the call ran nowhere (its keys share one slot); sent again to
            // the node named, a bounded number of times
            const redirect = /^(MOVED|ASK) \d+ (\S+)/.exec(message)
            if (redirect !== null && client.cluster) {
              if (redirect[1] === "MOVED") (conn as Cluster).refreshSlotsCache()
              if (redirects < MAX_REDIRECTS) return attempt(withSource, redirects + 1, { node: redirect[2]!, asking: redirect[1] === "ASK" })
              return Promise.reject(new NotSent(error))
            }
            return Promise.reject(error)
          }
        )
      }
      const done = () => {
        if (calls.delete(call)) q.inFlight--
        if (ready.length > 0) pump()
      }
      const run = conn.status === "ready"
        ? attempt(false, 0)
        : whenReady(conn, client.commandTimeout).then(() => attempt(false, 0), (error: unknown) => Promise.reject(new NotSent(error)))
      run.then(
        (settled) => {
          done()
          deliver(q, items, settled)
        },
        (error: unknown) => {
          done()
          failAll(items, error)
        }
      )
    }

    // The backend classifies what the server said: what cannot have been applied is
    // StoreUnavailable, a refusal PermissionDenied, anything else after the request went
    // out an unknown outcome (safe to retry with the same ids).
    const failAll = (items: ReadonlyArray<Pending>, error: unknown) => {
      const sent = !(error instanceof NotSent)
      const cause = error instanceof NotSent ? error.cause : error
      const message = cause instanceof Error ? cause.message : String(cause)
      const seen = client.lastError(conn)
      const reason = seen !== undefined && /Connection is closed/.test(message) ? `${message} (${seen})` : message
      for (const item of items) {
        let failure: AppendError
        if (!sent || /^(OOM|Stream isn't writeable|BUSY|LOADING|MASTERDOWN|READONLY|CLUSTERDOWN|TRYAGAIN)/.test(reason)) {
          failure = new StoreUnavailable({ operation: "append", reason })
        } else if (reason.startsWith("NOPERM")) {
          failure = new PermissionDenied({ operation: "append", reason })
        } else {
          failure = new AppendOutcomeUnknown({ stream: item.prepared.stream, eventIds: eventIdsOf(item.prepared), reason })
        }
        settle(item, Exit.fail(failure))
      }
    }

    const deliver = (q: Queue, items: ReadonlyArray<Pending>, { confirmed, reply }: Settled) => {
      if (!Array.isArray(reply) || reply.length !== items.length) {
        return failAll(items, new Error(`unexpected reply from the append script: ${JSON.stringify(reply)?.slice(0, 200)}`))
      }
      const short = confirmed !== undefined && confirmed < required
      for (let b = 0; b < items.length; b++) {
        const r = reply[b] as Array<unknown>
        const p = items[b]!.prepared
        if (short && (r[0] === "ok" || r[0] === "replay")) {
          settle(items[b]!, Exit.fail(new ReplicationTimeout({ stream: p.stream, eventIds: eventIdsOf(p), required, confirmed })))
        } else {
          settle(items[b]!, appendResult(q.partition, p, r))
        }
      }
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (sweeper !== undefined) clearInterval(sweeper)
        for (const q of queues.values()) {
          for (const item of q.items) {
            settle(item, Exit.fail(new StoreUnavailable({ operation: "append", reason: "the store was closed" })))
          }
          q.items.length = 0
        }
      })
    )

    return {
      submit: (prepared, partition) =>
        Effect.async<AppendResult, AppendError>((resume) => {
          // No canceler: one costs more than the rest of the append (measured ~4 µs of CPU
          // per call). An append interrupted while queued is still sent; like any append
          // whose caller stopped waiting, its outcome is then unknown to that caller.
          enqueue({ prepared, partition, enqueued: Date.now(), settled: false, resume }, true)
        }),
      submitMany: (batches) =>
        batches.length === 0 ? Effect.succeed([]) : Effect.async<Array<Either.Either<AppendResult, AppendError>>>((resume) => {
          // one fiber step for the lot (no canceler, as for one batch)
          const out: Array<Either.Either<AppendResult, AppendError>> = new Array(batches.length)
          let left = batches.length
          const enqueued = Date.now()
          for (let i = 0; i < batches.length; i++) {
            const { partition, prepared } = batches[i]!
            enqueue({
              prepared,
              partition,
              enqueued,
              settled: false,
              resume: (exit) => {
                out[i] = Exit.isSuccess(exit) ? Either.right(exit.value) : Either.left(failureOf(exit.cause, prepared))
                if (--left === 0) resume(Effect.succeed(out))
              }
            }, false)
          }
        })
    }
  })
