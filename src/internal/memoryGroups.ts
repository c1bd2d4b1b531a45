/**
 * Consumer groups in memory, over the in-memory log: the same rules as the Redis groups
 * (docs/semantics.md §5–6). Leases and memberships expire by the Effect `Clock`, so `TestClock`
 * drives them in tests.
 *
 * @internal
 */
import { Clock, Effect } from "effect"
import {
  type ClaimPage,
  ConsumerGroups,
  type DeadLetter,
  type Delivery,
  GroupConflict,
  type GroupInfo,
  GroupNotFound,
  type GroupStatus,
  isValidGroupName,
  type Lease,
  LeaseLost,
  type ReadResult,
  type Waited,
  type Watch
} from "../ConsumerGroups.js"
import { checkCategory, InvalidArgument } from "../EventStore.js"
import { compareEntryIds } from "./ids.js"
import type { MemoryLog } from "./memoryStore.js"

interface Pending {
  readonly source: "log" | "redelivery"
  readonly id: string
  consumer: string
  deliveries: number
}

interface RedeliveryEntry {
  readonly id: string
  /** The event's entry id in the log. */
  readonly entryId: string
}

interface GroupPartition {
  lease: { readonly token: string; readonly member: string; expiry: number } | undefined
  epoch: number
  lastDelivered: string
  readonly pending: Map<string, Pending>
  /** Handler starts of redelivered entries, beyond their first delivery. */
  readonly started: Map<string, number>
  readonly redelivery: Array<RedeliveryEntry>
  redeliveryLast: string
  redeliverySeq: number
  readonly deadLetters: Array<DeadLetter>
  deadLetterSeq: number
}

interface Group {
  readonly info: GroupInfo
  readonly members: Map<string, number>
  readonly inFlight: Map<string, ReadonlyMap<number, number>>
  readonly partitions: Array<GroupPartition>
}

const key = (source: "log" | "redelivery", id: string) => `${source}:${id}`

const bySourceThenId = (a: Pending, b: Pending) =>
  a.source === b.source ? compareEntryIds(a.id, b.id) : a.source === "redelivery" ? -1 : 1

