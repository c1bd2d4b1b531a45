/**
 * Consumer groups on Redis (SEMANTICS §5–6): one Redis consumer group per partition of
 * the category log and per partition's redelivery stream; membership in a sorted set
 * scored by expiry (server time); a fenced lease per (group, partition) that the claim,
 * ack and dead-letter scripts check first.
 *
 * Reading: each member has one blocking connection of its own and issues one multi-key
 * `XREADGROUP … BLOCK` over the partitions it owns (on a single node; a cluster needs one
 * read per partition, which this version does not do yet). An interrupted read is
 * unblocked with CLIENT UNBLOCK, so its reply arrives at once and is consumed.
 *
 * @internal
 */
import { Duration, Effect, ExecutionStrategy, Exit, Scope } from "effect"
import type { Redis } from "ioredis"
import {
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
  LeaseLost
} from "../ConsumerGroups.js"
import { checkCategory, EventDecodeError, InvalidArgument, type StoreError, StoreUnavailable } from "../EventStore.js"
import { fieldsOf, toRecorded } from "../internal/record.js"
import { ACK, ACQUIRE, BEGIN, CLAIM, DEAD_LETTER, HEARTBEAT, RELEASE, RENEW, REPLAY } from "./groupScripts.js"
import type { Keys } from "./keys.js"
import type { RedisClient } from "./RedisClient.js"
import { evalScript } from "./scripts.js"

type RawEntry = [string, Array<string>]

const ACK_CHUNK = 1000

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
}

