/**
 * Consumer groups: what a backend provides so that subscribers can share a category's
 * log. Every backend implements this service with the same semantics (docs/semantics.md §5–6);
 * `Subscriber` and `DeadLetters` are written once, on top of it.
 *
 * A group over a category is one consumer group per partition. Members join with
 * heartbeats; partitions are assigned over live members; each partition has one owner
 * at a time, holding a fenced lease (`member:epoch`) that every read, claim, ack and
 * dead-letter checks atomically with what it does. A new owner first claims the
 * partition's whole pending list, page by page, then reads its redelivery stream
 * (replayed dead letters) before new entries. Waiting for new entries has no effect on
 * the group: only a fenced read moves entries into a member's pending list.
 *
 * @since 0.1.0
 */
import { Context, type Effect, Schema } from "effect"
import type { EventDecodeError, InvalidArgument, RecordedEvent, StoreError } from "./EventStore.js"

/**
 * The lease on a partition was lost (it expired, or another member holds it now): the
 * operation was refused and nothing was changed.
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseLost extends Schema.TaggedError<LeaseLost>()("LeaseLost", {
  group: Schema.String,
  partition: Schema.Int,
  token: Schema.String
}) {
  override get message() {
    return `group ${this.group} partition ${this.partition}: the lease ${this.token} is no longer held`
  }
}

/**
 * A group name is already used for another category (group names are unique per prefix).
 *
 * @since 0.1.0
 * @category errors
 */
export class GroupConflict extends Schema.TaggedError<GroupConflict>()("GroupConflict", {
  group: Schema.String,
  category: Schema.String,
  existing: Schema.String
}) {
  override get message() {
    return `group ${this.group} already reads category ${this.existing}, not ${this.category}`
  }
}

/**
 * A group that was never created (no subscriber ever ran it).
 *
 * @since 0.1.0
 * @category errors
 */
export class GroupNotFound extends Schema.TaggedError<GroupNotFound>()("GroupNotFound", {
  group: Schema.String
}) {
  override get message() {
    return `group ${this.group} does not exist (it was never created, or it was deleted)`
  }
}

/**
 * Every way a group operation can fail.
 *
 * @since 0.1.0
 * @category errors
 */
export type GroupError = StoreError | InvalidArgument | GroupNotFound

/**
 * Where a group starts when it is created: the category's first event, or what comes
 * after its last one.
 *
 * @since 0.1.0
 * @category models
 */
export type StartFrom = "start" | "end"

/**
 * A group's registration.
 *
 * @since 0.1.0
 * @category models
 */
export interface GroupInfo {
  readonly group: string
  readonly category: string
  readonly partitions: number
}

/**
 * A held lease on one partition of a group.
 *
 * @since 0.1.0
 * @category models
 */
export interface Lease {
  readonly group: string
  readonly category: string
  readonly partition: number
  /** `member:epoch`: the epoch grows each time the partition changes hands. */
  readonly token: string
}

/**
 * The epoch of a lease: the number after the last `:` of its token. It grows each time
 * the partition changes hands, so it can fence side effects outside the log.
 *
 * @since 0.2.0
 * @category models
 */
export const epochOf = (lease: Lease): number => Number(lease.token.slice(lease.token.lastIndexOf(":") + 1))

/**
 * One entry handed to a member: from the partition's log, or from its redelivery stream
 * (a replayed dead letter).
 *
 * @since 0.1.0
 * @category models
 */
export interface Delivery {
  readonly partition: number
  readonly source: "log" | "redelivery"
  /** The entry's id in its source (the log or the redelivery stream). */
  readonly id: string
  /** The event, or why its stored entry cannot be read. */
  readonly event: RecordedEvent | EventDecodeError
  /** How many times this entry has been delivered, this time included. */
  readonly deliveries: number
}

/**
 * Where a drained partition's sources ended when it was last read: a member waits for
 * entries after these ids.
 *
 * @since 0.2.0
 * @category models
 */
export interface Tail {
  /** The last entry id of the partition's log ("0-0" when empty). */
  readonly log: string
  /** The last entry id of the partition's redelivery stream ("0-0" when empty). */
  readonly redelivery: string
}

/**
 * What a fenced read returned.
 *
 * @since 0.2.0
 * @category models
 */
export interface ReadResult {
  /** Redelivered entries first, then new entries of the log, oldest first. */
  readonly deliveries: ReadonlyArray<Delivery>
  /**
   * Set when the read took everything that was there (fewer entries than asked): where
   * each source ended, to wait for what comes after.
   */
  readonly tail: Tail | undefined
  /**
   * How many entries of the partition are pending for the member once the read is done
   * (both sources), where the backend can say so in the same atomic step; undefined
   * otherwise. The member should have each of them in hand: one it does not (an
   * acknowledgement a server lost in a failover without durability) is taken again.
   */
  readonly pending?: number | undefined
}

