/**
 * Snapshots: an aggregate's state at a version, so loading reads only the events after it
 * (docs/semantics.md §8). A snapshot records its version and the `stateVersion` of the code that
 * made it; a snapshot is never written over a newer one.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Option } from "effect"
import type { InvalidArgument, StoreError } from "./EventStore.js"
import { parseStream } from "./EventStore.js"

/**
 * A stored snapshot: the encoded state of a stream at `version`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  /** The stream version the state includes. */
  readonly version: number
  /** The version of the state's shape (and of `evolve`) that made it. */
  readonly stateVersion: number
  /** The state, encoded to JSON-ready data. */
  readonly state: unknown
}

/**
 * @since 0.1.0
 */
export declare namespace SnapshotStore {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /** The stream's snapshot, if any. */
    readonly load: (stream: string) => Effect.Effect<Option.Option<Snapshot>, StoreError | InvalidArgument>
    /** Stores a snapshot unless one at the same or a newer version exists; true when stored. */
    readonly save: (stream: string, snapshot: Snapshot) => Effect.Effect<boolean, StoreError | InvalidArgument>
    /** Removes the stream's snapshot. */
    readonly remove: (stream: string) => Effect.Effect<void, StoreError | InvalidArgument>
  }
}

/**
 * The snapshot store. `Chronicle.layerMemory`, `RedisChronicle.layer` and
 * `PostgresChronicle.layer` provide it.
 *
 * @since 0.1.0
 * @category tags
 */
export class SnapshotStore extends Context.Tag("effect-chronicle/SnapshotStore")<SnapshotStore, SnapshotStore.Service>() {}

const versionOf = (text: string | undefined): number | undefined => {
  if (text === undefined) return undefined
  try {
    const v = (JSON.parse(text) as { version?: unknown }).version
    return typeof v === "number" ? v : undefined
  } catch {
    return undefined
  }
}

/**
 * A snapshot store in memory. Snapshots are kept as JSON text, as Redis keeps them, so a
 * state that does not survive JSON fails the same way on both.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (): SnapshotStore.Service => {
  const snapshots = new Map<string, string>()
  const checked = (stream: string) => {
    const parsed = parseStream(stream)
    return parsed instanceof Error ? Effect.fail(parsed) : Effect.succeed(stream)
  }
  return SnapshotStore.of({
    load: (stream) =>
      Effect.map(checked(stream), (s) => {
        const text = snapshots.get(s)
        if (text === undefined) return Option.none()
        try {
          return Option.some(JSON.parse(text) as Snapshot)
        } catch {
          return Option.none()
        }
      }),
    save: (stream, snapshot) =>
      Effect.map(checked(stream), (s) => {
        const current = versionOf(snapshots.get(s))
        if (current !== undefined && current >= snapshot.version) return false
        snapshots.set(s, JSON.stringify(snapshot))
        return true
      }),
    remove: (stream) => Effect.map(checked(stream), (s) => void snapshots.delete(s))
  })
}

/**
 * A snapshot store in memory, as a Layer (included in `Chronicle.layerMemory`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<SnapshotStore> = Layer.sync(SnapshotStore, makeMemory)