export const makeGroupKeys = (keys: Keys): GroupKeys => ({
  registry: (g) => `${keys.prefix}:group:${g}`,
  all: `${keys.prefix}:groups`,
  members: (g) => `${keys.prefix}:group:${g}:members`,
  inFlight: (g) => `${keys.prefix}:group:${g}:inflight`,
  lease: (c, p, g) => `${keys.tag(c, p)}:lease:${g}`,
  epoch: (c, p, g) => `${keys.tag(c, p)}:epoch:${g}`,
  redelivery: (c, p, g) => `${keys.tag(c, p)}:redeliver:${g}`,
  deadLetters: (c, p, g) => `${keys.tag(c, p)}:dlq:${g}`,
  starts: (c, p, g) => `${keys.tag(c, p)}:starts:${g}`
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
): Effect.Effect<ConsumerGroups["Type"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const gk = makeGroupKeys(keys)
    const scope = yield* Effect.scope
    const infos = new Map<string, GroupInfo>()
    // one blocking connection per member, opened at its first read, closed when it leaves
    const readers = new Map<string, { readonly redis: Redis; id: number; readonly close: Effect.Effect<void> }>()

    const run = <A>(operation: string, f: (r: Redis) => Promise<A>) => client.call(operation, f)

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

    const decodeEntry = (category: string, p: number, entry: RawEntry | null | undefined, id: string): Delivery["event"] =>
      entry === null || entry === undefined
        ? new EventDecodeError({ partition: p, entryId: id, reason: "the log entry does not exist" })
        : toRecorded(category, p, entry[0], fieldsOf(entry[1]))

    const lost = (lease: Lease) => new LeaseLost({ group: lease.group, partition: lease.partition, token: lease.token })

    const readerFor = (member: string) =>
      Effect.suspend(() => {
        const existing = readers.get(member)
        if (existing !== undefined) return Effect.succeed(existing)
        return Effect.gen(function*() {
          const child = yield* Scope.fork(scope, ExecutionStrategy.sequential)
          const redis = yield* Scope.extend(client.blocking(`read:${member}`), child).pipe(
            Effect.tapError(() => Scope.close(child, Exit.void)),
            Effect.mapError((e) => new StoreUnavailable({ operation: "read", reason: e.message }))
          )
          const id = yield* client.call("read", (r) => r.client("ID") as Promise<number>, redis).pipe(Effect.tapError(() => Scope.close(child, Exit.void)))
          const reader = { redis, id, close: Scope.close(child, Exit.void) }
          // a reconnect gives the connection a new id: keep the one CLIENT UNBLOCK needs
          redis.on("ready", () => {
            redis.client("ID").then((fresh) => (reader.id = Number(fresh)), () => undefined)
          })
          readers.set(member, reader)
          return reader
        })
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
        Effect.flatMap(info(group), () => {
          const args: Array<string | number> = [member, ttlMillis]
          for (const [p, n] of inFlight) args.push(p, n)
          return run("heartbeat", (r) => evalScript(r, HEARTBEAT, [gk.members(group), gk.inFlight(group)], args) as Promise<Array<string>>)
        }),

      leave: (group, member) =>
        Effect.asVoid(run("leave", (r) => r.zrem(gk.members(group), member))).pipe(
          Effect.ensuring(Effect.suspend(() => {
            const reader = readers.get(member)
            if (reader === undefined) return Effect.void
            readers.delete(member)
            return reader.close
          }))
        ),

      acquire: (g, partition, member, ttlMillis) =>
        run("acquire", (r) =>
          evalScript(r, ACQUIRE, [gk.lease(g.category, partition, g.group), gk.epoch(g.category, partition, g.group)], [member, ttlMillis]) as Promise<string | null>).pipe(
            Effect.map((token) => (token === null ? undefined : { group: g.group, category: g.category, partition, token }))
          ),

      renew: (lease, ttlMillis) =>
        run("renew", (r) => evalScript(r, RENEW, [gk.lease(lease.category, lease.partition, lease.group)], [lease.token, ttlMillis])).pipe(
          Effect.flatMap((ok) => (ok === 1 ? Effect.void : Effect.fail(lost(lease))))
        ),

      release: (lease) =>
        Effect.asVoid(run("release", (r) => evalScript(r, RELEASE, [gk.lease(lease.category, lease.partition, lease.group)], [lease.token]))),

      claim: (lease, member) =>
        Effect.gen(function*() {
          const { category, group, partition: p } = lease
          const reply = yield* run("claim", (r) =>
            evalScript(r, CLAIM, [
              gk.lease(category, p, group),
              keys.log(category, p),
              gk.redelivery(category, p, group),
              gk.deadLetters(category, p, group),
              gk.starts(category, p, group)
            ], [
              lease.token,
              group,
              member,
              Date.now()
            ]) as Promise<Array<[string, string, string, Array<string> | null, number]> | null>)
          if (reply === null) return yield* lost(lease)
          return reply.map(([source, id, entryId, fields, deliveries]): Delivery => ({
            partition: p,
            source: source === "r" ? "redelivery" : "log",
            id,
            event: decodeEntry(category, p, fields === null ? null : [entryId, fields], entryId),
            deliveries: Number(deliveries)
          }))
        }),

      read: (leases, member, count, blockMillis) =>
        Effect.gen(function*() {
          if (leases.length === 0) return []
          const reader = yield* readerFor(member)
          const redis = reader.redis
          const first = leases[0]!
          const streams: Array<string> = []
          const index = new Map<string, { readonly p: number; readonly source: "log" | "redelivery"; readonly category: string }>()
          for (const l of leases) {
            const key = gk.redelivery(l.category, l.partition, l.group)
            streams.push(key)
            index.set(key, { p: l.partition, source: "redelivery", category: l.category })
          }
          for (const l of leases) {
            const key = keys.log(l.category, l.partition)
            streams.push(key)
            index.set(key, { p: l.partition, source: "log", category: l.category })
          }
          const perKey = Math.max(1, Math.floor(count / streams.length))
          const reply = yield* client.callBlocking("read", redis, Duration.millis(blockMillis), (r) =>
            r.xreadgroup("GROUP", first.group, member, "COUNT", perKey, "BLOCK", blockMillis, "STREAMS", ...streams, ...streams.map(() => ">")) as Promise<Array<[string, Array<RawEntry>]> | null>).pipe(
              // interrupted (a shutdown): unblock the read, which then returns at once; its
              // reply is still read off the connection, never left behind. Entries it may
              // have delivered stay pending for the partition's next owner.
              Effect.onInterrupt(() => Effect.ignore(run("unblock", (r) => r.client("UNBLOCK", reader.id))))
            )
          if (reply === null) return []
          const out: Array<Delivery> = []
          const redeliveries: Array<{ readonly p: number; readonly category: string; readonly id: string; readonly entryId: string }> = []
          for (const [key, entries] of reply) {
            const where = index.get(key)!
            for (const [id, fields] of entries) {
              if (where.source === "log") {
                out.push({ partition: where.p, source: "log", id, event: toRecorded(where.category, where.p, id, fieldsOf(fields)), deliveries: 1 })
              } else {
                redeliveries.push({ p: where.p, category: where.category, id, entryId: fieldMap(fields).r ?? "" })
              }
            }
          }
          if (redeliveries.length === 0) return out
          // replayed dead letters: the event itself lives in the log
          const originals = yield* run("read", (r) =>
            Promise.all(redeliveries.map((x) => (x.entryId === "" ? Promise.resolve([]) : r.xrange(keys.log(x.category, x.p), x.entryId, x.entryId) as Promise<Array<RawEntry>>))))
          const replayed = redeliveries.map((x, i): Delivery => ({
            partition: x.p,
            source: "redelivery",
            id: x.id,
            event: decodeEntry(x.category, x.p, originals[i]![0], x.entryId),
            deliveries: 1
          }))
          return [...replayed, ...out]
        }),

      begin: (lease, delivery) =>
        run("begin", (r) =>
          evalScript(r, BEGIN, [gk.lease(lease.category, lease.partition, lease.group), gk.starts(lease.category, lease.partition, lease.group)], [
            lease.token,
            `${delivery.source === "log" ? "l" : "r"}:${delivery.id}`
          ]) as Promise<number | null>).pipe(Effect.flatMap((n) => (n === null ? Effect.fail(lost(lease)) : Effect.succeed(Number(n))))),

      ack: (lease, deliveries) =>
        Effect.forEach(chunks(deliveries, ACK_CHUNK), (chunk) => {
          const logIds = chunk.filter((d) => d.source === "log").map((d) => d.id)
          const redeliveredIds = chunk.filter((d) => d.source === "redelivery").map((d) => d.id)
          return run("ack", (r) =>
            evalScript(r, ACK, [
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
            ])).pipe(Effect.flatMap((ok) => (ok === 1 ? Effect.void : Effect.fail(lost(lease)))))
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
        return run("deadLetter", (r) =>
          evalScript(r, DEAD_LETTER, [gk.lease(category, p, group), source, gk.deadLetters(category, p, group), gk.starts(category, p, group)], [
            lease.token,
            group,
            delivery.id,
            delivery.source === "log" ? "0" : "1",
            ...fields
          ])).pipe(Effect.flatMap((ok) => (ok === 1 ? Effect.void : Effect.fail(lost(lease)))))
      },

      deadLetters: (group) =>
        Effect.flatMap(info(group), (g) =>
          run("deadLetters", (r) =>
            Promise.all(Array.from({ length: g.partitions }, (_, p) => r.xrange(gk.deadLetters(g.category, p, group), "-", "+") as Promise<Array<RawEntry>>))).pipe(
              Effect.map((perPartition) =>
                perPartition.flatMap((entries, p) =>
                  entries.map(([id, list]): DeadLetter => {
                    const f = fieldMap(list)
                    return {
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
                    }
                  })
                )
              )
            )),

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
                  r.xlen(gk.deadLetters(g.category, p, group))
                ])))
            ])
            return { members, inFlight, perPartition }
          }).pipe(Effect.map(({ inFlight, members, perPartition }): GroupStatus => ({
            ...g,
            members: members.slice().sort(),
            partitionStatus: perPartition.map(([lease, logGroups, redeliveryGroups, dead], p) => {
              const owner = lease === null ? undefined : lease.slice(0, lease.lastIndexOf(":"))
              const a = groupFigures(logGroups, group)
              const b = groupFigures(redeliveryGroups, group)
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

const ignoreBusyGroup = (error: unknown) =>
  error instanceof Error && error.message.startsWith("BUSYGROUP") ? "OK" : Promise.reject(error)

const chunks = <A>(xs: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size))
  return out
}

/** `XINFO GROUPS` of a stream; none while the stream does not exist yet. */
const groupsOf = (r: Redis, key: string) =>
  (r.xinfo("GROUPS", key) as Promise<Array<Array<string | number | null>>>).catch((error: unknown) =>
    error instanceof Error && /no such key/i.test(error.message) ? [] : Promise.reject(error)
  )

/**
 * pending and lag of one group from an `XINFO GROUPS` reply. A group not created yet on
 * the stream, or whose lag Redis cannot tell (null), counts as lagging: never idle by mistake.
 */
const groupFigures = (reply: ReadonlyArray<ReadonlyArray<string | number | null>>, group: string) => {
  for (const g of reply) {
    const m = new Map<string, string | number | null>()
    for (let i = 0; i + 1 < g.length; i += 2) m.set(String(g[i]), g[i + 1] ?? null)
    if (m.get("name") === group) {
      return { pending: Number(m.get("pending") ?? 0), lag: m.get("lag") === null ? 1 : Number(m.get("lag") ?? 0) }
    }
  }
  return { pending: 0, lag: 1 }
}