/**
 * A drained partition a member waits on.
 *
 * @since 0.2.0
 * @category models
 */
export interface Watch {
  readonly lease: Lease
  readonly tail: Tail
}

/**
 * How long a {@link ConsumerGroups.Service.wait} may wait and how much it may take.
 *
 * @since 0.2.0
 * @category models
 */
export interface WaitOptions {
  /** The longest wait, in milliseconds. */
  readonly blockMillis: number
  /** Entries read at most per partition once something arrived. */
  readonly count: number
  /** Ends the wait early when it completes (what the wait's reads took is still returned). */
  readonly until: Effect.Effect<void>
}

/**
 * What a wait found on one watched partition: its fenced read, or that its lease was gone.
 *
 * @since 0.2.0
 * @category models
 */
export interface Waited {
  readonly lease: Lease
  readonly result: ReadResult | LeaseLost
}

/**
 * Where the next page of a claim starts: the redelivery stream's pending entries first,
 * then the log's.
 *
 * @since 0.2.0
 * @category models
 */
export interface ClaimCursor {
  readonly source: "log" | "redelivery"
  /** The pending-list cursor within that source ("0-0" to start). */
  readonly id: string
}

/**
 * The cursor that starts a claim of a whole pending list.
 *
 * @since 0.2.0
 * @category models
 */
export const claimStart: ClaimCursor = { source: "redelivery", id: "0-0" }

/**
 * One page of a claim.
 *
 * @since 0.2.0
 * @category models
 */
export interface ClaimPage {
  /** The claimed entries, oldest first, their delivery counted. */
  readonly deliveries: ReadonlyArray<Delivery>
  /** Where the next page starts; `undefined` when the pending list has been taken whole. */
  readonly next: ClaimCursor | undefined
}

/**
 * A group's live members and the current owner of each partition.
 *
 * @since 0.2.0
 * @category models
 */
export interface Membership {
  /** Live member ids, sorted. */
  readonly members: ReadonlyArray<string>
  /** Per partition, the member holding its lease, if any. */
  readonly owners: ReadonlyArray<string | undefined>
}

/**
 * A parked event: never lost, never silently dropped.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetter {
  /** `partition:entryId`, unique within the group. */
  readonly id: string
  readonly group: string
  readonly partition: number
  /** The event's position in the category log. */
  readonly entryId: string
  readonly eventId: string
  readonly stream: string
  readonly version: number
  readonly type: string
  /** The error's tag (`HandlerFailed`, `HandlerDefect`, `DecodeError`, `UnknownEventType`, `MaxDeliveries`, `LostBeforeProcessing`, or a handler error's own tag). */
  readonly errorTag: string
  /** The error's message (never the event's data). */
  readonly message: string
  /** Handler invocations. */
  readonly attempts: number
  /** Deliveries of the entry. */
  readonly deliveries: number
  /** When it was parked (Unix milliseconds). */
  readonly at: number
}

/**
 * What goes into a dead letter besides the delivery itself.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterReason {
  readonly errorTag: string
  readonly message: string
  readonly attempts: number
}

/**
 * One partition of a group, for tools.
 *
 * @since 0.1.0
 * @category models
 */
export interface PartitionStatus {
  readonly partition: number
  /** The member holding the lease, if any. */
  readonly owner: string | undefined
  /** Entries delivered and not acknowledged (log and redelivery stream). */
  readonly pending: number
  /** Entries not yet delivered (log and redelivery stream). */
  readonly lag: number
  /** Events being handled by the owner, as it last reported. */
  readonly inFlight: number
  readonly deadLetters: number
}

/**
 * A group's state, for tools and tests.
 *
 * @since 0.1.0
 * @category models
 */
export interface GroupStatus extends GroupInfo {
  readonly members: ReadonlyArray<string>
  readonly partitionStatus: ReadonlyArray<PartitionStatus>
}

/**
 * @since 0.1.0
 */
