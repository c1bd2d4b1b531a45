/**
 * What "acknowledged" waits for beyond the primary's memory (docs/semantics.md §9): WAIT
 * for replicas, or WAITAOF for the AOF fsync of the primary and the replicas. Both count
 * the writes of the connection they are sent on, before them: so the confirmation of a
 * call is written on the same connection, right behind the call, in the same write. Sent
 * later (after the call's reply) it could run on another connection (one opened again
 * after a drop, or, on a cluster, another node, where the client retries a command whose
 * connection closed) and confirm writes that are not those of the call.
 *
 * @internal
 */
import { Duration } from "effect"
import { Command } from "ioredis"

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
  /** The command that confirms the writes sent before it on its connection. */
  readonly command: () => Command
  /**
   * How many replicas confirmed, from the command's reply; -1 when the primary's own
   * fsync did not happen (aof).
   */
  readonly confirmed: (reply: unknown) => number
}

/** The confirmation step of each call, or undefined when appends do not wait. */
export const makeConfirmer = (durability: Durability | undefined): Confirmer | undefined => {
  if (durability === undefined) return undefined
  const required = durability.replicas
  const millis = Duration.toMillis(durability.timeout)
  if (durability.aof) {
    return {
      required,
      millis,
      command: () => new Command("waitaof", [1, required, millis], { replyEncoding: "utf8" }),
      // the primary's own fsync is required too: without it nothing is confirmed
      confirmed: (reply) => {
        const [local, replicas] = reply as [number, number]
        return local >= 1 ? Number(replicas) : -1
      }
    }
  }
  return {
    required,
    millis,
    command: () => new Command("wait", [required, millis], { replyEncoding: "utf8" }),
    confirmed: (reply) => Number(reply)
  }
}
