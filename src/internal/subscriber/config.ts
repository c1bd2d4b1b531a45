/**
 * A subscriber's settings, checked once when it starts (docs/semantics.md §5): every duration in
 * milliseconds, every default filled in.
 *
 * @internal
 */
import { Duration, Either, Schedule } from "effect"
import type { StartFrom } from "../../ConsumerGroups.js"
import { InvalidArgument } from "../../EventStore.js"
import type { Options } from "../../Subscriber.js"

/** What a subscriber can be given, besides its handlers: the public `Subscriber.Options`. */
export type EngineOptions = Omit<Options<unknown>, "handlers" | "retry"> & {
  readonly retry?: Schedule.Schedule<unknown, any> | undefined
}

export interface Config {
  readonly group: string
  readonly consumer: string
  /** How long a lease and a membership last without renewal. */
  readonly leaseTtl: number
  /** Interval of membership heartbeats and lease renewals: at most leaseTtl / 3. */
  readonly heartbeat: number
  /** Longest single wait for new entries: at most the heartbeat. */
  readonly maxWait: number
  /**
   * How long before a lease would lapse on the server this member stops starting
   * handlers for it: the local deadline is the last renewal's send time + leaseTtl − margin.
   */
  readonly margin: number
  readonly readCount: number
  /** In flight below which more is read (in flight never exceeds 2 × readCount). */
  readonly refill: number
  readonly concurrency: number
  readonly maxDeliveries: number
  readonly shutdownTimeout: number
  readonly revokeTimeout: number
  readonly onUnknownType: "dead-letter" | "skip"
  readonly startFrom: StartFrom
  readonly retry: Schedule.Schedule<unknown, any>
}

/**
 * The default retry of a handler: exponential from 100 ms, jittered, 5 recurrences.
 */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("100 millis").pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(5))
)

/** In flight below which the reader asks for more: three quarters of the 2 × readCount window. */
export const refillBelow = (readCount: number): number => Math.max(1, Math.floor((readCount * 3) / 2))

const millis = (d: Duration.DurationInput | undefined, fallback: number): number =>
  d === undefined ? fallback : Duration.toMillis(Duration.decode(d))

const CONSUMER = /^[A-Za-z0-9_.-]{1,64}$/

/** The settings, or the first option that is out of range. */
export const make = (options: EngineOptions): Either.Either<Config, InvalidArgument> => {
  // whole milliseconds: Redis takes PX and BLOCK as integers
  const leaseTtl = Math.ceil(millis(options.leaseTtl, 10_000))
  const heartbeat = Math.floor(millis(options.heartbeat, leaseTtl / 3))
  const maxWait = Math.floor(millis(options.maxWait, Math.min(heartbeat, 5_000)))
  const config: Config = {
    group: options.group,
    consumer: options.consumer ?? "consumer",
    leaseTtl,
    heartbeat,
    maxWait,
    margin: Math.max(Math.floor(leaseTtl / 5), 20),
    readCount: options.readCount ?? 500,
    refill: refillBelow(options.readCount ?? 500),
    concurrency: options.concurrency ?? 16,
    maxDeliveries: options.maxDeliveries ?? 10,
    shutdownTimeout: millis(options.shutdownTimeout, 10_000),
    revokeTimeout: millis(options.revokeTimeout, 5_000),
    onUnknownType: options.onUnknownType ?? "dead-letter",
    startFrom: options.startFrom ?? "start",
    retry: options.retry ?? defaultRetry
  }
  const int = (n: number, min: number, max = Number.MAX_SAFE_INTEGER) => Number.isSafeInteger(n) && n >= min && n <= max
  const checks: ReadonlyArray<readonly [boolean, string, string]> = [
    [int(config.readCount, 1, 10_000), "readCount", "an integer from 1 to 10000"],
    [int(config.concurrency, 1), "concurrency", "an integer ≥ 1"],
    [int(config.maxDeliveries, 1), "maxDeliveries", "an integer ≥ 1"],
    [leaseTtl >= 100, "leaseTtl", "at least 100 ms"],
    [heartbeat >= 10 && heartbeat <= leaseTtl / 3, "heartbeat", `at least 10 ms and at most a third of leaseTtl (${Math.floor(leaseTtl / 3)} ms)`],
    [maxWait >= 1 && maxWait <= heartbeat, "maxWait", `at least 1 ms and at most the heartbeat (${heartbeat} ms)`],
    [config.shutdownTimeout >= 0, "shutdownTimeout", "zero or more"],
    [config.revokeTimeout >= 0, "revokeTimeout", "zero or more"],
    [config.onUnknownType === "dead-letter" || config.onUnknownType === "skip", "onUnknownType", `"dead-letter" or "skip"`],
    [config.startFrom === "start" || config.startFrom === "end", "startFrom", `"start" or "end"`],
    [CONSUMER.test(config.consumer), "consumer", "1 to 64 of [A-Za-z0-9_.-]"]
  ]
  for (const [ok, argument, reason] of checks) {
    if (!ok) return Either.left(new InvalidArgument({ argument, reason: `must be ${reason}` }))
  }
  return Either.right(config)
}
