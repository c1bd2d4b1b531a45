/**
 * A delivery checker for consumer groups, usable on any backend and across processes:
 * it records every handler invocation (member, partition, lease epoch, stream, version,
 * start, end, outcome) and checks a history against what a group promises (docs/semantics.md §5–6):
 *
 * - **order**: per entity, no version's handler starts before the previous version was
 *   handled (a successful invocation ended before it; for a version that was
 *   dead-lettered, any finished invocation). A replayed dead letter is exempt: it runs
 *   after newer events of its entity by design.
 * - **nothing lost**: every expected event was handled successfully, or dead-lettered.
 * - **no late start**: on each partition, no handler under a lease epoch starts after a
 *   handler under a later epoch has started (a member past its lease deadline starts
 *   nothing).
 * - **follow-ups once**: every cause produced its follow-ups exactly once.
 *
 * @since 0.2.0
 */
import { Cause, Effect, Exit, Option } from "effect"
import { appendFileSync, readFileSync } from "node:fs"
import type { HandlerContext } from "../Subscriber.js"

/**
 * How one handler invocation ended; `"running"` when no end was recorded (its process
 * died, or it was still running).
 *
 * @since 0.2.0
 * @category models
 */
export type Outcome = "success" | "failure" | "defect" | "interrupted" | "running"

/**
 * One handler invocation.
 *
 * @since 0.2.0
 * @category models
 */
export interface Invocation {
  /** Unique per invocation (a process may record into a shared file). */
  readonly id: string
  readonly member: string
  readonly partition: number
  readonly epoch: number
  readonly stream: string
  readonly version: number
  readonly eventId: string
  readonly attempt: number
  readonly redelivered: boolean
  /** Delivered from the dead letters by a replay. */
  readonly replayed: boolean
  /** Wall-clock milliseconds (sub-millisecond, comparable across processes of one machine). */
  readonly start: number
  readonly end: number | undefined
  readonly outcome: Outcome
}

/**
 * Where invocations are recorded: each start, then each end.
 *
 * @since 0.2.0
 * @category models
 */
export interface Recorder {
  readonly started: (invocation: Invocation) => void
  readonly ended: (id: string, outcome: Outcome, end: number) => void
}

/** Wall-clock milliseconds with sub-millisecond precision. */
const now = () => performance.timeOrigin + performance.now()

let sequence = 0

/**
 * Wraps a handler record so that every invocation is recorded. The handlers are otherwise
 * unchanged (their result, errors and services).
 *
 * @example
 * ```ts
 * const history = DeliveryChecker.memory()
 * Subscriber.run(Orders, { group: "g", handlers: DeliveryChecker.recording(history, handlers) })
 * // … then
 * const report = DeliveryChecker.check(history.invocations, { expected })
 * ```
 *
 * @since 0.2.0
 * @category recording
 */
export const recording = <H extends Record<string, (event: any, ctx: HandlerContext) => Effect.Effect<unknown, any, any>>>(
  recorder: Recorder,
  handlers: H
): H => {
  const out: Record<string, (event: any, ctx: HandlerContext) => Effect.Effect<unknown, any, any>> = {}
  for (const [tag, handler] of Object.entries(handlers)) {
    out[tag] = (event, ctx) =>
      Effect.suspend(() => {
        const id = `${process.pid}.${++sequence}`
        recorder.started({
          id,
          member: ctx.member,
          partition: ctx.partition,
          epoch: ctx.epoch,
          stream: ctx.envelope.stream,
          version: ctx.envelope.version,
          eventId: ctx.envelope.eventId,
          attempt: ctx.attempt,
          redelivered: ctx.redelivered,
          replayed: ctx.replayed,
          start: now(),
          end: undefined,
          outcome: "running"
        })
        return Effect.onExit(handler(event, ctx), (exit) =>
          Effect.sync(() =>
            recorder.ended(
              id,
              Exit.isSuccess(exit)
                ? "success"
                : Cause.isInterruptedOnly(exit.cause)
                ? "interrupted"
                : Option.isSome(Cause.failureOption(exit.cause))
                ? "failure"
                : "defect",
              now()
            )
          ))
      })
  }
  return out as H
}

