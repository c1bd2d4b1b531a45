/**
 * Consumer groups on PostgreSQL (docs/semantics.md §5–6), over the functions of
 * groupSchema.ts: every operation is one statement, and every one that moves an entry
 * checks the lease on the database's clock, with the (group, partition) row locked, in
 * the same call. Leases, memberships and dead-letter times all use the database's clock,
 * never this process's.
 *
 * Waiting: there is no blocking read. A member's waits follow the partition heads of
 * its category (heads.ts: a poll of the heads, 5 ms after a change and backing off while
 * nothing moves, and this process's own appends at once) and, when woken, make ONE call
 * of `read` with the member's tails: partitions that did not move are skipped without a
 * lock, the others are read, fenced, in the same call. A replay made by this process
 * wakes its members at once; one made elsewhere is found by the read a member makes when
 * a wait ends with nothing (at most `maxWait` later).
 *
 * Fences: a read whose reply was given up on (a timeout, a lost connection) may still
 * run on the server later. Every claim's first page moves the partition's fence on, and
 * reads carry the fence their lease last saw: such a late read takes nothing. A claim
 * given up on may run late too (a pooled connection runs what was queued on it in its
 * turn, whoever gave up): it moves the fence past the one the member knows, and every
 * later read of the member would then be fenced off. A read that comes back fenced off
 * therefore fails, retryable: the member claims the partition's pending list again,
 * which tells it the fence as it is now.
 *
 * @internal
 */
import type { PgClient } from "@effect/sql-pg/PgClient"
import { Clock, Deferred, Duration, Effect, ExecutionStrategy, Exit, Scope } from "effect"
import {
  type ClaimCursor,
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
  type Membership,
  type ReadResult,
  type Waited,
  type Watch
} from "../../ConsumerGroups.js"
import { checkCategory, EventDecodeError, InvalidArgument, StoreUnavailable } from "../../EventStore.js"
import { recordOf } from "../../internal/record.js"
import type { Heads, Watch as HeadsWatch } from "./heads.js"
import { makeRun } from "./deadline.js"
import type { Registry } from "./registry.js"

export interface PostgresGroupsOptions {
  readonly schema: string
  /** The longest a group statement waits for its reply: then it fails, retryable. */
  readonly commandTimeout: Duration.Duration
}

/** One row of `read` or `claim`. */
type Row = readonly [
  partition: number,
  kind: string,
  id: string | null,
  deliveries: number | null,
  pos: string | null,
  stream: string | null,
  version: string | null,
  eventId: string | null,
  type: string | null,
  data: string | null,
  meta: string | null,
  recorded: number | null,
  tailLog: string | null,
  tailRedelivery: string | null
]

const LOG = 0
const REDELIVERY = 1
const sourceCode = (source: "log" | "redelivery") => (source === "log" ? LOG : REDELIVERY)

/** `member:epoch` → [member, epoch]. */
const parseToken = (token: string): readonly [string, number] => {
  const at = token.lastIndexOf(":")
  return [token.slice(0, at), Number(token.slice(at + 1))]
}

/** The number before the `-` of an entry id (`12-0` → 12). */
const seqOf = (id: string) => Number(id.slice(0, id.indexOf("-")))

const lostOf = (lease: Lease) => new LeaseLost({ group: lease.group, partition: lease.partition, token: lease.token })

