/**
 * The backends the consumer fault scenario (scenario.ts) runs on: each starts a server of
 * its own on a free loopback port, gives the harness its layer and the consumer processes
 * (checkedConsumer.ts) their environment, names the server faults its nemesis can do, and
 * stops the server. Faults on the consumers themselves (SIGSTOP, SIGKILL) are the
 * scenario's, the same on every backend.
 *
 * - redis: redis-server with its AOF (appendfsync everysec); faults: drop every client
 *   connection (CLIENT KILL TYPE normal), pause the server past the command timeout
 *   (CLIENT PAUSE), restart it (SIGTERM, then start on the same port and directory).
 * - postgres: a private PostgreSQL 15 (postgresServer.ts); faults: end every client
 *   backend but the nemesis's own (pg_terminate_backend), freeze the server past the
 *   command timeout (SIGSTOP of its postmaster and the postmaster's children, by PID, then
 *   SIGCONT), restart it (`pg_ctl -m immediate stop`, then start on the same port and
 *   data directory: crash recovery).
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Layer, Redacted } from "effect"
import type { ConsumerGroups, EventStore } from "effect-chronicle"
import { PostgresChronicle } from "effect-chronicle/postgres"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import pg from "pg"
import { startPostgresServer } from "./postgresServer.js"
import { freePort, ping, type RedisServer, startRedisServer, waitFor } from "./redisServer.js"

export type BackendName = "redis" | "postgres"

/** What the scenario sets, the same on every backend. */
export interface BackendSettings {
  /** The scenario's directory (the server may keep its data there). */
  readonly dir: string
  /** The category (and the Redis prefix, the PostgreSQL schema). */
  readonly name: string
  readonly partitions: number
  readonly commandTimeoutMs: number
}

/** One fault the nemesis can do to the server; resolves once it is over. */
export interface ServerFault {
  readonly name: string
  readonly run: () => Promise<void>
}