/**
 * A recorder in memory, for subscribers in this process.
 *
 * @since 0.2.0
 * @category recording
 */
export const memory = (): Recorder & { readonly invocations: ReadonlyArray<Invocation> } => {
  const byId = new Map<string, Invocation>()
  const order: Array<string> = []
  return {
    started: (invocation) => {
      byId.set(invocation.id, invocation)
      order.push(invocation.id)
    },
    ended: (id, outcome, end) => {
      const inv = byId.get(id)
      if (inv !== undefined) byId.set(id, { ...inv, outcome, end })
    },
    get invocations() {
      return order.map((id) => byId.get(id)!)
    }
  }
}

/**
 * A recorder appending one JSON line per start and per end to a file, synchronously, so
 * what a process recorded survives its being killed. Read it back with {@link readFile}.
 *
 * @since 0.2.0
 * @category recording
 */
export const file = (path: string): Recorder => ({
  started: (invocation) => appendFileSync(path, JSON.stringify({ k: "s", ...invocation }) + "\n"),
  ended: (id, outcome, end) => appendFileSync(path, JSON.stringify({ k: "e", id, outcome, end }) + "\n")
})

/**
 * The invocations recorded in files by {@link file} (a line cut short by a killed process
 * is skipped).
 *
 * @since 0.2.0
 * @category recording
 */
export const readFile = (...paths: ReadonlyArray<string>): ReadonlyArray<Invocation> => {
  const byId = new Map<string, Invocation>()
  for (const path of paths) {
    let text = ""
    try {
      text = readFileSync(path, "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n")) {
      if (line === "") continue
      let r: { k: string; id: string; outcome?: Outcome; end?: number } & Partial<Invocation>
      try {
        r = JSON.parse(line)
      } catch {
        continue
      }
      if (r.k === "s") {
        const { k: _, ...inv } = r
        byId.set(r.id, { ...(inv as Invocation), end: byId.get(r.id)?.end, outcome: byId.get(r.id)?.outcome ?? "running" })
      } else if (r.k === "e") {
        const inv = byId.get(r.id)
        if (inv !== undefined) byId.set(r.id, { ...inv, outcome: r.outcome!, end: r.end })
      }
    }
  }
  return Array.from(byId.values()).sort((a, b) => a.start - b.start)
}

/**
 * An event the history is checked against.
 *
 * @since 0.2.0
 * @category models
 */
export interface Expected {
  readonly stream: string
  readonly version: number
}

/**
 * An event the group dead-lettered, and when (Unix ms, as `DeadLetters.list` gives it).
 *
 * @since 0.2.0
 * @category models
 */
export interface Parked extends Expected {
  readonly at?: number | undefined
}

/**
 * A handler start that came before the previous version of its entity was handled.
 *
 * @since 0.2.0
 * @category models
 */
export interface OrderViolation {
  readonly invocation: Invocation
  readonly reason: string
}

/**
 * What {@link check} found.
 *
 * @since 0.2.0
 * @category models
 */
export interface Report {
  readonly invocations: number
  /** Distinct events handled successfully. */
  readonly handled: number
  /** Invocations beyond the first per event (retries, redeliveries, replays). */
  readonly redeliveries: number
  readonly orderViolations: ReadonlyArray<OrderViolation>
  /** Expected events never handled successfully nor dead-lettered. */
  readonly lost: ReadonlyArray<Expected>
  /** Handler starts under a lease epoch after a later epoch of the same partition had started. */
  readonly lateStarts: ReadonlyArray<Invocation>
  /** True when there is no violation, nothing lost and no late start. */
  readonly ok: boolean
}

const eventKey = (stream: string, version: number) => `${stream}\u0000${version}`

/**
 * Checks a history (see the module's description).
 *
 * @since 0.2.0
 * @category checks
 */
