/**
 * Every statement of the PostgreSQL backend has a deadline for its reply: a connection
 * gone silent (a network partition, a stopped server, a NAT or firewall that dropped the
 * connection's state) must not hold an append, a read or a consumer for good.
 *
 * A statement runs on a connection of its own, outside any caller's transaction. Past its
 * deadline, or when its caller is interrupted, the statement is abandoned: the server is
 * asked to cancel it (a CancelRequest with the session's key, on a socket of its own: no
 * pool slot, no login, and only that session is hit, behind a pooling proxy too), and its
 * connection is closed at once, so the statement fails at once and the connection never
 * goes back to the pool. Handing such a connection back, as the driver does after its own
 * cancel, gave the next statement (the pool reuses the connection released last) a
 * connection that never answered: every statement after a dropped connection failed at
 * its deadline. And a cancel sent as a statement through the pool waits behind the
 * statements queued there: under load it missed its own deadline, and abandoned
 * statements piled up on the server past the pool's size.
 *
 * Two policies say when the caller learns of the deadline:
 * - `"background"` (appends, reads): at once.
 * - `"awaited"` (writes that take row locks: groups, snapshots, projections, keys, the
 *   registry): once the server has taken the cancel (or the cancel's own deadline, the
 *   statement's, has passed). A retry sent while the first attempt may still run would
 *   queue behind its locks and time out in turn.
 * A statement given up on before it had a connection was never sent: its caller learns of
 * it at once under either policy, told that nothing was sent.
 *
 * The deadline is the wall clock's: a test clock in the caller's fiber does not hold it,
 * as it would not hold a server that has stopped answering. The race is a timer and a
 * fiber observer rather than `Effect.timeoutFail`: measured with a database that answers
 * at once, a lone append took 113–127 µs of this process's CPU with `Effect.disconnect`
 * and `Effect.timeoutFail` together, 55–61 µs this way.
 *
 * @internal
 */
import { TransactionConnection } from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import type { PgClient } from "@effect/sql-pg/PgClient"
import { Duration, Effect, Exit, type Fiber, FiberId } from "effect"
import { type PermissionDenied, StoreUnavailable } from "../../EventStore.js"
import { storeError } from "./errors.js"

export type OnDeadline = "background" | "awaited"

/** The longest a timer holds (about 24.8 days): a deadline beyond it is none. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** What abandoning did: the work ends by itself, it is to be interrupted, or it was never sent. */
export type Abandoned = "ends" | "interrupt" | "unsent"

/**
 * `self` with a deadline of `duration` for its reply: it runs in a fiber of its own and
 * the caller has the first of its exit and the deadline (`onTimeout`'s error, told
 * whether anything was sent). Past the deadline, or when the caller is interrupted,
 * `abandon` is called and says what it did (by default: have `self` interrupted). The
 * caller goes on at once, or once `self` has ended, as `onDeadline` says; at once when
 * nothing was sent.
 */
export const withDeadline = <A, E, E2>(
  self: Effect.Effect<A, E>,
  duration: Duration.Duration,
  onTimeout: (sent: boolean) => E2,
  onDeadline: OnDeadline,
  abandon: () => Abandoned = () => "interrupt"
): Effect.Effect<A, E | E2> => {
  const millis = Duration.toMillis(duration)
  // between the fork and the wait's registration the caller could be interrupted, leaving
  // the work unwatched: the fork is in an uninterruptible region (the work itself is not)
  return Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.forkDaemon(restore(self)), (fiber) => {
      let watched = false
      return restore(race(fiber, millis, onTimeout, onDeadline, abandon, () => watched = true)).pipe(
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            if (!watched) stop(fiber, abandon)
          })
        )
      )
    })
  )
}

const race = <A, E, E2>(
  fiber: Fiber.RuntimeFiber<A, E>,
  millis: number,
  onTimeout: (sent: boolean) => E2,
  onDeadline: OnDeadline,
  abandon: () => Abandoned,
  onWatched: () => void
) =>
  Effect.async<A, E | E2>((resume) => {
    onWatched()
    let late = false
    const timer = millis < MAX_TIMER_MS
      ? setTimeout(() => {
        late = true
        const what = stop(fiber, abandon)
        if (!waits(what, onDeadline)) {
          fiber.removeObserver(observer)
          resume(Effect.fail(onTimeout(what !== "unsent")))
        }
      }, millis)
      : undefined
    const observer = (exit: Exit.Exit<A, E>) => {
      clearTimeout(timer)
      // a reply that came in before the statement was abandoned is still the reply
      resume(late && !Exit.isSuccess(exit) ? Effect.fail(onTimeout(true)) : exit)
    }
    fiber.addObserver(observer)
    return Effect.suspend(() => {
      clearTimeout(timer)
      fiber.removeObserver(observer)
      return waits(stop(fiber, abandon), onDeadline) ? Effect.asVoid(fiber.await) : Effect.void
    })
  })

