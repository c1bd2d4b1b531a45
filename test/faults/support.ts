/**
 * Helpers of the fault suite: servers it can kill and start again on the same port and
 * directory, and appends retried with the same ids until they settle.
 */
import { Effect } from "effect"
import { EventStore } from "effect-chronicle"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { freePort, ping, type RedisServer, startRedisServer, waitFor } from "../support/redisServer.js"

/** A redis-server that can crash (SIGKILL) and come back on the same port and data directory. */
export const restartableServer = (args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const dir = mkdtempSync(join(tmpdir(), "chronicle-fault-"))
      const port = await freePort()
      let current: RedisServer = await startRedisServer({ port, dir, args })
      let running = true
      return {
        url: `redis://127.0.0.1:${port}`,
        port,
        dir,
        get pid() {
          return current.process.pid
        },
        get running() {
          return running
        },
        crash: async () => {
          running = false
          current.process.kill("SIGKILL")
          await new Promise((r) => current.process.once("exit", r))
          await waitFor(`port ${port} to close`, async () => (await ping(port, 200)) === "", 5000)
        },
        start: async () => {
          current = await startRedisServer({ port, dir, args })
          running = true
        },
        stop: async () => {
          await current.stop()
          rmSync(dir, { recursive: true, force: true })
        }
      }
    }),
    (s) => Effect.promise(() => s.stop())
  )

/** Appends, retrying the same batch (same ids) after outcomes it cannot know, until it settles. */
export const appendSurely = (
  stream: string,
  events: ReadonlyArray<EventStore.NewEvent>,
  counters: { unknown: number; unavailable: number },
  attempts = 2000
) =>
  Effect.gen(function*() {
    const store = yield* EventStore.EventStore
    for (let i = 0; i < attempts; i++) {
      const result = yield* Effect.either(store.append(stream, events))
      if (result._tag === "Right") return result.right
      const e = result.left
      if (e._tag === "AppendOutcomeUnknown") counters.unknown++
      else if (e._tag === "StoreUnavailable") counters.unavailable++
      else return yield* Effect.die(e)
      yield* Effect.sleep("20 millis")
    }
    return yield* Effect.dieMessage(`${stream}: no settled outcome after ${attempts} attempts`)
  })

export const batchOf = (n: number, data: (i: number) => Record<string, unknown>): ReadonlyArray<EventStore.NewEvent> =>
  Array.from({ length: n }, (_, i) => ({ eventId: crypto.randomUUID(), type: "Happened", data: data(i) }))
