/**
 * The event store on Redis, made of its mechanisms: the partition registry
 * (registry.ts), the append coalescer (coalescer.ts) with its durability step
 * (durability.ts), reads (reads.ts), reply decoding (replies.ts) and the server checks
 * (server.ts).
 *
 * @internal
 */
import { type Duration, Effect, Either } from "effect"
import type { Connection } from "../RedisClient.js"
import { type AppendError, type AppendResult, EventStore, InvalidArgument, type Limits, type PartitionsConfig } from "../../EventStore.js"
import { type PreparedAppend, prepareAppend } from "../../internal/append.js"
import { notAppends, requestOf, storeService } from "../../internal/storeService.js"
import { partitionOf } from "../../internal/ids.js"
import { validateLimits, validatePartitions } from "../../internal/options.js"
import { RedisClient } from "../RedisClient.js"
import { makeCoalescer, type Submission } from "./coalescer.js"
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

    // each batch checked, then all of them handed to the coalescer in one step; a category
    // seen for the first time is resolved once for all its batches
    const appendMany: EventStore["Type"]["appendMany"] = (appends) =>
      Effect.suspend(() => {
        const invalid = notAppends(appends)
        if (invalid) return Effect.fail(invalid)
        const out: Array<Either.Either<AppendResult, AppendError>> = new Array(appends.length)
        const ready: Array<Submission> = []
        const readyAt: Array<number> = []
        let unknown: Map<string, Array<[number, PreparedAppend]>> | undefined
        for (let i = 0; i < appends.length; i++) {
          const request = requestOf(appends[i])
          const prepared = request instanceof InvalidArgument ? request : prepareAppend(request.stream, request.events, request.expectedVersion, limits)
          if (prepared instanceof Error) {
            out[i] = Either.left(prepared)
            continue
          }
          const known = registry.known(prepared.category)
          if (known !== undefined) {
            ready.push({ prepared, partition: partitionOf(prepared.entityId, known) })
            readyAt.push(i)
          } else {
            unknown ??= new Map()
            const list = unknown.get(prepared.category)
            if (list === undefined) unknown.set(prepared.category, [[i, prepared]])
            else list.push([i, prepared])
          }
        }
        const send = (batches: ReadonlyArray<Submission>, at: ReadonlyArray<number>) =>
          Effect.map(coalescer.submitMany(batches), (results) => {
            for (let j = 0; j < results.length; j++) out[at[j]!] = results[j]!
          })
        if (unknown === undefined) return Effect.as(send(ready, readyAt), out)
        const later = Array.from(unknown, ([category, items]) =>
          Effect.flatMap(Effect.either(registry.resolve(category, true)), (partitions) => {
            if (Either.isLeft(partitions)) {
              for (const [i] of items) out[i] = Either.left(partitions.left)
              return Effect.void
            }
            return send(items.map(([, prepared]) => ({ prepared, partition: partitionOf(prepared.entityId, partitions.right) })), items.map(([i]) => i))
          }))
        return Effect.as(Effect.all([send(ready, readyAt), ...later], { concurrency: "unbounded", discard: true }), out)
      })

    return storeService(append, reads, registry.resolve, limits, appendMany)
  })
