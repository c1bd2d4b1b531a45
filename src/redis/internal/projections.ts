/**
 * Projection checkpoints and leases on Redis: per projection, a hash (generation, cursor,
 * resetDone), a lease and an epoch counter, all under the projection's own hash tag. A
 * checkpoint is saved by a script that checks the lease and the generation first.
 *
 * @internal
 */
import { Effect } from "effect"
import { InvalidArgument } from "../../EventStore.js"
import { type Checkpoint, CheckpointRejected, ProjectionStore } from "../../Projection.js"
import { ACQUIRE, RELEASE, RENEW } from "./groupScripts.js"
import type { Keys } from "./keys.js"
import type { RedisClient } from "../RedisClient.js"
import { evalScript, script } from "./scripts.js"


/** KEYS: lease, state. ARGV: token, generation, cursor (JSON), resetDone, category. 1, or "lease", or "generation". */
const SAVE = script(
  "save-checkpoint",
  `#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lease' end
local g = tonumber(redis.call('HGET', KEYS[2], 'generation') or '0')
if g ~= tonumber(ARGV[2]) then return 'generation' end
redis.call('HSET', KEYS[2], 'generation', ARGV[2], 'cursor', ARGV[3], 'resetDone', ARGV[4], 'category', ARGV[5])
return 1
`
)

/** KEYS: state. A new generation without a cursor; returns it. */
const REBUILD = script(
  "rebuild",
  `#!lua
local g = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HDEL', KEYS[1], 'cursor')
return g
`
)

const NAME = /^[A-Za-z0-9_.-]{1,128}$/

export const makeRedisProjections = (client: RedisClient.Service, keys: Keys): ProjectionStore.Service => {
  const tag = (name: string) => `${keys.prefix}:{projection:${name}}`
  const checked = <A, E>(name: string, f: (t: string) => Effect.Effect<A, E>) =>
    NAME.test(name)
      ? f(tag(name))
      : Effect.fail(new InvalidArgument({ argument: "projection", reason: `${JSON.stringify(name)} must be 1 to 128 of [A-Za-z0-9_.-]` }))
  return ProjectionStore.of({
    acquire: (name, member, ttlMillis) =>
      checked(name, (t) =>
        Effect.map(
          client.call("projection", (r) => evalScript(r, ACQUIRE, [`${t}:lease`, `${t}:epoch`], [member, Math.ceil(ttlMillis)]) as Promise<string | null>),
          (token) => token ?? undefined
        )),
    renew: (name, token, ttlMillis) =>
      checked(name, (t) => Effect.map(client.call("projection", (r) => evalScript(r, RENEW, [`${t}:lease`], [token, Math.ceil(ttlMillis)])), (ok) => ok === 1)),
    release: (name, token) => checked(name, (t) => Effect.asVoid(client.call("projection", (r) => evalScript(r, RELEASE, [`${t}:lease`], [token])))),
    load: (name) =>
      checked(name, (t) =>
        Effect.map(client.call("projection", (r) => r.hgetall(`${t}:state`)), (h): Checkpoint => {
          let cursor: Checkpoint["cursor"] = undefined
          try {
            const parsed: unknown = h.cursor === undefined ? undefined : JSON.parse(h.cursor)
            if (Array.isArray(parsed) && parsed.every((x) => typeof x === "string")) cursor = parsed
          } catch {
            cursor = undefined
          }
          return { generation: Number(h.generation ?? 0), cursor, resetDone: Number(h.resetDone ?? 0), category: h.category || undefined }
        })),
    save: (name, token, checkpoint) =>
      checked(name, (t) =>
        client.call("projection", (r) =>
          evalScript(r, SAVE, [`${t}:lease`, `${t}:state`], [
            token,
            checkpoint.generation,
            JSON.stringify(checkpoint.cursor ?? null),
            checkpoint.resetDone,
            checkpoint.category ?? ""
          ])).pipe(
            Effect.flatMap((reply) =>
              reply === 1
                ? Effect.void
                : Effect.fail(new CheckpointRejected({ projection: name, reason: reply === "lease" ? "LeaseLost" : "GenerationChanged" }))
            )
          )),
    rebuild: (name) => checked(name, (t) => Effect.map(client.call("projection", (r) => evalScript(r, REBUILD, [`${t}:state`], [])), Number))
  })
}