export const makePostgresGroups = (
  sql: PgClient,
  registry: Registry,
  heads: Heads,
  options: PostgresGroupsOptions
): Effect.Effect<ConsumerGroups["Type"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const s = `"${options.schema}"`
    const layerScope = yield* Effect.scope
    // waits last real time, as a blocking read on a server would: a test clock does not hold them
    const wallClock = Clock.make()

    // a statement of the groups takes row locks (leases, claim pages): past the deadline its
    // caller fails once the server has taken its cancel, so that a retry does not queue behind it
    const run = makeRun(sql, options.commandTimeout, "awaited")

    const infos = new Map<string, GroupInfo>()
    /** The fence a lease last saw (its claim's first page), by token and partition. */
    const fences = new Map<string, number>()
    const fenceKey = (lease: Lease) => `${lease.group}\u0000${lease.partition}\u0000${lease.token}`

    const notFound = (group: string) => new GroupNotFound({ group })

    const info = (group: string): Effect.Effect<GroupInfo, GroupError> =>
      Effect.suspend(() => {
        const hit = infos.get(group)
        if (hit !== undefined) return Effect.succeed(hit)
        return Effect.flatMap(run("group", `SELECT category, partitions FROM ${s}.groups WHERE name = $1`, [group]), (rows) => {
          const row = rows[0]
          if (row === undefined) return Effect.fail(notFound(group))
          const found: GroupInfo = { group, category: String(row[0]), partitions: Number(row[1]) }
          infos.set(group, found)
          return Effect.succeed(found)
        })
      })

    // ---- waits: one heads watch per member and category, for the life of the member

    interface MemberWatch {
      readonly watch: HeadsWatch
      readonly scope: Scope.CloseableScope
    }
    const memberWatches = new Map<string, MemberWatch>()
    const watchKey = (group: string, member: string, category: string) => `${group}\u0000${member}\u0000${category}`

    const memberWatch = (group: string, member: string, category: string) =>
      Effect.suspend(() => {
        const key = watchKey(group, member, category)
        const hit = memberWatches.get(key)
        if (hit !== undefined) return Effect.succeed(hit.watch)
        return Effect.gen(function*() {
          const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
          const watch = yield* Scope.extend(heads.watch(category, undefined, undefined), scope)
          const again = memberWatches.get(key)
          if (again !== undefined) {
            yield* Scope.close(scope, Exit.void)
            return again.watch
          }
          memberWatches.set(key, { watch, scope })
          return watch
        })
      })

    const dropWatches = (group: string, member: string) =>
      Effect.suspend(() => {
        const prefix = `${group}\u0000${member}\u0000`
        const closing: Array<Scope.CloseableScope> = []
        for (const [key, w] of memberWatches) {
          if (key.startsWith(prefix)) {
            memberWatches.delete(key)
            closing.push(w.scope)
          }
        }
        return Effect.forEach(closing, (scope) => Scope.close(scope, Exit.void), { discard: true })
      })

    /** Wakes this process's waiting members of a group (a replay is not a head move). */
    const wakeGroup = (group: string) => {
      const prefix = `${group}\u0000`
      for (const [key, w] of memberWatches) {
        if (key.startsWith(prefix)) w.watch.latch.unsafeOpen()
      }
    }

    // ---- rows to deliveries

    const deliveryOf = (category: string, row: Row): Delivery => {
      const partition = Number(row[0])
      const source = row[1] === "log" ? "log" : "redelivery"
      const entryId = `${row[4]}-0`
      const event = recordOf(
        category,
        partition,
        entryId,
        row[7] ?? undefined,
        row[5] ?? undefined,
        row[6] ?? undefined,
        row[8] ?? undefined,
        row[9] ?? undefined,
        row[10] ?? undefined,
        row[11] === null ? undefined : Math.floor(Number(row[11]))
      )
      return { partition, source, id: `${row[2]}-0`, event, deliveries: Number(row[3]) }
    }

    /** The `read` function's rows, per partition. */
    const resultsOf = (category: string, rows: ReadonlyArray<ReadonlyArray<unknown>>) => {
      const out = new Map<number, { deliveries: Array<Delivery>; tail: ReadResult["tail"]; status: string }>()
      for (const raw of rows) {
        const row = raw as unknown as Row
        const p = Number(row[0])
        let r = out.get(p)
        if (r === undefined) out.set(p, r = { deliveries: [], tail: undefined, status: "ok" })
        switch (row[1]) {
          case "log":
          case "redelivery":
            r.deliveries.push(deliveryOf(category, row))
            break
          case "tail":
            r.tail = { log: `${row[12]}-0`, redelivery: `${row[13]}-0` }
            break
          default:
            r.status = row[1]
        }
      }
      return out
    }

    const readSql = `SELECT * FROM ${s}.read($1, $2, $3, $4::int[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9)`

    /** One call of `read` over leases of one group and member; with tails, unmoved partitions are skipped. */
    const readMany = (member: string, leases: ReadonlyArray<Lease>, tails: ReadonlyArray<Watch["tail"]> | undefined, count: number) => {
      const first = leases[0]!
      const epochs = leases.map((l) => parseToken(l.token)[1])
      const fenceList = leases.map((l) => fences.get(fenceKey(l)) ?? null)
      return Effect.map(
        run("read", readSql, [
          first.group,
          first.category,
          member,
          leases.map((l) => l.partition),
          epochs,
          fenceList,
          tails === undefined ? leases.map(() => null) : tails.map((t) => seqOf(t.log)),
          tails === undefined ? leases.map(() => null) : tails.map((t) => seqOf(t.redelivery)),
          count
        ]),
        (rows) => resultsOf(first.category, rows)
      )
    }

    const tokenOwner = (lease: Lease, member: string) => parseToken(lease.token)[0] === member

    /** A read fenced off by a claim the member does not know of: it claims again (see the module's description). */
    const fencedOff = (lease: Lease) =>
      new StoreUnavailable({
        operation: "read",
        reason: `partition ${lease.partition} of group ${lease.group}: fenced off by a claim of this lease that ran after the last one answered; claim again`,
        retryable: true
      })

    const read: ConsumerGroups["Type"]["read"] = (lease, member, count) =>
      Effect.suspend(() => {
        if (!tokenOwner(lease, member)) return Effect.fail(lostOf(lease))
        return Effect.flatMap(readMany(member, [lease], undefined, count), (results): Effect.Effect<ReadResult, GroupError | LeaseLost> => {
          const r = results.get(lease.partition)
          if (r === undefined) return Effect.succeed<ReadResult>({ deliveries: [], tail: undefined })
          if (r.status === "lost") {
            fences.delete(fenceKey(lease))
            return Effect.fail(lostOf(lease))
          }
          if (r.status === "nogroup") return Effect.fail(notFound(lease.group))
          // fenced off (a claim since this lease's fence was learnt): nothing taken
          if (r.status === "fenced") return Effect.fail(fencedOff(lease))
          return Effect.succeed<ReadResult>({ deliveries: r.deliveries, tail: r.tail })
        })
      })

    /**
     * A wait's results; a partition fenced off fails the whole wait, retryable: the member
     * then claims every watched partition again (what the other reads took included).
     */
    const waitedOf = (
      watches: ReadonlyArray<Watch>,
      results: Map<number, { deliveries: Array<Delivery>; tail: ReadResult["tail"]; status: string }>
    ): Effect.Effect<Array<Waited>, StoreUnavailable> => {
      const out: Array<Waited> = []
      for (const w of watches) {
        const r = results.get(w.lease.partition)
        if (r === undefined) continue
        if (r.status === "lost" || r.status === "nogroup") out.push({ lease: w.lease, result: lostOf(w.lease) })
        else if (r.status === "fenced") return Effect.fail(fencedOff(w.lease))
        else if (r.deliveries.length > 0 || r.tail === undefined) out.push({ lease: w.lease, result: { deliveries: r.deliveries, tail: r.tail } })
      }
      return Effect.succeed(out)
    }

    const wait: ConsumerGroups["Type"]["wait"] = (member, watches, { blockMillis, count, until }) =>
      Effect.gen(function*() {
        if (watches.length === 0) return []
        // one group and category per call of `read`: a member's watches share them
        const byGroup = new Map<string, Array<Watch>>()
        for (const w of watches) {
          const list = byGroup.get(w.lease.group)
          if (list === undefined) byGroup.set(w.lease.group, [w])
          else list.push(w)
        }
        // partitions in order: every call locks group rows in that order
        const lists = Array.from(byGroup.values(), (list) => list.sort((a, b) => a.lease.partition - b.lease.partition))
        const latches = yield* Effect.forEach(lists, (list) => memberWatch(list[0]!.lease.group, member, list[0]!.lease.category))
        const readAll = Effect.suspend(() => {
          for (const latch of latches) latch.latch.unsafeClose()
          return Effect.map(
            Effect.forEach(lists, (list) => Effect.flatMap(readMany(member, list.map((w) => w.lease), list.map((w) => w.tail), count), (results) => waitedOf(list, results)), { concurrency: "unbounded" }),
            (xs) => xs.flat()
          )
        })
        // something may have moved since the member's last read: look first (partitions
        // that did not move cost an index probe each, no lock); then wait for a wake-up.
        // A wake-up that finds nothing (another partition moved) waits again, to the end
        const deadline = Date.now() + blockMillis
        for (;;) {
          const found = yield* readAll
          if (found.length > 0) return found
          const left = deadline - Date.now()
          if (left <= 0) return found
          const why = yield* Effect.raceAll([
            ...latches.map((w) => Effect.as(w.latch.await, "woken" as const)),
            Effect.as(Effect.withClock(Effect.sleep(Duration.millis(left)), wallClock), "timeout" as const),
            Effect.as(until, "cut" as const)
          ])
          if (why !== "woken") return yield* readAll
        }
      })

    const ensureSql = `SELECT * FROM ${s}.ensure_group($1, $2, $3, $4)`
    const heartbeatSql = `SELECT * FROM ${s}.heartbeat($1, $2, $3, $4)`
    const acquireSql = `UPDATE ${s}.group_partitions SET
        epoch = CASE WHEN owner = $3 AND lease_until > clock_timestamp() THEN epoch ELSE epoch + 1 END,
        owner = $3,
        lease_until = clock_timestamp() + $4 * interval '1 millisecond'
      WHERE grp = $1 AND partition = $2 AND (owner = $3 OR lease_until IS NULL OR lease_until <= clock_timestamp())
      RETURNING epoch::text`
    const renewSql = `UPDATE ${s}.group_partitions SET lease_until = clock_timestamp() + $5 * interval '1 millisecond'
      WHERE grp = $1 AND partition = $2 AND owner = $3 AND epoch = $4 AND lease_until > clock_timestamp() RETURNING 1`
    const releaseSql = `UPDATE ${s}.group_partitions SET owner = NULL, lease_until = NULL
      WHERE grp = $1 AND partition = $2 AND owner = $3 AND epoch = $4`
    const claimSql = `SELECT * FROM ${s}.claim($1, $2, $3, $4, $5, $6, $7, $8)`
    const beginSql = `SELECT ${s}.begin($1, $2, $3, $4, $5, $6)`
    const ackSql = `SELECT * FROM ${s}.ack($1::text[], $2::int[], $3::text[], $4::bigint[], $5::int[], $6::smallint[], $7::bigint[])`
    const deadLetterSql = `SELECT ${s}.dead_letter($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`
    const deadLettersSql = `SELECT partition, seq::text, entry_pos::text, event_id, stream, version::text, type, error_tag, message, attempts, deliveries,
        (extract(epoch FROM at) * 1000)::double precision
      FROM ${s}.dead_letters WHERE grp = $1 ORDER BY partition, seq`
    const replaySql = `SELECT ${s}.replay($1, $2::int[], $3::bigint[])`
    const purgeAllSql = `WITH d AS (DELETE FROM ${s}.dead_letters WHERE grp = $1 RETURNING 1) SELECT count(*)::int FROM d`
    const purgeSomeSql = `WITH d AS (DELETE FROM ${s}.dead_letters WHERE grp = $1
        AND (partition, seq) IN (SELECT * FROM unnest($2::int[], $3::bigint[])) RETURNING 1) SELECT count(*)::int FROM d`
    const statusSql = `SELECT gp.partition,
        CASE WHEN gp.lease_until > clock_timestamp() THEN gp.owner END,
        (gp.delivered - gp.acked
          - (SELECT count(*) FROM ${s}.acks a WHERE a.grp = gp.grp AND a.partition = gp.partition)
          + (SELECT count(*) FROM ${s}.pending_redeliveries pd WHERE pd.grp = gp.grp AND pd.partition = gp.partition))::int8::text,
        (greatest(0, coalesce((SELECT e.pos FROM ${s}.events e WHERE e.category = g.category AND e.partition = gp.partition ORDER BY e.pos DESC LIMIT 1), 0) - gp.delivered)
          + (SELECT count(*) FROM ${s}.redeliveries rd WHERE rd.grp = gp.grp AND rd.partition = gp.partition))::int8::text,
        (SELECT count(*) FROM ${s}.dead_letters dl WHERE dl.grp = gp.grp AND dl.partition = gp.partition)::int,
        (SELECT m.in_flight FROM ${s}.group_members m WHERE m.grp = gp.grp AND m.member = gp.owner AND m.expires_at > clock_timestamp())
      FROM ${s}.group_partitions gp JOIN ${s}.groups g ON g.name = gp.grp
      WHERE gp.grp = $1 ORDER BY gp.partition`
    const membersSql = `SELECT member FROM ${s}.group_members WHERE grp = $1 AND expires_at > clock_timestamp() ORDER BY member`

    /** Dead-letter ids (`partition:seq-0`) as (partition, seq) arrays; ids of another form match nothing. */
    const parseIds = (ids: ReadonlyArray<string>) => {
      const partitions: Array<number> = []
      const seqs: Array<number> = []
      for (const id of ids) {
        // exactly the form this backend gives: `<partition>:<seq>-0`
        const m = /^(0|[1-9][0-9]{0,8}):([1-9][0-9]{0,14})-0$/.exec(id)
        if (m === null) continue
        partitions.push(Number(m[1]))
        seqs.push(Number(m[2]))
      }
      return { partitions, seqs }
    }

    const leaseStatus = (lease: Lease, status: unknown): Effect.Effect<void, GroupError | LeaseLost> =>
      status === "ok" ? Effect.void : status === "nogroup" ? Effect.fail(notFound(lease.group)) : Effect.fail(lostOf(lease))

    // acknowledgements: every ack queued while one call is under way goes in the next,
    // one statement for all their partitions (each checked on its own)
    interface QueuedAck {
      readonly lease: Lease
      readonly deliveries: ReadonlyArray<Delivery>
      readonly done: Deferred.Deferred<void, GroupError | LeaseLost>
    }
    const acksQueued: Array<QueuedAck> = []
    const acksSignal = Effect.unsafeMakeLatch(false)
    const sendAcks = (batch: Array<QueuedAck>) =>
      Effect.suspend(() => {
        // partitions in order: every call locks group rows in that order
        batch.sort((a, b) => (a.lease.group < b.lease.group ? -1 : a.lease.group > b.lease.group ? 1 : a.lease.partition - b.lease.partition))
        const tokens = batch.map((q) => parseToken(q.lease.token))
        const params = [
          batch.map((q) => q.lease.group),
          batch.map((q) => q.lease.partition),
          tokens.map(([member]) => member),
          tokens.map(([, epoch]) => epoch),
          batch.map((q) => q.deliveries.length),
          batch.flatMap((q) => q.deliveries.map((d) => sourceCode(d.source))),
          batch.flatMap((q) => q.deliveries.map((d) => seqOf(d.id)))
        ]
        return Effect.either(run("ack", ackSql, params)).pipe(
          Effect.flatMap((result) =>
            Effect.forEach(batch, (q, i) =>
              Deferred.complete(
                q.done,
                result._tag === "Left" ? Effect.fail(result.left) : leaseStatus(q.lease, result.right[i]?.[0])
              ), { discard: true })
          )
        )
      })
    yield* Effect.forkIn(
      Effect.forever(Effect.gen(function*() {
        acksSignal.unsafeClose()
        if (acksQueued.length === 0) yield* acksSignal.await
        yield* sendAcks(acksQueued.splice(0))
      })),
      layerScope
    )

    const service: ConsumerGroups["Type"] = {
      ensureGroup: (group, category, startFrom) =>
        Effect.gen(function*() {
          if (!isValidGroupName(group)) {
            return yield* new InvalidArgument({ argument: "group", reason: `${JSON.stringify(group)} must be 1 to 128 of [A-Za-z0-9_.-]` })
          }
          const invalid = checkCategory(category)
          if (invalid) return yield* invalid
          if (category.includes("\u0000")) {
            return yield* new InvalidArgument({ argument: "category", reason: "the PostgreSQL store cannot store a NUL character (U+0000)" })
          }
          const partitions = yield* registry.resolve(category, true)
          const rows = yield* run("ensureGroup", ensureSql, [group, category, partitions, startFrom === "end"])
          const row = rows[0]!
          const existing = String(row[0])
          if (existing !== category) return yield* new GroupConflict({ group, category, existing })
          const found: GroupInfo = { group, category, partitions: Number(row[1]) }
          infos.set(group, found)
          return found
        }),

      info,

      heartbeat: (group, member, ttlMillis, inFlight) =>
        Effect.flatMap(
          run("heartbeat", heartbeatSql, [group, member, Math.ceil(ttlMillis), JSON.stringify(Object.fromEntries(inFlight))]),
          (rows) =>
            Effect.flatMap(info(group), (g): Effect.Effect<Membership, GroupError> => {
              const members: Array<string> = []
              const owners: Array<string | undefined> = Array.from({ length: g.partitions }, () => undefined)
              for (const row of rows) {
                if (row[0] === "nogroup") return Effect.fail(notFound(group))
                if (row[0] === "member") members.push(String(row[1]))
                else if (row[0] === "owner") owners[Number(row[2])] = String(row[1])
              }
              return Effect.succeed({ members, owners })
            })
        ),

      leave: (group, member) =>
        Effect.zipRight(
          dropWatches(group, member),
          Effect.asVoid(run("leave", `DELETE FROM ${s}.group_members WHERE grp = $1 AND member = $2`, [group, member]))
        ),

      acquire: (groupInfo, partition, member, ttlMillis) =>
        Effect.flatMap(run("acquire", acquireSql, [groupInfo.group, partition, member, Math.ceil(ttlMillis)]), (rows) => {
          const row = rows[0]
          if (row !== undefined) {
            return Effect.succeed<Lease | undefined>({ group: groupInfo.group, category: groupInfo.category, partition, token: `${member}:${row[0]}` })
          }
          // held by another member, or no such group
          return Effect.as(info(groupInfo.group), undefined)
        }),

      renew: (lease, ttlMillis) =>
        Effect.suspend(() => {
          const [member, epoch] = parseToken(lease.token)
          return Effect.flatMap(run("renew", renewSql, [lease.group, lease.partition, member, epoch, Math.ceil(ttlMillis)]), (rows) =>
            rows.length > 0 ? Effect.void : Effect.fail(lostOf(lease)))
        }),

      release: (lease) =>
        Effect.suspend(() => {
          const [member, epoch] = parseToken(lease.token)
          fences.delete(fenceKey(lease))
          return Effect.asVoid(run("release", releaseSql, [lease.group, lease.partition, member, epoch]))
        }),

      claim: (lease, member, cursor: ClaimCursor, count) =>
        Effect.suspend(() => {
          const [owner, epoch] = parseToken(lease.token)
          if (owner !== member) return Effect.fail(lostOf(lease))
          return Effect.flatMap(
            run("claim", claimSql, [lease.group, lease.category, lease.partition, member, epoch, sourceCode(cursor.source), seqOf(cursor.id), count]),
            (rows): Effect.Effect<ClaimPage, GroupError | LeaseLost> => {
              const deliveries: Array<Delivery> = []
              let next: ClaimCursor | undefined = undefined
              for (const raw of rows) {
                const row = raw as unknown as Row
                switch (row[1]) {
                  case "lost":
                    return Effect.fail(lostOf(lease))
                  case "nogroup":
                    return Effect.fail(notFound(lease.group))
                  case "next":
                    fences.set(fenceKey(lease), Number(row[12]))
                    next = row[2] !== null
                      ? { source: cursor.source, id: `${row[2]}-0` }
                      : cursor.source === "redelivery"
                      ? { source: "log", id: "0-0" }
                      : undefined
                    break
                  default:
                    deliveries.push(deliveryOf(lease.category, row))
                }
              }
              return Effect.succeed({ deliveries, next })
            }
          )
        }),

      read,

      wait,

      begin: (lease, delivery) =>
        Effect.suspend(() => {
          const [member, epoch] = parseToken(lease.token)
          return Effect.flatMap(
            run("begin", beginSql, [lease.group, lease.partition, member, epoch, sourceCode(delivery.source), seqOf(delivery.id)]),
            (rows): Effect.Effect<number, GroupError | LeaseLost> => {
              const n = Number(rows[0]?.[0])
              return n === -2 ? Effect.fail(notFound(lease.group)) : n === -1 ? Effect.fail(lostOf(lease)) : Effect.succeed(n)
            }
          )
        }),

      ack: (lease, deliveries) =>
        deliveries.length === 0
          ? Effect.void
          : Effect.flatMap(Deferred.make<void, GroupError | LeaseLost>(), (done) => {
            acksQueued.push({ lease, deliveries, done })
            acksSignal.unsafeOpen()
            return Deferred.await(done)
          }),

      deadLetter: (lease, delivery, reason) =>
        Effect.suspend(() => {
          const [member, epoch] = parseToken(lease.token)
          const event = delivery.event
          const recorded = event instanceof EventDecodeError ? undefined : event
          const undecodable = event instanceof EventDecodeError ? event : undefined
          const nul = (x: string) => x.replace(/\u0000/g, "\\u0000")
          return Effect.flatMap(
            run("deadLetter", deadLetterSql, [
              lease.group,
              lease.partition,
              member,
              epoch,
              sourceCode(delivery.source),
              seqOf(delivery.id),
              recorded?.eventId ?? "",
              nul(recorded?.stream ?? undecodable?.stream ?? ""),
              recorded?.version ?? undecodable?.version ?? 0,
              nul(recorded?.type ?? undecodable?.type ?? ""),
              nul(reason.errorTag),
              nul(reason.message),
              reason.attempts,
              delivery.deliveries
            ]),
            (rows) => leaseStatus(lease, rows[0]?.[0])
          )
        }),

      deadLetters: (group) =>
        Effect.zipRight(
          info(group),
          Effect.map(run("deadLetters", deadLettersSql, [group]), (rows) =>
            rows.map((row): DeadLetter => ({
              id: `${row[0]}:${row[1]}-0`,
              group,
              partition: Number(row[0]),
              entryId: `${row[2]}-0`,
              eventId: String(row[3]),
              stream: String(row[4]),
              version: Number(row[5]),
              type: String(row[6]),
              errorTag: String(row[7]),
              message: String(row[8]),
              attempts: Number(row[9]),
              deliveries: Number(row[10]),
              at: Math.floor(Number(row[11]))
            })))
        ),

      replay: (group, ids) =>
        Effect.gen(function*() {
          const picked = ids === undefined ? undefined : parseIds(ids)
          if (picked !== undefined && picked.partitions.length === 0) {
            yield* info(group)
            return 0
          }
          const rows = yield* run("replay", replaySql, [group, picked?.partitions ?? null, picked?.seqs ?? null])
          const moved = Number(rows[0]?.[0])
          if (moved < 0) return yield* notFound(group)
          if (moved > 0) wakeGroup(group)
          return moved
        }),

      purge: (group, ids) =>
        Effect.gen(function*() {
          yield* info(group)
          const picked = ids === undefined ? undefined : parseIds(ids)
          if (picked !== undefined && picked.partitions.length === 0) return 0
          const rows = picked === undefined
            ? yield* run("purge", purgeAllSql, [group])
            : yield* run("purge", purgeSomeSql, [group, picked.partitions, picked.seqs])
          return Number(rows[0]?.[0] ?? 0)
        }),

      status: (group) =>
        Effect.gen(function*() {
          const g = yield* info(group)
          const [rows, memberRows] = yield* Effect.all([run("status", statusSql, [group]), run("status", membersSql, [group])], { concurrency: 2 })
          const status: GroupStatus = {
            ...g,
            members: memberRows.map((r) => String(r[0])),
            partitionStatus: rows.map((row) => {
              const owner = row[1] === null ? undefined : String(row[1])
              let inFlight = 0
              if (owner !== undefined && typeof row[5] === "string") {
                try {
                  const counts = JSON.parse(row[5]) as Record<string, unknown>
                  const n = counts[String(row[0])]
                  inFlight = typeof n === "number" ? n : 0
                } catch {
                  inFlight = 0
                }
              }
              return {
                partition: Number(row[0]),
                owner,
                pending: Number(row[2]),
                lag: Number(row[3]),
                inFlight,
                deadLetters: Number(row[4])
              }
            })
          }
          return status
        }),

      groups: Effect.map(run("groups", `SELECT name, category, partitions FROM ${s}.groups ORDER BY name`, []), (rows) =>
        rows.map((row): GroupInfo => ({ group: String(row[0]), category: String(row[1]), partitions: Number(row[2]) })))
    }
    return ConsumerGroups.of(service)
  })
