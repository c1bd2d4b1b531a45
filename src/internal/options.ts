/**
 * Checks of options shared by every backend.
 *
 * @internal
 */
import { type CategoryCursor, isCursor } from "../Envelope.js"
import { InvalidArgument, type Limits, type PartitionsConfig, parseStream, type ReadOptions } from "../EventStore.js"

export const maxPartitions = 1024

const validCount = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 1 && n <= maxPartitions

export const validatePartitions = (config: PartitionsConfig): InvalidArgument | undefined => {
  if (typeof config === "number") {
    return validCount(config) ? undefined : new InvalidArgument({ argument: "partitions", reason: `${config} is not an integer from 1 to ${maxPartitions}` })
  }
  if (typeof config !== "object" || config === null || !validCount(config.default)) {
    return new InvalidArgument({ argument: "partitions", reason: `expected a number or { default, byCategory } with counts from 1 to ${maxPartitions}` })
  }
  for (const [category, n] of Object.entries(config.byCategory ?? {})) {
    if (!validCount(n)) return new InvalidArgument({ argument: "partitions", reason: `byCategory.${category}: ${String(n)} is not an integer from 1 to ${maxPartitions}` })
  }
  return undefined
}

export const partitionsFor = (config: PartitionsConfig, category: string): number =>
  typeof config === "number" ? config : (Object.prototype.hasOwnProperty.call(config.byCategory ?? {}, category) ? config.byCategory![category]! : config.default)

export interface CheckedRead {
  readonly category: string
  readonly id: string
  readonly forward: boolean
  readonly from: number | undefined
  readonly limit: number
  readonly live: boolean
}

export const validateReadOptions = (stream: string, options: ReadOptions | undefined): CheckedRead | InvalidArgument => {
  const parsed = parseStream(stream)
  if (parsed instanceof InvalidArgument) return parsed
  const direction = options?.direction ?? "forward"
  if (direction !== "forward" && direction !== "backward") {
    return new InvalidArgument({ argument: "direction", reason: `${JSON.stringify(direction)} is not "forward" or "backward"` })
  }
  const from = options?.from
  if (from !== undefined && (!Number.isSafeInteger(from) || from < 1)) {
    return new InvalidArgument({ argument: "from", reason: `${String(from)} is not a version ≥ 1` })
  }
  const limit = options?.limit ?? Number.MAX_SAFE_INTEGER
  if (!Number.isSafeInteger(limit) || limit < 0) {
    return new InvalidArgument({ argument: "limit", reason: `${String(limit)} is not an integer ≥ 0` })
  }
  const live = options?.live ?? false
  if (live !== true && live !== false) return new InvalidArgument({ argument: "live", reason: `${String(live)} is not a boolean` })
  if (live && direction !== "forward") return new InvalidArgument({ argument: "live", reason: "a live read goes forward" })
  if (live && options?.limit !== undefined) return new InvalidArgument({ argument: "limit", reason: "a live read has no limit (take from the stream instead)" })
  return { category: parsed.category, id: parsed.id, forward: direction === "forward", from, limit, live }
}

export const maxPageSize = 10_000

/** The page size of a category read: default 256, from 1 to 10,000. */
export const validatePageSize = (pageSize: unknown): number | InvalidArgument => {
  const n = pageSize ?? 256
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 1 && n <= maxPageSize
    ? n
    : new InvalidArgument({ argument: "pageSize", reason: `${String(pageSize)} is not an integer from 1 to ${maxPageSize}` })
}

/** Checks the `from` of a category read once the partition count is known. */
export const validateFrom = (
  category: string,
  from: unknown,
  partitions: number
): "start" | "end" | CategoryCursor | InvalidArgument =>
  from === undefined || from === "start" || from === "end"
    ? (from ?? "start") as "start" | "end"
    : isCursor(from, partitions)
    ? from
    : new InvalidArgument({ argument: "from", reason: `a cursor of category ${category} has ${partitions} entry id(s)` })

/**
 * The largest batch the append script can take: it hands Lua 2n + 2 values at once, and
 * Redis's Lua stack takes about 8,000 (docs/semantics.md §3 keeps every unpack under 4,000).
 */
export const maxBatchEventsLimit = 1990

export const validateLimits = (limits: Limits): InvalidArgument | undefined => {
  const ok = (n: number, max: number) => Number.isSafeInteger(n) && n >= 1 && n <= max
  if (!ok(limits.maxBatchEvents, maxBatchEventsLimit)) {
    return new InvalidArgument({ argument: "limits.maxBatchEvents", reason: `${limits.maxBatchEvents} is not an integer from 1 to ${maxBatchEventsLimit}` })
  }
  if (!ok(limits.maxEventBytes, 64 * 1024 * 1024)) return new InvalidArgument({ argument: "limits.maxEventBytes", reason: `${limits.maxEventBytes} is not an integer from 1 to 64 MiB` })
  if (!ok(limits.maxBatchBytes, 512 * 1024 * 1024)) return new InvalidArgument({ argument: "limits.maxBatchBytes", reason: `${limits.maxBatchBytes} is not an integer from 1 to 512 MiB` })
  return undefined
}