export interface RunningBackend {
  /** The harness's store: its producer's appends and its view of the group. */
  readonly layer: Layer.Layer<EventStore.EventStore | ConsumerGroups.ConsumerGroups, unknown>
  /** What a consumer process needs besides the scenario's own settings. */
  readonly consumerEnv: Record<string, string>
  readonly faults: ReadonlyArray<ServerFault>
  /** Where the group stands on the server, in lines, for a report of a drain that did not end. */
  readonly diagnose: (group: string) => Promise<ReadonlyArray<string>>
  /** Stops the server (the one started here only). */
  readonly stop: () => Promise<void>
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Signals one process of ours by PID; one that has ended meanwhile is left alone. */
const signal = (pid: number, name: NodeJS.Signals) => {
  try {
    process.kill(pid, name)
  } catch {
    // ended already
  }
}

export const startRedisBackend = async (settings: BackendSettings): Promise<RunningBackend> => {
  const { dir, partitions, commandTimeoutMs } = settings
  const port = await freePort()
  const args = ["--appendonly", "yes", "--appendfsync", "everysec"]
  let server: RedisServer = await startRedisServer({ port, dir, args })
  const url = `redis://127.0.0.1:${port}`
  const prefix = settings.name
  /** A connection of the nemesis's own, for one command. */
  const command = async (run: (r: Redis) => Promise<unknown>) => {
    const r = new Redis(url, { maxRetriesPerRequest: 0, lazyConnect: true })
    await r.connect().catch(() => undefined)
    await run(r).catch(() => undefined)
    r.disconnect()
  }
  return {
    layer: RedisChronicle.layer({ prefix, partitions }).pipe(
      Layer.provide(RedisClient.layer({ url, commandTimeout: `${commandTimeoutMs} millis` }))
    ),
    consumerEnv: { BACKEND: "redis", URL: url, PREFIX: prefix },
    faults: [
      { name: "client-kill", run: () => command((r) => r.client("KILL", "TYPE", "normal")) },
      {
        name: "pause",
        run: async () => {
          await command((r) => r.client("PAUSE", commandTimeoutMs + 500))
          await sleep(commandTimeoutMs + 500)
        }
      },
      {
        name: "restart",
        run: async () => {
          const old = server.process
          old.kill("SIGTERM")
          await new Promise((r) => (old.exitCode !== null || old.signalCode !== null ? r(undefined) : old.once("exit", r)))
          await waitFor(`port ${port} to close`, async () => (await ping(port, 200)) === "", 5000).catch(() => undefined)
          server = await startRedisServer({ port, dir, args })
        }
      }
    ],
    diagnose: async () => [],
    stop: () => server.stop()
  }
}

/** The longest an append waits for its partition's lock, and for its reply, on PostgreSQL: past the reply's, its outcome is unknown. */
const pgTimeouts = (commandTimeoutMs: number) => ({ lockTimeoutMs: Math.floor(commandTimeoutMs / 2), appendTimeoutMs: commandTimeoutMs })

/** The store on PostgreSQL as the scenario's processes build it: the harness here, the consumers in checkedConsumer.ts. */
export const postgresLayer = (options: {
  readonly url: string
  readonly schema: string
  readonly partitions: number
  readonly commandTimeoutMs: number
  readonly appendTimeoutMs: number
  readonly lockTimeoutMs: number
  readonly applicationName: string
}) =>
  PostgresChronicle.layer({
    schema: options.schema,
    partitions: options.partitions,
    commandTimeout: Duration.millis(options.commandTimeoutMs),
    appendTimeout: Duration.millis(options.appendTimeoutMs),
    lockTimeout: Duration.millis(options.lockTimeoutMs)
  }).pipe(
    Layer.provide(PgClient.layer({
      url: Redacted.make(options.url),
      maxConnections: 10,
      // a connection that cannot be had (a frozen server) fails instead of waiting for good
      connectTimeout: Duration.millis(Math.max(5000, options.commandTimeoutMs * 5)),
      applicationName: options.applicationName
    }))
  )

export const startPostgresBackend = async (settings: BackendSettings): Promise<RunningBackend> => {
  const { partitions, commandTimeoutMs } = settings
  // a server of our own even when DATABASE_URL is set: the nemesis signals and restarts it
  const server = await startPostgresServer({ private: true })
  const schema = settings.name
  const { appendTimeoutMs, lockTimeoutMs } = pgTimeouts(commandTimeoutMs)
  /** A connection of the nemesis's own, for one statement: its rows, or none when it failed. */
  const statement = async (text: string, params: ReadonlyArray<unknown> = []): Promise<ReadonlyArray<Record<string, unknown>>> => {
    const c = new pg.Client({ connectionString: server.url, connectionTimeoutMillis: 5000, application_name: "chronicle-nemesis" })
    c.on("error", () => undefined)
    try {
      await c.connect()
      return (await c.query(text, params as Array<unknown>)).rows
    } catch {
      // the server may be restarting: this fault then did nothing more
      return []
    } finally {
      await c.end().catch(() => undefined)
    }
  }
  return {
    layer: postgresLayer({ url: server.url, schema, partitions, commandTimeoutMs, appendTimeoutMs, lockTimeoutMs, applicationName: "chronicle-harness" }),
    consumerEnv: {
      BACKEND: "postgres",
      DATABASE_URL: server.url,
      SCHEMA: schema,
      APPEND_TIMEOUT_MS: String(appendTimeoutMs),
      LOCK_TIMEOUT_MS: String(lockTimeoutMs)
    },
    faults: [
      {
        name: "terminate",
        run: async () => {
          await statement(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`)
        }
      },
      {
        name: "freeze",
        run: async () => {
          const [postmaster] = server.pids()
          if (postmaster === undefined) return
          // the postmaster first: stopped, it forks nothing and reaps nothing, so the
          // children listed next keep their PIDs until it runs again
          signal(postmaster, "SIGSTOP")
          const children = server.pids().slice(1)
          try {
            for (const pid of children) signal(pid, "SIGSTOP")
            await sleep(commandTimeoutMs + 500)
          } finally {
            for (const pid of children) signal(pid, "SIGCONT")
            signal(postmaster, "SIGCONT")
          }
        }
      },
      { name: "restart", run: () => server.restart() }
    ],
    diagnose: async (group) => {
      const rows = await statement(
        `SELECT partition, owner, epoch, fence, delivered, acked, lease_until > clock_timestamp() AS leased,
           (SELECT count(*) FROM "${schema}".acks a WHERE a.grp = gp.grp AND a.partition = gp.partition) AS acks_above
         FROM "${schema}".group_partitions gp WHERE grp = $1 ORDER BY partition`,
        [group]
      )
      return rows.map((r) =>
        `partition ${r.partition}: owner ${r.owner ?? "none"} epoch ${r.epoch} (${r.leased ? "leased" : "not leased"}), fence ${r.fence}, delivered ${r.delivered}, checkpoint ${r.acked}, acknowledged above it ${r.acks_above}`
      )
    },
    stop: () => server.stop()
  }
}

export const startBackend = (name: BackendName, settings: BackendSettings): Promise<RunningBackend> =>
  name === "postgres" ? startPostgresBackend(settings) : startRedisBackend(settings)
