/**
 * What "acknowledged" waits for beyond the primary's memory (docs/semantics.md §9): WAIT
 * for replicas, or WAITAOF for the AOF fsync of the primary and the replicas. Both count
 * the writes of the connection they are sent on, so they are sent on the append
 * connection right after each coalesced call.
 *
 * @internal
 */
import { Duration } from "effect"
import type { Connection } from "../RedisClient.js"
import { commandForSlot } from "./resp.js"

export interface Durability {
  /** Replicas that must confirm each call (WAIT). */
  readonly replicas: number
  /** How long to wait for them. */
  readonly timeout: Duration.Duration
  /** Also wait for the primary's (and the replicas') AOF fsync (WAITAOF, Redis 7.2+). */
  readonly aof: boolean
}

export interface Confirmer {
  /** Replicas each call needs. */
  readonly required: number
  /** How long a confirmation may take. */
  readonly millis: number
  /**
   * How many replicas confirmed this connection's writes so far (on a cluster, those on
   * the master of `slot`); -1 when the primary's own fsync did not happen (aof).
   */
  readonly confirm: (slot: number) => Promise<{ readonly confirmed: number }>
}

/** The confirmation step of each call on `conn`, or undefined when appends do not wait. */
export const makeConfirmer = (conn: Connection, durability: Durability | undefined): Confirmer | undefined => {
  if (durability === undefined) return undefined
  const required = durability.replicas
  const millis = Duration.toMillis(durability.timeout)
  return {
    required,
    millis,
    confirm: async (slot) => {
      if (durability.aof) {
        const waitaof = commandForSlot("waitaof", [1, required, millis], slot)
        conn.sendCommand(waitaof)
        const [local, replicas] = (await waitaof.promise) as [number, number]
        // the primary's own fsync is required too: without it nothing is confirmed
        return { confirmed: local >= 1 ? replicas : -1 }
      }
      const wait = commandForSlot("wait", [required, millis], slot)
      conn.sendCommand(wait)
      return { confirmed: Number(await wait.promise) }
    }
  }
}
