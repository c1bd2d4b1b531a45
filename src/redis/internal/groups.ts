/**
 * Consumer groups on Redis (docs/semantics.md §5–6): one Redis consumer group per partition of
 * the category log and per partition's redelivery stream; membership in a sorted set
 * scored by expiry (server time); a fenced lease per (group, partition) that the read,
 * claim, ack and dead-letter scripts check first, atomically with what they do.
 *
 * Connections: membership, leases, acks and dead letters go over one control connection
 * whose replies are always small, so a renewal never waits behind a page of events.
 * Each member has a data connection for its fenced reads and claim pages, and a blocking
 * connection for waiting: a plain multi-key XREAD BLOCK from the tails of its drained
 * partitions (which changes nothing in the group), with the fenced reads of those
 * partitions queued right behind it on the same connection, so the server runs them the
 * moment the wait ends and checks each lease (and wait fence) then. A wait cut short is
 * woken through the member's own wake stream, which the XREAD also reads (no admin
 * command, and it cannot reach another client's wait), so both replies arrive at once
 * and are consumed. A wait given up on closes the member's connections, and its
 * partitions are claimed again, which fences off its reads should they still run.
 *
 * @internal
 */
import { Deferred, Duration, Effect, ExecutionStrategy, Exit, Fiber, FiberId, Scope } from "effect"
import {
  type ClaimPage,
  ConsumerGroups,
  type DeadLetter,
  type Delivery,
  GroupConflict,
  type GroupError,
  type GroupInfo,
  GroupNotFound,
  type GroupStatus,
  isValidGroupName,
  type Lease,
  LeaseLost,
  type ReadResult,
  type Waited,
  type WaitOptions,
  type Watch
} from "../../ConsumerGroups.js"
import { checkCategory, EventDecodeError, InvalidArgument, type StoreError, StoreUnavailable } from "../../EventStore.js"
import { compareEntryIds, isEntryId } from "../../internal/ids.js"
import { type EntryValues, fieldsOf, fromValues, toRecorded } from "../../internal/record.js"
import { ACK, ACQUIRE, BEGIN, CLAIM, DEAD_LETTER, HEARTBEAT, READ, READ_WAITED, RELEASE, RENEW, REPLAY, WAKE } from "./groupScripts.js"
import type { Keys } from "./keys.js"
import type { CallError, Connection, RedisClient, RedisConnectionError } from "../RedisClient.js"
import { makeNotices } from "./notices.js"
import { evalScript } from "./scripts.js"
import { makeWaitCut, type WaitCut } from "./waitCut.js"

type RawEntry = [string, Array<string>]
/** The read script's reply: {tail|false, logEntries, redeliveries, pending} (pending absent when fenced off). */
type ReadReply = [[string, string] | null, Array<EntryValues>, Array<[string, string, EntryValues | null]>, number?]

const ACK_CHUNK = 1000
/** How long a member's wake stream outlives its last wake (a member gone leaves it behind). */
const WAKE_TTL_MS = 60_000
/**
 * How often a wait's reads also count the member's pending entries (every plain read
 * does): an entry the server holds pending for the member that the member has no record
 * of (its acknowledgement lost in a failover) is found within this time even while waits
 * follow one another without a plain read, and the other waits spare the server two calls
 * per partition on the path from an append to its handler.
 */
const PENDING_COUNT_MS = 1_000
/** Dead letters listed per call: listings are paged, never one unbounded reply. */
const LIST_PAGE = 200

export interface GroupKeys {
  readonly registry: (group: string) => string
  readonly all: string
  readonly members: (group: string) => string
  readonly inFlight: (group: string) => string
  readonly lease: (category: string, p: number, group: string) => string
  readonly epoch: (category: string, p: number, group: string) => string
  readonly redelivery: (category: string, p: number, group: string) => string
  readonly deadLetters: (category: string, p: number, group: string) => string
  readonly starts: (category: string, p: number, group: string) => string
  /** Moved on by every claim's first page: a wait's reads sent before it take nothing. */
  readonly waitFence: (category: string, p: number, group: string) => string
  /** What a member's waits also read, so that it can be woken early (one server only). */
  readonly wake: (group: string, member: string) => string
}