/** Abandons the work: interrupted, unless abandoning made it end by itself. */
const stop = (fiber: Fiber.RuntimeFiber<unknown, unknown>, abandon: () => Abandoned): Abandoned => {
  const what = abandon()
  if (what !== "ends") fiber.unsafeInterruptAsFork(FiberId.none)
  return what
}

/** Whether the caller waits for abandoned work to end: under "awaited", when something was sent. */
const waits = (what: Abandoned, onDeadline: OnDeadline) => what !== "unsent" && onDeadline === "awaited"

/** What is used of the driver's connection behind a reserved `Connection` of `@effect/sql-pg`. */
interface DriverConnection {
  readonly processID: number | null
  readonly secretKey: number | null
  readonly host: string
  readonly port: number
  readonly connection: {
    /** The driver's protocol connection class, for the cancel's socket. */
    readonly constructor: new(config: object) => ProtocolConnection
    readonly stream?: { destroy(): void; readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined }
  }
  end(): Promise<void>
}

interface ProtocolConnection {
  connect(port: number | string, host?: string): void
  cancel(processID: number, secretKey: number): void
  once(event: "connect" | "end", f: () => void): void
  on(event: "error", f: (error: unknown) => void): void
  readonly stream: { destroy(): void }
}

/**
 * The driver's connection behind a reserved `Connection`, when it can be told; otherwise
 * an abandoned statement is interrupted, which is all the driver offers.
 */
const driverOf = (connection: Connection): DriverConnection | undefined => {
  const pg = (connection as { readonly pg?: unknown }).pg as Partial<DriverConnection> | null | undefined
  return typeof pg === "object" && pg !== null && typeof pg.end === "function" && typeof pg.connection?.constructor === "function"
    ? pg as DriverConnection
    : undefined
}

/** How long a cancel may take: the statement's deadline, within these bounds. */
const CANCEL_MIN_MS = 1_000
const CANCEL_MAX_MS = 30_000

/**
 * Asks the server to cancel what `driver`'s session runs: a CancelRequest with the
 * session's key, as the driver's own `cancel` sends it, on a socket of its own, to the
 * address the session's socket is connected to (the same server, whatever DNS says now).
 * Settles when the server has taken it (it closes the socket), on an error, or after
 * `millis` (within 1 to 30 s); never fails. A connection through a custom `stream` of the
 * driver's config is cancelled over the plain network, or not at all.
 */
const cancelOnServer = (driver: DriverConnection, millis: number): Promise<void> =>
  new Promise((settle) => {
    const { processID, secretKey } = driver
    if (processID === null || secretKey === null) return settle()
    let socket: ProtocolConnection | undefined
    const done = () => {
      clearTimeout(timer)
      try {
        socket?.stream.destroy()
      } catch {
        // nothing more to do for a cancel
      }
      settle()
    }
    const timer = setTimeout(done, Math.min(CANCEL_MAX_MS, Math.max(CANCEL_MIN_MS, millis)))
    timer.unref()
    try {
      const s = new driver.connection.constructor({})
      socket = s
      s.on("error", done)
      s.once("end", done)
      s.once("connect", () => s.cancel(processID, secretKey))
      const peer = driver.connection.stream
      if (driver.host.startsWith("/")) s.connect(`${driver.host}/.s.PGSQL.${driver.port}`)
      else if (peer?.remoteAddress !== undefined && peer.remotePort !== undefined) s.connect(peer.remotePort, peer.remoteAddress)
      else s.connect(driver.port, driver.host)
    } catch {
      done()
    }
  })

/** Closes the driver's connection for good: its statement under way fails, and the pool drops it on release. */
const close = (driver: DriverConnection) => {
  try {
    driver.end().catch(() => undefined)
    // `end` alone does not destroy the socket in the driver's pipeline mode
    driver.connection.stream?.destroy()
  } catch {
    // closed already
  }
}

