/**
 * Every service of the toolkit in one Layer, in memory: the default backend, and what
 * applications test with. `RedisChronicle.layer` (in `effect-chronicle/redis`) provides
 * the same services on Redis with the same semantics.
 *
 * @since 0.1.0
 */
import * as PersonalData from "./PersonalData.js"
import { KeyStore } from "./PersonalData.js"
import { Context, Effect, Layer } from "effect"
import { ConsumerGroups } from "./ConsumerGroups.js"
import { defaultLimits, defaultPartitions, EventStore, type InvalidArgument, type Limits, type PartitionsConfig } from "./EventStore.js"
import { makeMemoryGroups } from "./internal/memoryGroups.js"
import { makeMemoryStore } from "./internal/memoryStore.js"
import { makeMemoryStore as makeMemoryProjections, ProjectionStore } from "./Projection.js"
import { makeMemory as makeMemorySnapshots, SnapshotStore } from "./Snapshots.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface MemoryOptions {
  /** Partitions per category: a number, or `{ default, byCategory }`. Default 8 (`EventStore.defaultPartitions`), as on Redis. */
  readonly partitions?: PartitionsConfig | undefined
  /** Append limits (docs/semantics.md §3); each defaults to `EventStore.defaultLimits`. */
  readonly limits?: Partial<Limits> | undefined
}

/**
 * The services every backend provides.
 *
 * @since 0.1.0
 * @category models
 */
export type Services = EventStore | ConsumerGroups | SnapshotStore | ProjectionStore | KeyStore

/**
 * Every service in memory, with the given partition counts and limits, and a key store
 * in memory for personal data. Each use of the Layer builds fresh, empty state.
 *
 * @example
 * ```ts
 * const TestChronicle = Chronicle.layerMemoryWith({ partitions: 4 })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemoryWith = (options: MemoryOptions = {}): Layer.Layer<Services, InvalidArgument> =>
  Layer.effectContext(
    Effect.map(
      makeMemoryStore({ partitions: options.partitions ?? defaultPartitions, limits: { ...defaultLimits, ...options.limits } }),
      ({ log, store }) =>
        Context.make(EventStore, store).pipe(
          Context.add(ConsumerGroups, makeMemoryGroups(log)),
          Context.add(SnapshotStore, makeMemorySnapshots()),
          Context.add(ProjectionStore, makeMemoryProjections()),
          Context.add(KeyStore, PersonalData.makeMemory())
        )
    )
  )

/**
 * Every service in memory, with the default of 8 partitions per category (as on Redis).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Chronicle } from "effect-chronicle"
 *
 * Effect.runPromise(program.pipe(Effect.provide(Chronicle.layerMemory)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<Services> = Layer.orDie(layerMemoryWith())