export const makeGroupKeys = (keys: Keys): GroupKeys => ({
  registry: (g) => `${keys.prefix}:group:${g}`,
  all: `${keys.prefix}:groups`,
  // both under the group's hash tag: the heartbeat script touches the two at once
  members: (g) => `${keys.prefix}:{group:${g}}:members`,
  inFlight: (g) => `${keys.prefix}:{group:${g}}:inflight`,
  lease: (c, p, g) => `${keys.tag(c, p)}:lease:${g}`,
  epoch: (c, p, g) => `${keys.tag(c, p)}:epoch:${g}`,
  redelivery: (c, p, g) => `${keys.tag(c, p)}:redeliver:${g}`,
  deadLetters: (c, p, g) => `${keys.tag(c, p)}:dlq:${g}`,
  starts: (c, p, g) => `${keys.tag(c, p)}:starts:${g}`,
  waitFence: (c, p, g) => `${keys.tag(c, p)}:wfence:${g}`,
  wake: (g, m) => `${keys.prefix}:{group:${g}}:wake:${m}`
})

const fieldMap = (list: ReadonlyArray<string>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (let i = 0; i + 1 < list.length; i += 2) out[list[i]!] = list[i + 1]!
  return out
}

export const makeRedisGroups = (
  client: RedisClient.Service,
  keys: Keys,
  partitionsOf: (category: string) => Effect.Effect<number, StoreError | InvalidArgument>
): Effect.Effect<ConsumerGroups["Type"], RedisConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    const gk = makeGroupKeys(keys)
    const scope = yield* Effect.scope
    const infos = new Map<string, GroupInfo>()
    // small replies only: membership, leases, acks, dead letters
    const control = yield* client.dedicated("control")
    // per member: a data connection (fenced reads, claim pages) and a blocking one
    // (waits), opened at the member's first read and closed when it leaves
    const connections = new Map<string, Deferred.Deferred<MemberConnections, CallError>>()
    // per lease: the wait fence its last claim left (see READ_WAITED)
    const fences = new Map<string, string>()

    // Acknowledgements of several partitions sent in one turn leave in one write (a write
    // is a system call, and on a small machine one costs more than the script it carries)
    let corked = false
    const combineControlWrites = () => {
      if (corked || client.cluster) return
      const socket = (control as { readonly stream?: { cork?: () => void; uncork?: () => void } }).stream
      if (typeof socket?.cork !== "function" || typeof socket.uncork !== "function") return
      socket.cork()
      corked = true
      process.nextTick(() => {
        corked = false
        socket.uncork!()
      })
    }

    const run = <A>(operation: string, f: (r: Connection) => Promise<A>) => client.call(operation, f)
    const ctl = <A>(operation: string, f: (r: Connection) => Promise<A>) => client.call(operation, f, control)

    const info = (group: string): Effect.Effect<GroupInfo, GroupError> =>
      Effect.suspend(() => {
        const known = infos.get(group)
        if (known !== undefined) return Effect.succeed(known)
        if (!isValidGroupName(group)) {
          return Effect.fail(new InvalidArgument({ argument: "group", reason: `${JSON.stringify(group)} must be 1 to 128 of [A-Za-z0-9_.-]` }))
        }
        return run("group", (r) => r.hgetall(gk.registry(group))).pipe(
          Effect.flatMap((h): Effect.Effect<GroupInfo, GroupError> => {
            if (h.category === undefined || h.partitions === undefined) return Effect.fail(new GroupNotFound({ group }))
            const found = { group, category: h.category, partitions: Number(h.partitions) }
            infos.set(group, found)
            return Effect.succeed(found)
          })
        )
      })

    /** A deleted consumer group (XGROUP DESTROY) answers NOGROUP: that is not a passing failure. */
    const noGroup = (group: string) => <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | GroupNotFound> =>
      Effect.catchIf(
        effect,
        (e): e is E => (e as { readonly _tag?: unknown })._tag === "StoreUnavailable" && (e as unknown as StoreUnavailable).reason.startsWith("NOGROUP"),
        () => Effect.fail(new GroupNotFound({ group }))
      )

    const decodeEntry = (category: string, p: number, entry: RawEntry | null | undefined, id: string): Delivery["event"] =>
      entry === null || entry === undefined
        ? new EventDecodeError({ partition: p, entryId: id, reason: "the log entry does not exist" })
        : toRecorded(category, p, entry[0], fieldsOf(entry[1]))

    const lost = (lease: Lease) => new LeaseLost({ group: lease.group, partition: lease.partition, token: lease.token })

    const openConnections = (member: string): Effect.Effect<MemberConnections, CallError> =>
      Effect.gen(function*() {
        const child = yield* Scope.fork(scope, ExecutionStrategy.sequential)
        const opened = Effect.gen(function*() {
          const data = yield* Scope.extend(client.dedicated(`data:${member}`), child)
          // on a cluster a member waits on partition notices, not on a blocking read
          const waiter = client.cluster ? undefined : yield* Scope.extend(client.blocking(`wait:${member}`), child)
          const cut = waiter === undefined ? undefined : yield* makeWaitCut(child)
          const c: MemberConnections = { data, waiter, cut, wakeSeen: "0-0", countedAt: 0, close: Scope.close(child, Exit.void) }
          return c
        })
        return yield* opened.pipe(
          Effect.tapError(() => Scope.close(child, Exit.void)),
          Effect.mapError((e) => new StoreUnavailable({ operation: "read", reason: e.message }))
        )
      })

    /**
     * A member's connections, opened at its first read and closed when it leaves; calls
     * that come together share one opening (the claims of every partition a member
     * acquires start at once).
     */
    const connectionsOf = (member: string): Effect.Effect<MemberConnections, CallError> =>
      Effect.suspend(() => {
        const existing = connections.get(member)
        if (existing !== undefined) return Deferred.await(existing)
        const opening = Deferred.unsafeMake<MemberConnections, CallError>(FiberId.none)
        connections.set(member, opening)
        // not interruptible: whoever else waits for the opening gets its outcome
        return Effect.uninterruptible(Effect.flatMap(Effect.exit(openConnections(member)), (exit) => {
          if (exit._tag === "Failure" && connections.get(member) === opening) connections.delete(member)
          return Effect.zipRight(Deferred.done(opening, exit), exit)
        }))
      })

    /** Closes a member's connections (they are opened again when next needed). */
    const closeConnections = (member: string) =>
      Effect.suspend(() => {
        const c = connections.get(member)
        if (c === undefined) return Effect.void
        connections.delete(member)
        return Effect.flatMap(Effect.option(Deferred.await(c)), (o) => (o._tag === "Some" ? o.value.close : Effect.void))
      })

    // partition notices, for waits on a cluster (made on first use)
    const notices = yield* makeNotices(client)

    /** The watched partitions with entries after their tails (log or redelivery stream). */
    const grown = (watches: ReadonlyArray<Watch>) =>
      run("wait", (r) =>
        Promise.all(watches.map(({ lease, tail }) =>
          Promise.all([
            lastIdOf(r, keys.log(lease.category, lease.partition)),
            lastIdOf(r, gk.redelivery(lease.category, lease.partition, lease.group))
          ]).then(([log, redelivery]) =>
            (log !== undefined && compareEntryIds(log, tail.log) > 0) || (redelivery !== undefined && compareEntryIds(redelivery, tail.redelivery) > 0)
              ? [lease.partition]
              : []
          )
        ))).pipe(Effect.map((xs) => xs.flat()))

    /**
     * A wait on a cluster, where one read cannot span partitions: subscribed to the
     * partitions' notices first, then a look at their ends; if nothing is new, the first
     * notice (or `blockMillis`, or `until`) ends the wait; then a fenced read of each
     * partition that grew. A replayed dead letter publishes no notice: it is found by the
     * look at the ends of the next wait.
     */
    const waitOnNotices = (member: string, watches: ReadonlyArray<Watch>, options: WaitOptions) =>
      Effect.gen(function*() {
        const partitions = yield* Effect.scoped(Effect.gen(function*() {
          const latch = yield* notices.watch(watches.map(({ lease }) => keys.partitionNotice(lease.category, lease.partition)))
          const now = yield* grown(watches)
          if (now.length > 0) return now
          const noticed = yield* Effect.raceAll([
            Effect.as(latch.await, true),
            Effect.as(Effect.sleep(Duration.millis(options.blockMillis)), false),
            Effect.as(options.until, false)
          ])
          return noticed ? yield* grown(watches) : []
        }))
        return yield* Effect.forEach(
          watches.filter(({ lease }) => partitions.includes(lease.partition)),
          ({ lease }) =>
            service.read(lease, member, options.count).pipe(
              Effect.map((result): Waited => ({ lease, result })),
              Effect.catchTag("LeaseLost", (e) => Effect.succeed<Waited>({ lease, result: e }))
            ),
          { concurrency: "unbounded" }
        )
      })

    const service: ConsumerGroups["Type"] = {
      ensureGroup: (group, category, startFrom) =>
        Effect.gen(function*() {
          if (!isValidGroupName(group)) {
            return yield* new InvalidArgument({ argument: "group", reason: `${JSON.stringify(group)} must be 1 to 128 of [A-Za-z0-9_.-]` })
          }
          const invalid = checkCategory(category)
          if (invalid) return yield* invalid
          const partitions = yield* partitionsOf(category)
          const [existing] = yield* run("ensureGroup", (r) =>
            Promise.all([
              r.hsetnx(gk.registry(group), "category", category).then(() => r.hget(gk.registry(group), "category")),
              r.hsetnx(gk.registry(group), "partitions", String(partitions)),
              r.sadd(gk.all, group)
            ]))
          if (existing !== category) return yield* new GroupConflict({ group, category, existing: existing ?? "" })
          const start = startFrom === "end" ? "$" : "0"
          yield* run("ensureGroup", (r) =>
            Promise.all(Array.from({ length: partitions }, (_, p) =>
              Promise.all([
                r.xgroup("CREATE", keys.log(category, p), group, start, "MKSTREAM").catch(ignoreBusyGroup),
                r.xgroup("CREATE", gk.redelivery(category, p, group), group, "0", "MKSTREAM").catch(ignoreBusyGroup)
              ]))))
          const created = { group, category, partitions }
          infos.set(group, created)
          return created
        }),

      info,

      heartbeat: (group, member, ttlMillis, inFlight) =>
        Effect.flatMap(info(group), (g) => {
          const args: Array<string | number> = [member, ttlMillis]
          for (const [p, n] of inFlight) args.push(p, n)
          // the leases are the truth about owners: read them beside the heartbeat, in one round trip
          return ctl("heartbeat", (r) =>
            Promise.all([
              evalScript(r, HEARTBEAT, [gk.members(group), gk.inFlight(group)], args) as Promise<Array<string>>,
              Promise.all(Array.from({ length: g.partitions }, (_, p) => r.get(gk.lease(g.category, p, group))))
            ])).pipe(Effect.map(([members, leases]) => ({
              members: members.slice().sort(),
              owners: leases.map((token) => (token === null ? undefined : token.slice(0, token.lastIndexOf(":"))))
            })))
        }),

      leave: (group, member) =>
        Effect.asVoid(ctl("leave", (r) => Promise.all([r.zrem(gk.members(group), member), r.del(gk.wake(group, member))]))).pipe(
          Effect.ensuring(Effect.sync(() => {
            for (const token of fences.keys()) if (token.startsWith(`${member}:`)) fences.delete(token)
          })),
          Effect.ensuring(closeConnections(member))
        ),

      acquire: (g, partition, member, ttlMillis) =>
        ctl("acquire", (r) =>
          evalScript(r, ACQUIRE, [gk.lease(g.category, partition, g.group), gk.epoch(g.category, partition, g.group)], [member, ttlMillis]) as Promise<string | null>).pipe(
            Effect.map((token) => (token === null ? undefined : { group: g.group, category: g.category, partition, token }))
          ),

      renew: (lease, ttlMillis) =>
        ctl("renew", (r) => evalScript(r, RENEW, [gk.lease(lease.category, lease.partition, lease.group)], [lease.token, ttlMillis])).pipe(
          Effect.flatMap((ok) => (ok === 1 ? Effect.void : Effect.fail(lost(lease))))
        ),

      release: (lease) =>
        Effect.asVoid(ctl("release", (r) => evalScript(r, RELEASE, [gk.lease(lease.category, lease.partition, lease.group)], [lease.token]))),

      claim: (lease, member, cursor, count) =>
        Effect.gen(function*() {
          const { category, group, partition: p } = lease
          const c = yield* connectionsOf(member)
          const source = cursor.source === "redelivery" ? gk.redelivery(category, p, group) : keys.log(category, p)
          const reply = yield* client.call("claim", (r) =>
            evalScript(r, CLAIM, [
              gk.lease(category, p, group),
              source,
              keys.log(category, p),
              gk.deadLetters(category, p, group),
              gk.starts(category, p, group),
              gk.waitFence(category, p, group)
            ], [
              lease.token,
              group,
              member,
              cursor.id,
              count,
              cursor.source === "redelivery" ? "r" : "l",
              Date.now()
            ]) as Promise<[string, Array<[string, string, Array<string> | null, number]>, number | null] | null>, c.data).pipe(noGroup(group))
          if (reply === null) return yield* lost(lease)
          const [next, entries, fence] = reply
          if (fence !== null && fence !== undefined) fences.set(lease.token, String(fence))
          const page: ClaimPage = {
            deliveries: entries.map(([id, entryId, fields, deliveries]): Delivery => ({
              partition: p,
              source: cursor.source,
              id,
              event: decodeEntry(category, p, fields === null ? null : [entryId, fields], entryId),
              deliveries: Number(deliveries)
            })),
            next: next !== "0-0"
              ? { source: cursor.source, id: next }
              : cursor.source === "redelivery"
              ? { source: "log", id: "0-0" }
              : undefined
          }
          return page
        }),

      read: (lease, member, count) =>
        Effect.gen(function*() {
          const { category, group, partition: p } = lease
          const c = yield* connectionsOf(member)
          const reply = yield* client.call("read", (r) =>
            evalScript(r, READ, [gk.lease(category, p, group), keys.log(category, p), gk.redelivery(category, p, group)], [
              lease.token,
              group,
              member,
              count
            ]) as Promise<ReadReply | null>, c.data).pipe(noGroup(group))
          if (reply === null) return yield* lost(lease)
          return readResultOf(category, p, reply)
        }),

      wait: (member, watches, options) =>
        Effect.gen(function*() {
          if (watches.length === 0) return []
          if (client.cluster) return yield* waitOnNotices(member, watches, options)
          const c = yield* connectionsOf(member)
          const waiter = c.waiter!
          const group = watches[0]!.lease.group
          const wake = gk.wake(group, member)
          const streams: Array<string> = []
          const ids: Array<string> = []
          const scriptKeys: Array<string> = []
          // the member's pending count rides on a wait now and then (see READ_WAITED)
          const now = Date.now()
          const counted = now - c.countedAt >= PENDING_COUNT_MS
          if (counted) c.countedAt = now
          const scriptArgs: Array<string | number> = [group, member, options.count, counted ? "1" : "0"]
          for (const { lease, tail } of watches) {
            const log = keys.log(lease.category, lease.partition)
            const red = gk.redelivery(lease.category, lease.partition, lease.group)
            streams.push(log, red)
            ids.push(tail.log, tail.redelivery)
            scriptKeys.push(gk.lease(lease.category, lease.partition, lease.group), log, red, gk.waitFence(lease.category, lease.partition, lease.group))
            scriptArgs.push(lease.token, fences.get(lease.token) ?? "", tail.log, tail.redelivery)
          }
          streams.push(wake)
          ids.push(c.wakeSeen)
          // cut short: an entry in the member's wake stream ends the wait; its reads then
          // run at once and their reply is still taken, so what they moved is handled
          const sendWake = Effect.ignore(ctl("wake", (r) => evalScript(r, WAKE, [wake], [WAKE_TTL_MS])))
          const cut = c.cut!.arm(options.until, sendWake) ? undefined : yield* Effect.fork(Effect.zipRight(options.until, sendWake))
          const replies = yield* client.callBlocking("wait", waiter, Duration.millis(options.blockMillis), (r) => {
            // one write: the blocking read, then the fenced reads the server runs the
            // moment it ends (both replies come back together)
            const p = r.pipeline()
            p.xread("COUNT", 1, "BLOCK", options.blockMillis, "STREAMS", ...streams, ...ids)
            p.evalsha(READ_WAITED.sha, scriptKeys.length, ...scriptKeys, ...scriptArgs)
            return p.exec().then((results) => {
              const [woken, reads] = results ?? [[new Error("no reply to the wait")], [new Error("no reply to the wait")]]
              const seen = (woken?.[1] as Array<[string, Array<RawEntry>]> | null | undefined)?.find(([key]) => key === wake)?.[1][0]?.[0]
              if (seen !== undefined) c.wakeSeen = seen
              // the reads' reply decides, whatever became of the blocking read: they ran
              if (reads?.[0] instanceof Error && reads[0].message.startsWith("NOSCRIPT")) {
                // the server lost its scripts (a restart, SCRIPT FLUSH): read again with the source
                return evalScript(r, READ_WAITED, scriptKeys, scriptArgs) as Promise<Array<ReadReply | 0 | null>>
              }
              if (reads?.[0]) return Promise.reject(reads[0])
              const replies = reads?.[1]
              if (!Array.isArray(replies)) return Promise.reject(new Error("unexpected reply to the wait's reads"))
              // a blocking read refused (a permission, say) returns at once: what the reads
              // took is handed over, and with nothing taken the refusal is the outcome (the
              // caller backs off instead of waiting in a loop)
              if (woken?.[0] && replies.every((x) => x === 0)) return Promise.reject(woken[0])
              return replies as Array<ReadReply | 0 | null>
            })
          }).pipe(
            noGroup(group),
            Effect.ensuring(cut === undefined ? Effect.sync(c.cut!.disarm) : Fiber.interruptFork(cut)),
            // Given up on (no reply in time, a connection dropped, an interruption), the
            // wait's reads may still run on the server: the member's connections are
            // closed (opened again when next needed) and the caller claims the
            // partitions again, which moves their wait fences on, so those reads take
            // nothing.
            Effect.onError(() => closeConnections(member))
          )
          const out: Array<Waited> = []
          for (let i = 0; i < watches.length; i++) {
            const reply = replies[i]
            const lease = watches[i]!.lease
            if (reply === null || reply === undefined) out.push({ lease, result: lost(lease) })
            else if (reply !== 0) out.push({ lease, result: readResultOf(lease.category, lease.partition, reply) })
          }
          return out
        }),

      begin: (lease, delivery) =>
        ctl("begin", (r) =>
          evalScript(r, BEGIN, [gk.lease(lease.category, lease.partition, lease.group), gk.starts(lease.category, lease.partition, lease.group)], [
            lease.token,
            `${delivery.source === "log" ? "l" : "r"}:${delivery.id}`
          ]) as Promise<number | null>).pipe(Effect.flatMap((n) => (n === null ? Effect.fail(lost(lease)) : Effect.succeed(Number(n))))),

      ack: (lease, deliveries) =>
        Effect.forEach(chunks(deliveries, ACK_CHUNK), (chunk) => {
          const logIds = chunk.filter((d) => d.source === "log").map((d) => d.id)
          const redeliveredIds = chunk.filter((d) => d.source === "redelivery").map((d) => d.id)
          return ctl("ack", (r) => {
            combineControlWrites()
            return evalScript(r, ACK, [
              gk.lease(lease.category, lease.partition, lease.group),
              keys.log(lease.category, lease.partition),
              gk.redelivery(lease.category, lease.partition, lease.group),
              gk.starts(lease.category, lease.partition, lease.group)
            ], [
              lease.token,
              lease.group,
              logIds.length,
              ...logIds,
              ...redeliveredIds
            ])
          }).pipe(Effect.flatMap((ok) => (ok === 1 ? Effect.void : Effect.fail(lost(lease)))))
        }, { discard: true }),

      deadLetter: (lease, delivery, reason) => {
        const { category, group, partition: p } = lease
        const event = delivery.event
        const recorded = event instanceof EventDecodeError ? undefined : event
        const fields = [
          "entryId", recorded?.position.entryId ?? (event instanceof EventDecodeError ? event.entryId ?? delivery.id : delivery.id),
          "source", delivery.source === "log" ? "l" : "r",
          "eventId", recorded?.eventId ?? "",
          "stream", recorded?.stream ?? (event instanceof EventDecodeError ? event.stream ?? "" : ""),
          "version", String(recorded?.version ?? (event instanceof EventDecodeError ? event.version ?? 0 : 0)),
          "type", recorded?.type ?? (event instanceof EventDecodeError ? event.type ?? "" : ""),
          "tag", reason.errorTag,
          "message", reason.message,
          "attempts", String(reason.attempts),
          "deliveries", String(delivery.deliveries),
          "at", String(Date.now())
        ]
        const source = delivery.source === "log" ? keys.log(category, p) : gk.redelivery(category, p, group)
        return ctl("deadLetter", (r) =>
          evalScript(r, DEAD_LETTER, [gk.lease(category, p, group), source, gk.deadLetters(category, p, group), gk.starts(category, p, group)], [
            lease.token,
            group,
            delivery.id,
            delivery.source === "log" ? "0" : "1",
            ...fields
          ])).pipe(noGroup(group), Effect.flatMap((ok) => (ok === 1 ? Effect.void : Effect.fail(lost(lease)))))
      },

      deadLetters: (group) =>
        Effect.flatMap(info(group), (g) =>
          Effect.forEach(Array.from({ length: g.partitions }, (_, p) => p), (p) =>
            Effect.gen(function*() {
              // paged: a long list never comes back as one reply
              const out: Array<DeadLetter> = []
              let after = "-"
              for (;;) {
                const page = yield* run("deadLetters", (r) =>
                  r.xrange(gk.deadLetters(g.category, p, group), after, "+", "COUNT", LIST_PAGE) as Promise<Array<RawEntry>>)
                for (const [id, list] of page) {
                  const f = fieldMap(list)
                  out.push({
                    id: `${p}:${id}`,
                    group,
                    partition: p,
                    entryId: f.entryId ?? "",
                    eventId: f.eventId ?? "",
                    stream: f.stream ?? "",
                    version: Number(f.version ?? 0),
                    type: f.type ?? "",
                    errorTag: f.tag ?? "",
                    message: f.message ?? "",
                    attempts: Number(f.attempts ?? 0),
                    deliveries: Number(f.deliveries ?? 0),
                    at: Number(f.at ?? 0)
                  })
                }
                if (page.length < LIST_PAGE) return out
                after = `(${page[page.length - 1]![0]}`
              }
            })).pipe(Effect.map((perPartition) => perPartition.flat()))),

      replay: (group, ids) =>
        Effect.flatMap(info(group), (g) =>
          run("replay", (r) =>
            Promise.all(Array.from({ length: g.partitions }, (_, p) => {
              const mine = ids?.filter((id) => id.startsWith(`${p}:`)).map((id) => id.slice(String(p).length + 1))
              if (mine !== undefined && mine.length === 0) return Promise.resolve(0)
              return evalScript(r, REPLAY, [gk.deadLetters(g.category, p, group), gk.redelivery(g.category, p, group)], mine ?? []) as Promise<number>
            }))).pipe(Effect.map((counts) => counts.reduce((a, b) => a + Number(b), 0)))),

      purge: (group, ids) =>
        Effect.flatMap(info(group), (g) =>
          run("purge", (r) =>
            Promise.all(Array.from({ length: g.partitions }, (_, p) => {
              const key = gk.deadLetters(g.category, p, group)
              if (ids === undefined) return r.xlen(key).then((n) => r.del(key).then(() => n))
              const mine = ids.filter((id) => id.startsWith(`${p}:`)).map((id) => id.slice(String(p).length + 1))
              return mine.length === 0 ? Promise.resolve(0) : r.xdel(key, ...mine)
            }))).pipe(Effect.map((counts) => counts.reduce((a, b) => a + Number(b), 0)))),

      status: (group) =>
        Effect.flatMap(info(group), (g) =>
          run("status", async (r) => {
            const [members, inFlight, perPartition] = await Promise.all([
              r.call("ZRANGE", gk.members(group), String(Date.now()), "+inf", "BYSCORE") as Promise<Array<string>>,
              r.hgetall(gk.inFlight(group)),
              Promise.all(Array.from({ length: g.partitions }, (_, p) =>
                Promise.all([
                  r.get(gk.lease(g.category, p, group)),
                  groupsOf(r, keys.log(g.category, p)),
                  groupsOf(r, gk.redelivery(g.category, p, group)),
                  r.xlen(gk.deadLetters(g.category, p, group)),
                  lastIdOf(r, keys.log(g.category, p)),
                  lastIdOf(r, gk.redelivery(g.category, p, group))
                ])))
            ])
            return { members, inFlight, perPartition }
          }).pipe(Effect.map(({ inFlight, members, perPartition }): GroupStatus => ({
            ...g,
            members: members.slice().sort(),
            partitionStatus: perPartition.map(([lease, logGroups, redeliveryGroups, dead, logEnd, redeliveryEnd], p) => {
              const owner = lease === null ? undefined : lease.slice(0, lease.lastIndexOf(":"))
              const a = groupFigures(logGroups, group, logEnd)
              const b = groupFigures(redeliveryGroups, group, redeliveryEnd)
              const reported = inFlight[String(p)]
              const [reporter, n] = reported === undefined ? [undefined, "0"] : [reported.slice(0, reported.lastIndexOf("|")), reported.slice(reported.lastIndexOf("|") + 1)]
              return {
                partition: p,
                owner,
                pending: a.pending + b.pending,
                lag: a.lag + b.lag,
                inFlight: owner !== undefined && reporter === owner ? Number(n) : 0,
                deadLetters: dead
              }
            })
          })))),

      groups: run("groups", async (r) => {
        const names = await r.smembers(gk.all)
        const hashes = await Promise.all(names.map((n) => r.hgetall(gk.registry(n))))
        return names.flatMap((group, i) => {
          const h = hashes[i]!
          return h.category === undefined ? [] : [{ group, category: h.category, partitions: Number(h.partitions) }]
        })
      })
    }
    return ConsumerGroups.of(service)
  })