export interface StatementDeadline<E2> {
  readonly duration: Duration.Duration
  /** The error past the deadline; `sent` is false when the statement never had a connection (nothing was sent). */
  readonly onTimeout: (sent: boolean) => E2
  readonly onDeadline: OnDeadline
}

/**
 * Runs `statement` (a statement of `sql`) on a connection of its own, outside any
 * caller's transaction, within `deadline`; abandoned as the module's header says.
 */
export const runStatement = <A, E2>(
  sql: PgClient,
  statement: Effect.Effect<A, SqlError>,
  deadline: StatementDeadline<E2>
): Effect.Effect<A, SqlError | E2> =>
  Effect.suspend(() => {
    const millis = Duration.toMillis(deadline.duration)
    let driver: DriverConnection | undefined
    let connected = false
    /** Settles once an abandoned statement's cancel was taken and its connection closed. */
    let closed: Promise<void> | undefined
    let outcome: Abandoned | undefined
    const onConnection = Effect.scoped(
      // a connection the pool hands over is always taken and released: `reserve`
      // interrupted while it waits would leave the connection it later gets checked out
      Effect.flatMap(Effect.uninterruptible(sql.reserve), (connection) => {
        if (outcome !== undefined) {
          // given up on before the statement was sent: the connection goes back as it is
          return Effect.interrupt
        }
        connected = true
        driver = driverOf(connection)
        // finalizers run last first: this one before the connection's release, after which
        // the pool may hand the connection to another statement, which no abandon must
        // touch; an abandoned statement's connection is closed first (once its cancel was
        // taken), so that the pool drops it
        return Effect.zipRight(
          Effect.addFinalizer(() =>
            Effect.suspend(() => {
              driver = undefined
              return closed === undefined ? Effect.void : Effect.promise(() => closed!)
            })
          ),
          // the connection as the statement's transaction connection (at depth 0, none is
          // open: a statement here never begins one): it runs there and nowhere else
          Effect.provideService(statement, TransactionConnection, [connection, 0] as const)
        )
      })
    )
    const abandon = (): Abandoned => {
      if (!connected) return "unsent"
      const d = driver
      if (d === undefined) return "interrupt"
      driver = undefined
      // the cancel first, the connection closed once the server has taken it: behind a
      // pooling proxy, a session whose client has gone may no longer be found by a cancel.
      // The statement then fails (cancelled, or its connection closed), and the pool drops
      // the connection (it is ending)
      closed = cancelOnServer(d, millis).then(() => close(d))
      return "ends"
    }
    // abandoned once (the deadline, then the caller's interruption): the second time says the same
    return withDeadline(onConnection, deadline.duration, deadline.onTimeout, deadline.onDeadline, () => outcome ??= abandon())
  })

/** Runs a statement's text and parameters within the runner's deadline, its failures classified. */
export type Run = (operation: string, text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<ReadonlyArray<unknown>>, StoreUnavailable | PermissionDenied>

/**
 * A runner of statements with one deadline and policy: past the deadline a statement
 * fails with a retryable `StoreUnavailable` ("no reply within …"), and any other failure
 * is classified by `storeError`.
 */
export const makeRun = (sql: PgClient, duration: Duration.Duration, onDeadline: OnDeadline): Run => {
  const reason = `no reply within ${Duration.format(duration)}`
  const unsent = `no connection within ${Duration.format(duration)}: nothing was sent`
  return (operation, text, params = []) =>
    runStatement(sql, sql.unsafe(text, params as Array<never>).values, {
      duration,
      onTimeout: (sent) => new StoreUnavailable({ operation, reason: sent ? reason : unsent, retryable: true }),
      onDeadline
    }).pipe(Effect.mapError((e) => e instanceof StoreUnavailable ? e : storeError(operation, e)))
}

/**
 * The two runners of statements with one deadline: `write`, for a statement that takes row
 * locks (its caller fails once the server has taken its cancel: a retry would queue behind
 * its locks), and `read`, for a lookup (its caller fails at once).
 */
export const makeRuns = (sql: PgClient, duration: Duration.Duration): { readonly read: Run; readonly write: Run } => ({
  read: makeRun(sql, duration, "background"),
  write: makeRun(sql, duration, "awaited")
})