export declare namespace ConsumerGroups {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /** Creates the group (one consumer group per partition) if it does not exist; registers group → category. */
    readonly ensureGroup: (group: string, category: string, startFrom: StartFrom) => Effect.Effect<GroupInfo, GroupError | GroupConflict>
    /** A registered group. */
    readonly info: (group: string) => Effect.Effect<GroupInfo, GroupError>
    /**
     * Renews a member (expiring after `ttlMillis`), publishes its in-flight counts, and
     * returns the live members with the current owner of each partition.
     */
    readonly heartbeat: (
      group: string,
      member: string,
      ttlMillis: number,
      inFlight: ReadonlyMap<number, number>
    ) => Effect.Effect<Membership, GroupError>
    /** Removes a member (on shutdown). */
    readonly leave: (group: string, member: string) => Effect.Effect<void, GroupError>
    /** Takes the partition's lease for `member` if it is free (or renews it if already held); `undefined` when another member holds it. */
    readonly acquire: (info: GroupInfo, partition: number, member: string, ttlMillis: number) => Effect.Effect<Lease | undefined, GroupError>
    /** Extends a held lease; `LeaseLost` when it lapsed or changed hands. */
    readonly renew: (lease: Lease, ttlMillis: number) => Effect.Effect<void, GroupError | LeaseLost>
    /** Gives a lease up (when it is still held). */
    readonly release: (lease: Lease) => Effect.Effect<void, GroupError>
    /**
     * Moves one page (at most `count` entries) of the partition's pending list to
     * `member`, oldest first, counting the delivery; checked against the lease first.
     * Pages from {@link claimStart} until `next` is `undefined` take the whole list.
     */
    readonly claim: (lease: Lease, member: string, cursor: ClaimCursor, count: number) => Effect.Effect<ClaimPage, GroupError | LeaseLost>
    /**
     * Reads at most `count` new entries of a leased partition for `member`: its
     * redelivery stream before its log. Fenced: the lease is checked atomically with the
     * read, so an entry enters a member's pending list only while it holds the lease.
     * Never blocks.
     */
    readonly read: (lease: Lease, member: string, count: number) => Effect.Effect<ReadResult, GroupError | LeaseLost>
    /**
     * Waits, at most `options.blockMillis` or until `options.until` completes, for entries
     * after the tails of the watched partitions, then takes them as {@link Service.read}
     * does (fenced, at most `options.count` per partition). Returns one {@link Waited}
     * per watched partition that had something new or lost its lease; none when the
     * time ran out with nothing new. The wait itself has no effect on the group: only
     * the fenced reads do. A wait cut short by `until` still returns what its reads
     * took, so nothing is left in the member's pending list unseen.
     */
    readonly wait: (member: string, watches: ReadonlyArray<Watch>, options: WaitOptions) => Effect.Effect<ReadonlyArray<Waited>, GroupError>
    /**
     * Records that a handler is about to run for a redelivered entry and returns how many
     * times a handler has started for it across deliveries, this one included (the first
     * delivery counts as started). Crash loops are caught by this count, so entries that
     * were delivered but waited behind a crashing one are not mistaken for culprits.
     */
    readonly begin: (lease: Lease, delivery: Delivery) => Effect.Effect<number, GroupError | LeaseLost>
    /** Acknowledges handled entries; `LeaseLost` (and nothing acknowledged) when the lease is gone. Safe to repeat. */
    readonly ack: (lease: Lease, deliveries: ReadonlyArray<Delivery>) => Effect.Effect<void, GroupError | LeaseLost>
    /** Parks an entry as a dead letter and acknowledges it, atomically; `LeaseLost` when the lease is gone. Safe to repeat. */
    readonly deadLetter: (lease: Lease, delivery: Delivery, reason: DeadLetterReason) => Effect.Effect<void, GroupError | LeaseLost>
    /** Every dead letter of the group, oldest first per partition. */
    readonly deadLetters: (group: string) => Effect.Effect<ReadonlyArray<DeadLetter>, GroupError>
    /** Moves dead letters (all, or those ids) to their partition's redelivery stream; returns how many moved. */
    readonly replay: (group: string, ids?: ReadonlyArray<string>) => Effect.Effect<number, GroupError>
    /** Deletes dead letters (all, or those ids); returns how many were deleted. */
    readonly purge: (group: string, ids?: ReadonlyArray<string>) => Effect.Effect<number, GroupError>
    /** Owner, pending, lag, in-flight and dead letters per partition. */
    readonly status: (group: string) => Effect.Effect<GroupStatus, GroupError>
    /** The groups registered for this backend. */
    readonly groups: Effect.Effect<ReadonlyArray<GroupInfo>, GroupError>
  }
}

/**
 * The consumer-group backend. `Chronicle.layerMemory` and `RedisChronicle.layer`
 * provide it.
 *
 * @since 0.1.0
 * @category tags
 */
export class ConsumerGroups extends Context.Tag("effect-chronicle/ConsumerGroups")<ConsumerGroups, ConsumerGroups.Service>() {}

const GROUP = /^[A-Za-z0-9_.-]{1,128}$/

/**
 * Checks a group name: 1–128 of `[A-Za-z0-9_.-]`.
 *
 * @since 0.1.0
 * @category validation
 */
export const isValidGroupName = (group: unknown): group is string => typeof group === "string" && GROUP.test(group)
