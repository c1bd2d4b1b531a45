/**
 * Snapshots on Redis: one string key per stream, under the stream's partition hash tag,
 * holding the snapshot as JSON. A save is one script that keeps a newer snapshot.
 *
 * @internal
 */
import { Effect, Option } from "effect"
import { type InvalidArgument, parseStream, type StoreError } from "../../EventStore.js"
import { partitionOf } from "../../internal/ids.js"
import { type Snapshot, SnapshotStore } from "../../Snapshots.js"
import type { Keys } from "./keys.js"
import type { RedisClient } from "../RedisClient.js"
import { evalScript, script } from "./scripts.js"

const SAVE = script(
  "save-snapshot",
  `#!lua
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, decoded = pcall(cjson.decode, cur)
  if ok and type(decoded) == 'table' and tonumber(decoded['version']) and tonumber(decoded['version']) >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`
)

export const snapshotKey = (keys: Keys, category: string, partitions: number, id: string) =>
  `${keys.tag(category, partitionOf(id, partitions))}:snap:${id}`

export const makeRedisSnapshots = (
  client: RedisClient.Service,
  keys: Keys,
  partitionsOf: (category: string) => Effect.Effect<number, StoreError | InvalidArgument>
): SnapshotStore.Service => {
  const keyOf = (stream: string) =>
    Effect.suspend(() => {
      const parsed = parseStream(stream)
      if (parsed instanceof Error) return Effect.fail(parsed)
      return Effect.map(partitionsOf(parsed.category), (p) => snapshotKey(keys, parsed.category, p, parsed.id))
    })
  return SnapshotStore.of({
    load: (stream) =>
      Effect.flatMap(keyOf(stream), (key) =>
        Effect.map(client.call("loadSnapshot", (r) => r.get(key)), (text) => {
          if (text === null) return Option.none<Snapshot>()
          try {
            const parsed = JSON.parse(text) as Snapshot
            return typeof parsed === "object" && parsed !== null && typeof parsed.version === "number" ? Option.some(parsed) : Option.none()
          } catch {
            return Option.none()
          }
        })),
    save: (stream, snapshot) =>
      Effect.flatMap(keyOf(stream), (key) =>
        Effect.map(
          client.call("saveSnapshot", (r) => evalScript(r, SAVE, [key], [snapshot.version, JSON.stringify(snapshot)])),
          (stored) => stored === 1
        )),
    remove: (stream) => Effect.flatMap(keyOf(stream), (key) => Effect.asVoid(client.call("removeSnapshot", (r) => r.del(key))))
  })
}
