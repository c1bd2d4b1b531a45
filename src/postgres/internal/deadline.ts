/**
 * Every statement of the PostgreSQL backend has a deadline for its reply: a connection
 * gone silent (a network partition, a stopped server, a NAT or firewall that dropped the
 * connection's state) must not hold an append, a read or a consumer for good.
 *
 * A statement runs on a connection of its own, outside any caller's transaction. Past its
 * deadline, or when its caller is interrupted, the statement is abandoned: its connection
 * is closed at once, so the statement fails at once and the connection never goes back to
 * the pool, and the server is asked to cancel it (`pg_cancel_backend`, on another
 * connection, itself within the deadline). Handing such a connection back, as the driver
 * does after its own cancel, would give the next statement (the pool reuses the
 * connection released last) a connection that never answers: every statement after a
 * dropped connection failed at its deadline, none reached the server.
 *
 * Two policies say when the caller learns of the deadline:
 * - `"background"` (appends, reads): at once; the cancel goes on in the background. Right
 *   for an append, whose outcome is then unknown and said so, and for a read, which takes
 *   no lock a retry could wait on.
 * - `"awaited"` (consumer groups): once the cancel has run. A group statement takes row
 *   locks (a lease, a claim page); a retry sent while the first attempt may still run
 *   would queue behind its locks and time out in turn.
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
import { Duration, Effect, Exit, FiberId } from "effect"
import { type PermissionDenied, StoreUnavailable } from "../../EventStore.js"
import { storeError } from "./errors.js"

export type OnDeadline = "background" | "awaited"

/** The longest a timer holds (about 24.8 days): a deadline beyond it is none. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * `self` with a deadline of `duration` for its reply: it runs in a fiber of its own and
 * the caller has the first of its exit and the deadline (`onTimeout`'s error). Past the
 * deadline, or when the caller is interrupted, `abandon` is called: `true` when it has
 * made `self` end by itself (its connection closed), `false` to have it interrupted. The
 * caller goes on at once or once `self` has ended, as `onDeadline` says.
 */
export const withDeadline = <A, E, E2>(
  self: Effect.Effect<A, E>,
  duration: Duration.Duration,
  onTimeout: () => E2,
  onDeadline: OnDeadline,
  abandon: () => boolean = () => false
): Effect.Effect<A, E | E2> => {
  const millis = Duration.toMillis(duration)
  return Effect.flatMap(Effect.forkDaemon(self), (fiber) =>
    Effect.async<A, E | E2>((resume) => {
      let late = false
      const stop = () => {
        if (!abandon()) fiber.unsafeInterruptAsFork(FiberId.none)
      }
      const timer = millis < MAX_TIMER_MS
        ? setTimeout(() => {
          late = true
          if (onDeadline === "background") {
            fiber.removeObserver(observer)
            resume(Effect.fail(onTimeout()))
          }
          stop()
        }, millis)
        : undefined
      const observer = (exit: Exit.Exit<A, E>) => {
        clearTimeout(timer)
        // a reply that came in before the statement was abandoned is still the reply
        resume(late && !Exit.isSuccess(exit) ? Effect.fail(onTimeout()) : exit)
      }
      fiber.addObserver(observer)
      return Effect.suspend(() => {
        clearTimeout(timer)
        fiber.removeObserver(observer)
        stop()
        return onDeadline === "background" ? Effect.void : Effect.asVoid(fiber.await)
      })
    }))
}

/** What is used of the driver's connection behind a reserved `Connection` of `@effect/sql-pg`. */
interface DriverConnection {
  readonly processID: number | null
  end(): Promise<void>
}

/**
 * The driver's connection behind a reserved `Connection`, when it can be told; otherwise
 * an abandoned statement is interrupted, which is all the driver offers.
 */
const driverOf = (connection: Connection): DriverConnection | undefined => {
  const pg = (connection as { readonly pg?: unknown }).pg
  return typeof pg === "object" && pg !== null && typeof (pg as { end?: unknown }).end === "function" ? pg as DriverConnection : undefined
}

export interface StatementDeadline<E2> {
  readonly duration: Duration.Duration
  readonly onTimeout: () => E2
  readonly onDeadline: OnDeadline
}

/**
 * Runs `statement` (a statement of `sql`) on a connection of its own, outside any
 * caller's transaction, within `deadline`; abandoned as the module's header says.
 */
export const runStatement = <A, E2>(
  sql: PgClient,
  statement: Effect.Effect<A, SqlError>,
  deadline: StatementDeadline<E2>,
  cancel = true
): Effect.Effect<A, SqlError | E2> =>
  Effect.suspend(() => {
    let driver: DriverConnection | undefined
    let abandoned = false
    let cancelling: number | null = null
    const onConnection = Effect.scoped(
      // a connection the pool hands over is always taken and released: `reserve`
      // interrupted while it waits would leave the connection it later gets checked out
      Effect.flatMap(Effect.uninterruptible(sql.reserve), (connection) => {
        driver = driverOf(connection)
        if (abandoned) {
          // given up on before the statement was sent: the connection goes back as it is
          return Effect.interrupt
        }
        return Effect.provideService(statement, TransactionConnection, [connection, 0] as const)
      })
    ).pipe(
      // the server's side of an abandoned statement, before the caller that waits for it goes on
      Effect.ensuring(Effect.suspend(() => {
        const pid = cancelling
        return pid === null || !cancel
          ? Effect.void
          : Effect.ignore(runStatement(sql, sql.unsafe(`SELECT pg_cancel_backend($1)`, [pid]).values, { ...deadline, onDeadline: "background" }, false))
      }))
    )
    return withDeadline(onConnection, deadline.duration, deadline.onTimeout, deadline.onDeadline, () => {
      abandoned = true
      if (driver === undefined) return false
      cancelling = driver.processID
      // with its statement under way the driver destroys the socket: the statement fails at
      // once, and the pool drops the connection it gets back (it is ending)
      driver.end().catch(() => undefined)
      return true
    })
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
  return (operation, text, params = []) =>
    runStatement(sql, sql.unsafe(text, params as Array<never>).values, {
      duration,
      onTimeout: () => new StoreUnavailable({ operation, reason, retryable: true }),
      onDeadline
    }).pipe(Effect.mapError((e) => e instanceof StoreUnavailable ? e : storeError(operation, e)))
}