interface MemberConnections {
  readonly data: Connection
  /** The blocking connection of waits (none on a cluster: waits use notices there). */
  readonly waiter: Connection | undefined
  /** What cuts the waits on `waiter` short. */
  readonly cut: WaitCut | undefined
  /** The last entry of the member's wake stream its waits have seen. */
  wakeSeen: string
  /** When (ms) a wait of the member last asked for its pending count. */
  countedAt: number
  readonly close: Effect.Effect<void>
}

const ignoreBusyGroup = (error: unknown) =>
  error instanceof Error && error.message.startsWith("BUSYGROUP") ? "OK" : Promise.reject(error)

const chunks = <A>(xs: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size))
  return out
}

/** `XINFO GROUPS` of a stream; none while the stream does not exist yet. */
const groupsOf = (r: Connection, key: string) =>
  (r.xinfo("GROUPS", key) as Promise<Array<Array<string | number | null>>>).catch((error: unknown) =>
    error instanceof Error && /no such key/i.test(error.message) ? [] : Promise.reject(error)
  )

/** The id of a stream's last entry (streams are never trimmed), undefined when it has none. */
const lastIdOf = (r: Connection, key: string) =>
  (r.xrevrange(key, "+", "-", "COUNT", 1) as Promise<Array<[string, Array<string>]>>).then((entries) => entries[0]?.[0])