export const check = (
  history: ReadonlyArray<Invocation>,
  options: {
    /** Every event the group should have handled. */
    readonly expected: ReadonlyArray<Expected>
    /** Events the group dead-lettered (as `DeadLetters.list` gives them, with `at`). */
    readonly deadLettered?: ReadonlyArray<Parked> | undefined
  }
): Report => {
  const deadAt = new Map((options.deadLettered ?? []).map((e) => [eventKey(e.stream, e.version), e.at] as const))
  const dead = new Set(deadAt.keys())
  const byEvent = new Map<string, Array<Invocation>>()
  for (const inv of history) {
    const k = eventKey(inv.stream, inv.version)
    const list = byEvent.get(k)
    if (list === undefined) byEvent.set(k, [inv])
    else list.push(inv)
  }
  const orderViolations: Array<OrderViolation> = []
  for (const inv of history) {
    if (inv.version <= 1 || inv.replayed) continue
    const previous = byEvent.get(eventKey(inv.stream, inv.version - 1)) ?? []
    const prevKey = eventKey(inv.stream, inv.version - 1)
    const prevDead = dead.has(prevKey)
    const parkedAt = deadAt.get(prevKey)
    // a version dead-lettered before this start counts as handled (it is parked, by design,
    // possibly without a handler run: MaxDeliveries)
    const done = (prevDead && parkedAt !== undefined && parkedAt <= inv.start) || previous.some((p) =>
      p.end !== undefined && p.end <= inv.start && (p.outcome === "success" || (prevDead && p.outcome !== "interrupted" && p.outcome !== "running"))
    )
    if (!done) {
      orderViolations.push({
        invocation: inv,
        reason: previous.length === 0
          ? `v${inv.version - 1} had never been handled by anyone`
          : `v${inv.version - 1} had not been handled yet (${previous.map((p) => `${p.member.split(":")[0]}@${p.epoch} ${p.outcome} ${(p.start - inv.start).toFixed(1)}..${p.end === undefined ? "?" : (p.end - inv.start).toFixed(1)} ms`).join(", ")})`
      })
    }
  }
  const lost: Array<Expected> = []
  let handled = 0
  for (const e of options.expected) {
    const k = eventKey(e.stream, e.version)
    if ((byEvent.get(k) ?? []).some((p) => p.outcome === "success")) handled++
    else if (!dead.has(k)) lost.push(e)
  }
  const lateStarts: Array<Invocation> = []
  const byPartition = new Map<number, Array<Invocation>>()
  for (const inv of history) {
    const list = byPartition.get(inv.partition)
    if (list === undefined) byPartition.set(inv.partition, [inv])
    else list.push(inv)
  }
  for (const list of byPartition.values()) {
    // the first start under each epoch
    const firstOf = new Map<number, number>()
    for (const inv of list) firstOf.set(inv.epoch, Math.min(firstOf.get(inv.epoch) ?? Infinity, inv.start))
    const epochs = Array.from(firstOf.keys()).sort((a, b) => a - b)
    for (const inv of list) {
      const later = epochs.filter((e) => e > inv.epoch).map((e) => firstOf.get(e)!)
      if (later.some((t) => t < inv.start)) lateStarts.push(inv)
    }
  }
  return {
    invocations: history.length,
    handled,
    redeliveries: history.length - byEvent.size,
    orderViolations,
    lost,
    lateStarts,
    ok: orderViolations.length === 0 && lost.length === 0 && lateStarts.length === 0
  }
}

/**
 * Follow-up events that were not written exactly once per cause: `causes` are the ids of
 * the events that should each have produced `perCause` follow-ups (told apart by their
 * `causationId`). Returns the causes with another count.
 *
 * @since 0.2.0
 * @category checks
 */
export const followUpsOnce = (
  followUps: ReadonlyArray<{ readonly causationId?: string | undefined }>,
  causes: ReadonlyArray<string>,
  perCause = 1
): ReadonlyArray<{ readonly cause: string; readonly count: number }> => {
  const counts = new Map<string, number>()
  for (const f of followUps) if (f.causationId !== undefined) counts.set(f.causationId, (counts.get(f.causationId) ?? 0) + 1)
  return causes.flatMap((cause) => ((counts.get(cause) ?? 0) === perCause ? [] : [{ cause, count: counts.get(cause) ?? 0 }]))
}