export const makeMemoryGroups = (log: MemoryLog): ConsumerGroups["Type"] => {
  const groups = new Map<string, Group>()

  const groupOf = (name: string) =>
    Effect.suspend(() => {
      const g = groups.get(name)
      return g === undefined ? Effect.fail(new GroupNotFound({ group: name })) : Effect.succeed(g)
    })

  const held = (g: Group, lease: Lease, now: number) => {
    const l = g.partitions[lease.partition]?.lease
    return l !== undefined && l.token === lease.token && l.expiry > now
  }

  const withLease = <A>(lease: Lease, f: (g: Group, part: GroupPartition, now: number) => A) =>
    Effect.flatMap(Effect.zip(groupOf(lease.group), Clock.currentTimeMillis), ([g, now]) =>
      held(g, lease, now)
        ? Effect.succeed(f(g, g.partitions[lease.partition]!, now))
        : Effect.fail(new LeaseLost({ group: lease.group, partition: lease.partition, token: lease.token })))

  const read = (lease: Lease, member: string, count: number) =>
    withLease(lease, (g, part): ReadResult => {
      const p = lease.partition
      const out: Array<Delivery> = []
      for (const r of part.redelivery) {
        if (out.length >= count) break
        if (compareEntryIds(r.id, part.redeliveryLast) <= 0) continue
        part.redeliveryLast = r.id
        const event = log.entry(g.info.category, p, r.entryId)
        if (event === undefined) continue
        part.pending.set(key("redelivery", r.id), { source: "redelivery", id: r.id, consumer: member, deliveries: 1 })
        out.push({ partition: p, source: "redelivery", id: r.id, event, deliveries: 1 })
      }
      if (out.length < count) {
        for (const e of log.entriesAfter(g.info.category, p, part.lastDelivered, count - out.length)) {
          part.lastDelivered = e.id
          part.pending.set(key("log", e.id), { source: "log", id: e.id, consumer: member, deliveries: 1 })
          out.push({ partition: p, source: "log", id: e.id, event: e.event, deliveries: 1 })
        }
      }
      return {
        deliveries: out,
        tail: out.length < count
          ? { log: log.lastId(g.info.category, p), redelivery: part.redelivery.at(-1)?.id ?? "0-0" }
          : undefined
      }
    })


  const eventOf = (g: Group, p: number, source: "log" | "redelivery", id: string): Delivery["event"] | undefined => {
    if (source === "log") return log.entry(g.info.category, p, id)
    const r = g.partitions[p]!.redelivery.find((x) => x.id === id)
    return r === undefined ? undefined : log.entry(g.info.category, p, r.entryId)
  }

  const service: ConsumerGroups["Type"] = {
    ensureGroup: (group, category, startFrom) =>
      Effect.suspend((): Effect.Effect<GroupInfo, InvalidArgument | GroupConflict> => {
        if (!isValidGroupName(group)) {
          return Effect.fail(new InvalidArgument({ argument: "group", reason: `${JSON.stringify(group)} must be 1 to 128 of [A-Za-z0-9_.-]` }))
        }
        const invalid = checkCategory(category)
        if (invalid) return Effect.fail(invalid)
        const existing = groups.get(group)
        if (existing !== undefined) {
          return existing.info.category === category
            ? Effect.succeed(existing.info)
            : Effect.fail(new GroupConflict({ group, category, existing: existing.info.category }))
        }
        const partitions = log.partitionsOf(category)
        const info: GroupInfo = { group, category, partitions }
        groups.set(group, {
          info,
          members: new Map(),
          inFlight: new Map(),
          partitions: Array.from({ length: partitions }, (_, p) => ({
            lease: undefined,
            epoch: 0,
            lastDelivered: startFrom === "end" ? log.lastId(category, p) : "0-0",
            pending: new Map(),
            started: new Map(),
            redelivery: [],
            redeliveryLast: "0-0",
            redeliverySeq: 0,
            deadLetters: [],
            deadLetterSeq: 0
          }))
        })
        return Effect.succeed(info)
      }),

    info: (group) => Effect.map(groupOf(group), (g) => g.info),

    heartbeat: (group, member, ttlMillis, inFlight) =>
      Effect.flatMap(Effect.zip(groupOf(group), Clock.currentTimeMillis), ([g, now]) =>
        Effect.sync(() => {
          g.members.set(member, now + ttlMillis)
          g.inFlight.set(member, new Map(inFlight))
          for (const [m, expiry] of g.members) {
            if (expiry <= now) {
              g.members.delete(m)
              g.inFlight.delete(m)
            }
          }
          return {
            members: Array.from(g.members.keys()).sort(),
            owners: g.partitions.map((part) => (part.lease !== undefined && part.lease.expiry > now ? part.lease.member : undefined))
          }
        })),

    leave: (group, member) =>
      Effect.map(groupOf(group), (g) => {
        g.members.delete(member)
        g.inFlight.delete(member)
      }),

    acquire: (info, partition, member, ttlMillis) =>
      Effect.flatMap(Effect.zip(groupOf(info.group), Clock.currentTimeMillis), ([g, now]) =>
        Effect.sync((): Lease | undefined => {
          const part = g.partitions[partition]
          if (part === undefined) return undefined
          const l = part.lease
          if (l !== undefined && l.expiry > now) {
            if (l.member !== member) return undefined
            l.expiry = now + ttlMillis
            return { group: info.group, category: info.category, partition, token: l.token }
          }
          part.epoch++
          const token = `${member}:${part.epoch}`
          part.lease = { token, member, expiry: now + ttlMillis }
          return { group: info.group, category: info.category, partition, token }
        })),

    renew: (lease, ttlMillis) =>
      withLease(lease, (_, part, now) => {
        part.lease!.expiry = now + ttlMillis
      }),

    release: (lease) =>
      Effect.map(groupOf(lease.group), (g) => {
        const part = g.partitions[lease.partition]
        if (part?.lease?.token === lease.token) part.lease = undefined
      }),

    claim: (lease, member, cursor, count) =>
      withLease(lease, (g, part): ClaimPage => {
        const source = cursor.source
        const claimed = Array.from(part.pending.values())
          .filter((x) => x.source === source && compareEntryIds(x.id, cursor.id) >= 0)
          .sort(bySourceThenId)
        const page = claimed.slice(0, count)
        const deliveries: Array<Delivery> = []
        for (const pending of page) {
          const event = eventOf(g, lease.partition, pending.source, pending.id)
          if (event === undefined) continue
          pending.consumer = member
          pending.deliveries++
          deliveries.push({ partition: lease.partition, source: pending.source, id: pending.id, event, deliveries: pending.deliveries })
        }
        const rest = claimed[count]
        return {
          deliveries,
          next: rest !== undefined
            ? { source, id: rest.id }
            : source === "redelivery"
            ? { source: "log", id: "0-0" }
            : undefined
        }
      }),

    read,

    wait: (member, watches, { blockMillis, count, until }) => {
      const ready = (): Array<number> => {
        const out: Array<number> = []
        for (const w of watches) {
          const g = groups.get(w.lease.group)
          if (g === undefined) continue
          const part = g.partitions[w.lease.partition]
          if (part === undefined) continue
          if (
            log.countAfter(g.info.category, w.lease.partition, w.tail.log) > 0 ||
            part.redelivery.some((r) => compareEntryIds(r.id, w.tail.redelivery) > 0)
          ) out.push(w.lease.partition)
        }
        return out
      }
      // every watched partition is read (its lease checked), as one server does in one step
      const readAll = Effect.forEach(watches, (w) =>
        read(w.lease, member, count).pipe(
          Effect.map((result): Waited | undefined =>
            result.deliveries.length === 0 && result.tail !== undefined ? undefined : { lease: w.lease, result }
          ),
          Effect.catchTag("LeaseLost", (lost) => Effect.succeed<Waited | undefined>({ lease: w.lease, result: lost }))
        )).pipe(Effect.map((xs) => xs.filter((x): x is Waited => x !== undefined)))
      if (watches.length === 0) return Effect.succeed([])
      if (ready().length > 0) return readAll
      const categories = Array.from(new Set(watches.map((w: Watch) => w.lease.category)))
      // subscribe first, then look again, so that an append in between is not missed
      const woken = Effect.async<void>((resume) => {
        const stops = categories.map((c) =>
          log.subscribe(c, () => {
            if (ready().length === 0) return
            for (const stop of stops) stop()
            resume(Effect.void)
          })
        )
        if (ready().length > 0) {
          for (const stop of stops) stop()
          resume(Effect.void)
        }
        return Effect.sync(() => {
          for (const stop of stops) stop()
        })
      })
      return Effect.raceAll([woken, Effect.sleep(blockMillis), until]).pipe(Effect.zipRight(readAll))
    },

    begin: (lease, delivery) =>
      withLease(lease, (_, part) => {
        const k = key(delivery.source, delivery.id)
        const n = (part.started.get(k) ?? 0) + 1
        part.started.set(k, n)
        return n + 1
      }),

    ack: (lease, deliveries) =>
      withLease(lease, (_, part) => {
        for (const d of deliveries) {
          part.pending.delete(key(d.source, d.id))
          part.started.delete(key(d.source, d.id))
        }
      }),

    deadLetter: (lease, delivery, reason) =>
      withLease(lease, (g, part, now) => {
        const event = delivery.event
        const recorded = event instanceof Error ? undefined : event
        const entryId = delivery.source === "log"
          ? delivery.id
          : part.redelivery.find((r) => r.id === delivery.id)?.entryId ?? delivery.id
        part.deadLetterSeq++
        part.deadLetters.push({
          id: `${lease.partition}:${now}-${part.deadLetterSeq}`,
          group: g.info.group,
          partition: lease.partition,
          entryId,
          eventId: recorded?.eventId ?? "",
          stream: recorded?.stream ?? (event instanceof Error ? event.stream ?? "" : ""),
          version: recorded?.version ?? (event instanceof Error ? event.version ?? 0 : 0),
          type: recorded?.type ?? (event instanceof Error ? event.type ?? "" : ""),
          errorTag: reason.errorTag,
          message: reason.message,
          attempts: reason.attempts,
          deliveries: delivery.deliveries,
          at: now
        })
        part.pending.delete(key(delivery.source, delivery.id))
        part.started.delete(key(delivery.source, delivery.id))
      }),

    deadLetters: (group) => Effect.map(groupOf(group), (g) => g.partitions.flatMap((p) => p.deadLetters)),

    replay: (group, ids) =>
      Effect.map(groupOf(group), (g) => {
        let moved = 0
        for (const part of g.partitions) {
          const keep: Array<DeadLetter> = []
          for (const dl of part.deadLetters) {
            if (ids !== undefined && !ids.includes(dl.id)) {
              keep.push(dl)
              continue
            }
            part.redeliverySeq++
            part.redelivery.push({ id: `0-${part.redeliverySeq}`, entryId: dl.entryId })
            moved++
          }
          part.deadLetters.splice(0, part.deadLetters.length, ...keep)
        }
        if (moved > 0) log.notify(g.info.category)
        return moved
      }),

    purge: (group, ids) =>
      Effect.map(groupOf(group), (g) => {
        let purged = 0
        for (const part of g.partitions) {
          const keep = part.deadLetters.filter((dl) => ids !== undefined && !ids.includes(dl.id))
          purged += part.deadLetters.length - keep.length
          part.deadLetters.splice(0, part.deadLetters.length, ...keep)
        }
        return purged
      }),

    status: (group) =>
      Effect.flatMap(Effect.zip(groupOf(group), Clock.currentTimeMillis), ([g, now]) =>
        Effect.sync((): GroupStatus => ({
          ...g.info,
          members: Array.from(g.members.entries()).filter(([, e]) => e > now).map(([m]) => m).sort(),
          partitionStatus: g.partitions.map((part, p) => {
            const owner = part.lease !== undefined && part.lease.expiry > now ? part.lease.member : undefined
            return {
              partition: p,
              owner,
              pending: part.pending.size,
              lag: log.countAfter(g.info.category, p, part.lastDelivered) +
                part.redelivery.filter((r) => compareEntryIds(r.id, part.redeliveryLast) > 0).length,
              inFlight: owner === undefined ? 0 : g.inFlight.get(owner)?.get(p) ?? 0,
              deadLetters: part.deadLetters.length
            }
          })
        }))),

    groups: Effect.sync(() => Array.from(groups.values()).map((g) => g.info))
  }
  return ConsumerGroups.of(service)
}