/**
 * pending and lag of one group from an `XINFO GROUPS` reply and the stream's last entry
 * id. Whether anything is left to read is decided by the group's last delivered id
 * against the stream's last entry: Redis's own `lag` counter can be wrong after the
 * server reloads its AOF (it reported 2,000+ for a group that had read every entry), so
 * it gives only the size of a lag that exists. A group not created yet on a stream with
 * entries, or whose lag Redis cannot tell (null), counts as lagging: never idle by mistake.
 */
export const groupFigures = (
  reply: ReadonlyArray<ReadonlyArray<string | number | null>>,
  group: string,
  lastEntry: string | undefined
) => {
  for (const g of reply) {
    const m = new Map<string, string | number | null>()
    for (let i = 0; i + 1 < g.length; i += 2) m.set(String(g[i]), g[i + 1] ?? null)
    if (m.get("name") === group) {
      const pending = Number(m.get("pending") ?? 0)
      const delivered = m.get("last-delivered-id")
      if (lastEntry === undefined || (typeof delivered === "string" && isEntryId(delivered) && compareEntryIds(delivered, lastEntry) >= 0)) {
        return { pending, lag: 0 }
      }
      const reported = m.get("lag")
      return { pending, lag: reported === null || reported === undefined ? 1 : Math.max(1, Number(reported)) }
    }
  }
  return { pending: 0, lag: lastEntry === undefined ? 0 : 1 }
}

/** The deliveries and tail of a fenced read's reply (redeliveries first, then the log's entries). */
const readResultOf = (category: string, p: number, [tail, entries, redelivered, pending]: ReadReply): ReadResult => {
  const deliveries: Array<Delivery> = new Array(redelivered.length + entries.length)
  let i = 0
  for (const [id, entryId, values] of redelivered) {
    deliveries[i++] = {
      partition: p,
      source: "redelivery",
      id,
      event: values === null
        ? new EventDecodeError({ partition: p, entryId, reason: "the log entry does not exist" })
        : fromValues(category, p, values),
      deliveries: 1
    }
  }
  for (const values of entries) {
    deliveries[i++] = { partition: p, source: "log", id: values[0], event: fromValues(category, p, values), deliveries: 1 }
  }
  return { deliveries, tail: tail === null ? undefined : { log: tail[0], redelivery: tail[1] }, pending: typeof pending === "number" ? pending : undefined }
}
