/**
 * The event store on PostgreSQL, made of its mechanisms: the schema (schema.ts,
 * migrate.ts), the partition registry (registry.ts), coalesced appends through one
 * function call (appender.ts), reads (reads.ts), following partition heads for live
 * reads (heads.ts) and error classification (errors.ts).
 *
 * @internal
 */
import { PgClient } from "@effect/sql-pg/PgClient"
import { Duration, Effect } from "effect"
import { EventStore, InvalidArgument, InvalidEvent, type Limits, type PartitionsConfig } from "../../EventStore.js"
import { prepareAppend } from "../../internal/append.js"
import { storeService } from "../../internal/storeService.js"
import { partitionOf } from "../../internal/ids.js"
import { partitionsFor, validateLimits, validatePartitions } from "../../internal/options.js"
import { makeAppender } from "./appender.js"
import { makeHeads } from "./heads.js"
import { checkIsolation, migrate } from "./migrate.js"
import { outside } from "./outside.js"
import { hasNul, makeReads } from "./reads.js"
import { makeRegistry } from "./registry.js"

export interface PostgresStoreOptions {
  readonly schema: string
  readonly partitions: PartitionsConfig
  readonly limits: Limits
  /** Events per coalesced call of the append function. */
  readonly maxEventsPerCall: number
  /** The longest an append waits for its partition's lock before it fails, nothing written. */
  readonly lockTimeout: Duration.Duration
  /** The longest an append call waits for its reply once sent: then its outcome is unknown. */
  readonly appendTimeout: Duration.Duration
  /** Polling of partition heads for live reads: from `min` after a change up to `max`. */
  readonly poll: { readonly min: Duration.Duration; readonly max: Duration.Duration }
  /** The longest a live reader waits without a wake-up before it reads again. */
  readonly recheck: Duration.Duration
  /** The longest a read's statement waits for its reply before the read fails, retryable. */
  readonly readTimeout: Duration.Duration
}

export const makePostgresStore = (options: PostgresStoreOptions) =>
  Effect.gen(function*() {
    const invalid = validatePartitions(options.partitions)
    if (invalid) return yield* invalid
    const invalidLimits = validateLimits(options.limits)
    if (invalidLimits) return yield* invalidLimits
    const sql = yield* PgClient
    const limits = options.limits
    const schema = options.schema

    // a layer built inside a caller's transaction still makes its schema on its own
    yield* outside(checkIsolation(sql))
    yield* outside(migrate(sql, schema))

    const registry = makeRegistry(sql, schema, options.partitions, options.readTimeout)
    const heads = yield* makeHeads(sql, schema, { ...options.poll, timeout: options.readTimeout })
    const appender = yield* makeAppender(sql, { schema, maxEvents: options.maxEventsPerCall, lockTimeoutMs: Math.max(1, Math.round(Duration.toMillis(options.lockTimeout))), replyTimeout: options.appendTimeout }, ({ partition, partitions, prepared, first }) => {
      registry.learn(prepared.category, partitions)
      heads.appended(prepared.category, partition, first, first + prepared.events.length - 1, prepared.entityId)
    })
    const reads = makeReads(sql, schema, registry, heads, options.recheck, options.readTimeout)

    // every check runs inside the Effect (when it runs, not when it is made), before any I/O
    const append: EventStore["Type"]["append"] = (stream, events, appendOptions) =>
      Effect.suspend(() => {
        const prepared = prepareAppend(stream, events, appendOptions?.expectedVersion, limits)
        if (prepared instanceof Error) return Effect.fail(prepared)
        // PostgreSQL's text cannot hold a NUL: refused here rather than by the server
        if (hasNul(prepared.entityId)) {
          return Effect.fail(new InvalidArgument({ argument: "stream", reason: "the PostgreSQL store cannot store a NUL character (U+0000) in an entity id" }))
        }
        const nul = prepared.events.find((e) => hasNul(e.type))
        if (nul !== undefined) {
          return Effect.fail(new InvalidEvent({ stream, type: nul.type.replace(/\u0000/g, "\\u0000"), path: "type", reason: "the PostgreSQL store cannot store a NUL character (U+0000) in an event type" }))
        }
        const partitions = registry.known(prepared.category) ?? partitionsFor(options.partitions, prepared.category)
        return appender.submit(prepared, partitions, partitionOf(prepared.entityId, partitions))
      })

    return { store: storeService(append, reads, registry.resolve, limits), sql, registry, heads }
  })
