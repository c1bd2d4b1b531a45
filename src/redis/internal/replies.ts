/**
 * Decoding what the server replies: the append script's result per batch, and log
 * entries into recorded events.
 *
 * @internal
 */
import { Effect, Exit } from "effect"
import type { Position } from "../../Envelope.js"
import {
  type AppendError,
  AppendOutcomeUnknown,
  type AppendResult,
  EventDecodeError,
  IdempotencyMismatch,
  type RecordedEvent,
  WrongExpectedVersion,
  WrongKeyType
} from "../../EventStore.js"
import type { PreparedAppend } from "../../internal/append.js"
import { fieldsOf, toRecorded } from "../../internal/record.js"

/** A log entry as XRANGE, XREAD and the scripts return it: its id and its fields. */
export type RawEntry = [string, Array<string>]

export const eventIdsOf = (p: PreparedAppend) => p.events.map((e) => e.eventId)

/** One batch's outcome from the append script's reply for it (scripts.ts, APPEND). */
export const appendResult = (partition: number, p: PreparedAppend, r: Array<unknown>): Exit.Exit<AppendResult, AppendError> => {
  const stream = p.stream
  switch (r[0]) {
    case "ok":
    case "replay": {
      const first = Number(r[1])
      const positions: Array<Position> = []
      for (let i = 2; i < r.length; i++) positions.push({ partition, entryId: r[i] as string })
      if (positions.length !== p.events.length) {
        return Exit.fail(new AppendOutcomeUnknown({ stream, eventIds: eventIdsOf(p), reason: "the reply lists fewer positions than events" }))
      }
      return Exit.succeed({ stream, firstVersion: first, lastVersion: first + p.events.length - 1, positions, replayed: r[0] === "replay" })
    }
    case "wev":
      return Exit.fail(new WrongExpectedVersion({ stream, expected: p.expectedVersion, actual: Number(r[1]) }))
    case "mismatch":
    case "known": {
      const i = Number(r[1])
      const stored = r[2] as string | null
      const eventId = p.events[i]?.eventId ?? "?"
      const reason = r[0] === "known"
        ? `this id was written earlier (as ${stored}) but the batch's first id is new`
        : i === 0
        ? `the id's stored entry ${JSON.stringify(stored)} cannot be read`
        : stored === null
        ? "the batch replays an earlier append, but this id was not part of it"
        : `the batch replays an earlier append, but this id was written as ${stored}, not at the next version with type ${p.events[i]?.type}`
      return Exit.fail(new IdempotencyMismatch({ stream, eventId, reason }))
    }
    case "type":
      return Exit.fail(new WrongKeyType({ key: String(r[1]), expected: String(r[2]), actual: String(r[3]) }))
    default:
      return Exit.fail(new AppendOutcomeUnknown({ stream, eventIds: eventIdsOf(p), reason: `unexpected reply ${JSON.stringify(r)?.slice(0, 200)}` }))
  }
}

/** An entry a stream's version list points at (null: the list names an entry the log lacks). */
export const decodeEntry = (category: string, partition: number, entry: RawEntry | null, version: number, stream: string) =>
  entry === null
    ? new EventDecodeError({ stream, version, partition, reason: "the stream lists a log entry that does not exist" })
    : toRecorded(category, partition, entry[0], fieldsOf(entry[1]))

/** Entries of one partition's log, in order; the first that cannot be read fails them all. */
export const decodeEntries = (category: string, partition: number, entries: ReadonlyArray<RawEntry>): Effect.Effect<Array<RecordedEvent>, EventDecodeError> => {
  const out: Array<RecordedEvent> = []
  for (const [id, fields] of entries) {
    const r = toRecorded(category, partition, id, fieldsOf(fields))
    if (r instanceof EventDecodeError) return Effect.fail(r)
    out.push(r)
  }
  return Effect.succeed(out)
}
