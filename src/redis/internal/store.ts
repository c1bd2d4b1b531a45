/**
 * The event store on Redis, made of its mechanisms: the partition registry
 * (registry.ts), the append coalescer (coalescer.ts) with its durability step
 * (durability.ts), reads (reads.ts), reply decoding (replies.ts) and the server checks
 * (server.ts).
 *
 * @internal
 */
import { type Duration, Effect } from "effect"
import type { Connection } from "../RedisClient.js"
import { EventStore, InvalidArgument, type Limits, type PartitionsConfig } from "../../EventStore.js"
import { prepareAppend } from "../../internal/append.js"
import { storeService } from "../../internal/storeService.js"
import { partitionOf } from "../../internal/ids.js"
import { validateLimits, validatePartitions } from "../../internal/options.js"
import { RedisClient } from "../RedisClient.js"
import { makeCoalescer } from "./coalescer.js"
import { type Durability, makeConfirmer } from "./durability.js"
import { isValidPrefix, type Keys, makeKeys } from "./keys.js"
import { makeNotices } from "./notices.js"
import { makeReads } from "./reads.js"
import { makeRegistry } from "./registry.js"
import { checkEvictionPolicy } from "./server.js"

export type { Durability } from "./durability.js"

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

    const conn: Connection = yield* client.dedicated("append")
    const registry = makeRegistry(client, keys, options.partitions)
    const coalescer = yield* makeCoalescer(client, conn, keys, options, makeConfirmer(options.durability))
    const reads = makeReads(client, keys, registry, yield* makeNotices(client), options.liveBlock)

    // every check runs inside the Effect (when it runs, not when it is made)
    const append: EventStore["Type"]["append"] = (stream, events, appendOptions) =>
      Effect.suspend(() => {
        const prepared = prepareAppend(stream, events, appendOptions?.expectedVersion, limits)
        if (prepared instanceof Error) return Effect.fail(prepared)
        const known = registry.known(prepared.category)
        return known !== undefined
          ? coalescer.submit(prepared, partitionOf(prepared.entityId, known))
          : Effect.flatMap(registry.resolve(prepared.category, true), (partitions) => coalescer.submit(prepared, partitionOf(prepared.entityId, partitions)))
      })

    return storeService(append, reads, registry.resolve, limits)
  })
