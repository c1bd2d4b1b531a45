/**
 * Redis connections for the Redis backend, as a scoped service: a shared auto-pipelined
 * connection for reads and small commands, and, on demand, dedicated connections (the
 * append coalescer, then WAIT) and blocking ones (live reads, consumer groups), each
 * closed with the scope that asked for it. On a Redis Cluster (`layerCluster`) each of
 * them is an ioredis `Cluster`: commands go to the master of their keys' slot, and
 * MOVED, ASK and failovers are followed.
 *
 * Every connection runs with no offline queue and no resend of commands already written
 * to the socket, so nothing is replayed behind the caller's back; every call has an
 * Effect timeout.
 *
 * @since 0.1.0
 */
import { Config, type ConfigError, Context, Duration, Effect, Layer, Redacted, Schema, type Scope } from "effect"
import { Cluster, type ClusterOptions as IOClusterOptions, Redis, type RedisOptions as IORedisOptions } from "ioredis"
import { PermissionDenied, StoreUnavailable, WrongKeyType } from "../EventStore.js"
import { liveClock } from "../internal/util.js"

/**
 * TLS settings for `rediss://` URLs.
 *
 * @since 0.1.0
 * @category models
 */
export interface TlsOptions {
  /** PEM certificate(s) of the CA(s) to trust. */
  readonly ca?: string | undefined
  readonly cert?: string | undefined
  readonly key?: Redacted.Redacted<string> | undefined
  readonly servername?: string | undefined
  readonly rejectUnauthorized?: boolean | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** `redis://` or `rediss://` (TLS) URL; it may carry user and password. Default `redis://127.0.0.1:6379`. */
  readonly url?: string | Redacted.Redacted<string> | undefined
  readonly username?: string | undefined
  readonly password?: Redacted.Redacted<string> | undefined
  readonly tls?: TlsOptions | undefined
  /** Timeout of every command (default 5 seconds). */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** Timeout of a connection attempt (default 5 seconds). */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Wait for INFO to report the server ready (default true; ACL users without INFO need false). */
  readonly readyCheck?: boolean | undefined
  /** A name given to every connection (CLIENT SETNAME), suffixed with its role. */
  readonly connectionName?: string | undefined
}

/**
 * A node of a Redis Cluster to connect to first; the client finds the others.
 *
 * @since 0.2.0
 * @category models
 */
export interface ClusterNode {
  readonly host: string
  readonly port: number
}

/**
 * @since 0.2.0
 * @category models
 */
export interface ClusterOptions extends Omit<Options, "url"> {
  /** Some nodes of the cluster (one that answers is enough): `host:port` strings or `{ host, port }`. */
  readonly nodes: ReadonlyArray<string | ClusterNode>
}

/**
 * One connection of the client: a server's, or a Redis Cluster's (which routes each
 * command to the master of its keys' slot).
 *
 * @since 0.2.0
 * @category models
 */
export type Connection = Redis | Cluster

/**
 * A connection could not be established. The message names the server (never its
 * password) and the underlying cause (a TLS certificate error, say).
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisConnectionError extends Schema.TaggedError<RedisConnectionError>()("RedisConnectionError", {
  url: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `cannot connect to ${this.url}: ${this.reason}`
  }
}

/**
 * The kinds of failure a Redis call maps to.
 *
 * @since 0.1.0
 * @category errors
 */
export type CallError = StoreUnavailable | PermissionDenied | WrongKeyType

/**
 * @since 0.1.0
 */
export declare namespace RedisClient {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /** Whether the server is a Redis Cluster: then every command's keys must share a slot. */
    readonly cluster: boolean
    /** The shared, auto-pipelined connection: reads, registry, small commands. */
    readonly shared: Connection
    /** A new connection without auto-pipelining, closed with the scope. */
    readonly dedicated: (role: string) => Effect.Effect<Connection, RedisConnectionError, Scope.Scope>
    /** A new connection for blocking commands, closed with the scope. */
    readonly blocking: (role: string) => Effect.Effect<Connection, RedisConnectionError, Scope.Scope>
    /** A new connection for sharded subscriptions (SSUBSCRIBE; on a cluster, to each shard), closed with the scope. */
    readonly subscriber: (role: string) => Effect.Effect<Connection, RedisConnectionError, Scope.Scope>
    /** Runs one call with the command timeout, mapping failures to typed errors. */
    readonly call: <A>(operation: string, f: (redis: Connection) => Promise<A>, connection?: Connection) => Effect.Effect<A, CallError>
    /** Runs a blocking call: the timeout is the command's own block time plus the command timeout. */
    readonly callBlocking: <A>(
      operation: string,
      connection: Connection,
      block: Duration.Duration,
      f: (redis: Connection) => Promise<A>
    ) => Effect.Effect<A, CallError>
    readonly commandTimeout: Duration.Duration
    /** The server's URL without its password (on a cluster, its seed nodes), for messages. */
    readonly url: string
    /** The last connection-level error seen on a connection (a TLS failure, say). */
    readonly lastError: (connection: Connection) => string | undefined
  }
}

/**
 * @since 0.1.0
 * @category tags
 */
export class RedisClient extends Context.Tag("effect-chronicle/redis/RedisClient")<RedisClient, RedisClient.Service>() {}

/** Why a URL cannot be a Redis URL (not a URL, another scheme, no host), if it cannot. */
const checkUrl = (raw: string): { readonly shown: string; readonly reason: string } | undefined => {
  let parsed: URL
  try {
    parsed = new URL(raw)
  } catch {
    return { shown: JSON.stringify(redactUrl(raw).slice(0, 80)), reason: "not a URL (expected redis://host:port or rediss://host:port)" }
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    return { shown: redactUrl(raw), reason: `${parsed.protocol}// is not a Redis URL scheme (expected redis:// or rediss://)` }
  }
  if (parsed.hostname === "") return { shown: redactUrl(raw), reason: "the URL has no host" }
  return undefined
}

/**
 * A URL with its password replaced by `***`.
 *
 * @since 0.1.0
 * @category utils
 */
export const redactUrl = (url: string): string => {
  try {
    const u = new URL(url)
    if (u.password) u.password = "***"
    return u.toString()
  } catch {
    return url.replace(/\/\/([^:@/]*):([^@/]*)@/, "//$1:***@")
  }
}

const messageOf = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** Server replies that mean "not now": the same call may succeed once the server is back, loaded, promoted or less busy. */
const PASSING = new Set(["LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "OOM", "MOVED", "ASK", "NOREPLICAS", "NOSCRIPT"])

/**
 * Whether a failed call may succeed if repeated. Failures of the connection (closed,
 * reset, not writeable, no reply in time, ioredis giving up on a request) pass by
 * themselves; an error the server replied with passes only when its code says so
 * (LOADING, BUSY, READONLY, OOM, MOVED, …); any other server error does not.
 *
 * @since 0.2.0
 * @category utils
 */
export const isPassingFailure = (cause: unknown): boolean => {
  if (!(cause instanceof Error)) return true
  if (cause.name !== "ReplyError") return true
  const code = /^([A-Z]+)/.exec(cause.message)?.[1]
  return code !== undefined && PASSING.has(code)
}

/**
 * Maps a failure of a Redis call to a typed error. NOPERM becomes `PermissionDenied`;
 * WRONGTYPE becomes `WrongKeyType`; anything else `StoreUnavailable`, retryable when
 * {@link isPassingFailure} says so. This is the one place that reads Redis's error texts.
 *
 * @since 0.1.0
 * @category utils
 */
export const mapCallError = (operation: string, cause: unknown, password?: string): CallError => {
  let reason = messageOf(cause)
  if (password) reason = reason.split(password).join("***")
  if (reason.startsWith("NOPERM")) return new PermissionDenied({ operation, reason })
  if (reason.startsWith("WRONGTYPE")) return new WrongKeyType({ key: operation, expected: "the store's type", actual: "another type" })
  return new StoreUnavailable({ operation, reason, retryable: isPassingFailure(cause) })
}

const errors = new WeakMap<Connection, string>()

/** Failures to connect that pass by themselves: nothing listening yet, a reset, a server loading or stopping. */
const isPassingConnectFailure = (reason: string): boolean =>
  /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|Connection is closed|LOADING|no connection within|socket hang up|max retries per request/i.test(reason) &&
  !/WRONGPASS|NOAUTH|NOPERM|invalid password|certificate|CERT_|self.signed|ENOTFOUND|EAI_AGAIN/i.test(reason)

/** ioredis options shared by single-server and cluster connections. */
const baseOptions = (options: Omit<Options, "url">, connectTimeout: Duration.Duration, tls: boolean): IORedisOptions => ({
  lazyConnect: true,
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
  enableReadyCheck: options.readyCheck ?? true,
  connectTimeout: Duration.toMillis(connectTimeout),
  retryStrategy: (times) => Math.min(50 * times, 1000),
  ...(options.username !== undefined ? { username: options.username } : {}),
  ...(options.password !== undefined ? { password: Redacted.value(options.password) } : {}),
  ...(options.tls !== undefined || tls
    ? {
      tls: {
        ...(options.tls?.ca !== undefined ? { ca: options.tls.ca } : {}),
        ...(options.tls?.cert !== undefined ? { cert: options.tls.cert } : {}),
        ...(options.tls?.key !== undefined ? { key: Redacted.value(options.tls.key) } : {}),
        ...(options.tls?.servername !== undefined ? { servername: options.tls.servername } : {}),
        ...(options.tls?.rejectUnauthorized !== undefined ? { rejectUnauthorized: options.tls.rejectUnauthorized } : {})
      }
    }
    : {})
})

/** What a connection is for: it decides auto-pipelining and, on a cluster, sharded subscribers. */
type Purpose = "shared" | "dedicated" | "blocking" | "subscriber"

/** The longest delay a Node timer takes (larger ones fire at once). */
const MAX_TIMER_MS = 2 ** 31 - 1

/** The client over a connection factory: retries at connect, timeouts and error mapping. */
const build = (
  shown: string,
  cluster: boolean,
  options: Omit<Options, "url">,
  password: string | undefined,
  open: (role: string, purpose: Purpose) => Connection
): Effect.Effect<RedisClient.Service, RedisConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    const commandTimeout = Duration.decode(options.commandTimeout ?? "5 seconds")
    const connectTimeout = Duration.decode(options.connectTimeout ?? "5 seconds")
    const scrub = (s: string) => (password ? s.split(password).join("***") : s)

    /** One attempt: a connected client, or why not (the server's own words, scrubbed). */
    const attempt = (role: string, purpose: Purpose, budget: Duration.Duration) =>
      Effect.suspend(() => {
        const redis = open(role, purpose)
        redis.on("error", (e: unknown) => {
          errors.set(redis, scrub(messageOf(e)))
        })
        return Effect.tryPromise({
          try: () => redis.connect(),
          catch: (cause) => cause
        }).pipe(
          Effect.timeoutFail({ duration: budget, onTimeout: () => new Error(`no connection within ${Duration.format(connectTimeout)}`) }),
          Effect.as(redis),
          Effect.catchAll((cause) => {
            const seen = errors.get(redis)
            const direct = scrub(messageOf(cause))
            redis.disconnect()
            const reason = seen !== undefined && seen !== direct ? `${seen} (${direct})` : direct
            // classified on both: a connection dropped during the ready check reports the
            // check's refusal ("max retries per request") and then "Connection is closed"
            return Effect.fail({ reason, passing: isPassingConnectFailure(reason) })
          })
        )
      })

    /**
     * A connection, tried again while the failure is one that passes (the server
     * restarting, not listening yet, loading) until `connectTimeout` is spent; a wrong
     * password, a refused certificate or an unknown host fails at once.
     */
    const connect = (role: string, purpose: Purpose) =>
      Effect.acquireRelease(
        Effect.gen(function*() {
          const deadline = Date.now() + Duration.toMillis(connectTimeout)
          for (let n = 0;; n++) {
            const left = Math.max(1, deadline - Date.now())
            const r = yield* Effect.either(attempt(role, purpose, Duration.millis(left)))
            if (r._tag === "Right") return r.right
            const wait = Math.min(1000, 50 * 2 ** Math.min(n, 10))
            if (!r.left.passing || Date.now() + wait >= deadline) return yield* new RedisConnectionError({ url: shown, reason: r.left.reason })
            yield* Effect.sleep(Duration.millis(wait)).pipe(Effect.withClock(liveClock))
          }
        }),
        (redis) =>
          purpose !== "blocking"
            ? Effect.promise(() => redis.quit().catch(() => "")).pipe(
              Effect.timeout("1 second"),
              Effect.ignore,
              Effect.ensuring(Effect.sync(() => redis.disconnect()))
            )
            // a blocking connection may be waiting in a read: QUIT would queue behind it
            : Effect.sync(() => redis.disconnect())
      )

    const shared = yield* connect("shared", "shared")

    const withConnectionCause = (connection: Connection, cause: unknown) => {
      const m = messageOf(cause)
      const seen = errors.get(connection)
      return seen !== undefined && /Connection is closed|Stream isn't writeable/.test(m) ? new Error(`${m} (${seen})`) : cause
    }

    /**
     * A command's promise as an Effect, failed as a typed error after `millis`. One
     * callback and one timer, not a fiber racing a sleep: every command of the backend
     * goes through here, and an Effect timeout costs about as much again as the rest of
     * the call. Interrupting it stops the wait, not the command (its reply is still read
     * off the connection). The timer runs on the wall clock, not on the Effect `Clock`: a
     * `TestClock` does not move it.
     */
    const awaitReply = <A>(operation: string, connection: Connection, millis: number, timedOut: () => Error, f: (redis: Connection) => Promise<A>) =>
      Effect.async<A, CallError>((resume) => {
        let done = false
        // no timer for an unbounded timeout (setTimeout would fire at once past 2^31 - 1 ms)
        const timer = Number.isFinite(millis) && millis <= MAX_TIMER_MS
          ? setTimeout(() => {
            if (done) return
            done = true
            resume(Effect.fail(mapCallError(operation, timedOut(), password)))
          }, millis)
          : undefined
        const failed = (cause: unknown) => {
          if (done) return
          done = true
          clearTimeout(timer)
          resume(Effect.fail(mapCallError(operation, withConnectionCause(connection, cause), password)))
        }
        let reply: Promise<A>
        try {
          reply = f(connection)
        } catch (cause) {
          failed(cause)
          return
        }
        reply.then((a) => {
          if (done) return
          done = true
          clearTimeout(timer)
          resume(Effect.succeed(a))
        }, failed)
        return Effect.sync(() => {
          done = true
          clearTimeout(timer)
        })
      })

    const commandMillis = Duration.toMillis(commandTimeout)
    const noReply = () => new Error(`no reply within ${Duration.format(commandTimeout)}`)
    const noBlockingReply = () => new Error("no reply to a blocking read in time")

    const call = <A>(operation: string, f: (redis: Connection) => Promise<A>, connection: Connection = shared) =>
      awaitReply(operation, connection, commandMillis, noReply, f)

    const callBlocking = <A>(operation: string, connection: Connection, block: Duration.Duration, f: (redis: Connection) => Promise<A>) =>
      awaitReply(operation, connection, Duration.toMillis(block) + commandMillis, noBlockingReply, f)

    return RedisClient.of({
      cluster,
      shared,
      dedicated: (role) => connect(role, "dedicated"),
      blocking: (role) => connect(role, "blocking"),
      subscriber: (role) => connect(role, "subscriber"),
      call,
      callBlocking,
      commandTimeout,
      url: shown,
      lastError: (connection) => errors.get(connection)
    })
  })

/**
 * Builds the client from options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<RedisClient.Service, RedisConnectionError, Scope.Scope> =>
  Effect.suspend(() => {
    const rawUrl = options.url === undefined ? "redis://127.0.0.1:6379" : typeof options.url === "string" ? options.url : Redacted.value(options.url)
    const url = redactUrl(rawUrl)
    const invalid = checkUrl(rawUrl)
    if (invalid !== undefined) return Effect.fail(new RedisConnectionError({ url: invalid.shown, reason: invalid.reason }))
    const password = options.password ? Redacted.value(options.password) : (() => {
      try {
        return decodeURIComponent(new URL(rawUrl).password) || undefined
      } catch {
        return undefined
      }
    })()
    const base = baseOptions(options, Duration.decode(options.connectTimeout ?? "5 seconds"), rawUrl.startsWith("rediss:"))
    return build(url, false, options, password, (role, purpose) =>
      new Redis(rawUrl, {
        ...base,
        enableAutoPipelining: purpose === "shared",
        ...(options.connectionName !== undefined ? { connectionName: `${options.connectionName}:${role}` } : {})
      }))
  })

/** `host:port` or `{ host, port }`, checked. */
const parseNode = (node: unknown): ClusterNode | string => {
  if (typeof node === "object" && node !== null) {
    const { host, port } = node as { readonly host?: unknown; readonly port?: unknown }
    if (typeof host === "string" && host !== "" && typeof port === "number" && Number.isInteger(port) && port > 0 && port < 65536) return { host, port }
    return `${JSON.stringify(node)} is not { host, port }`
  }
  if (typeof node !== "string") return `${String(node)} is not host:port`
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(node.trim())
  const port = m === null ? NaN : Number(m[2])
  if (m === null || !(port > 0 && port < 65536)) return `${JSON.stringify(node.slice(0, 80))} is not host:port`
  return { host: m[1]!, port }
}

/**
 * Builds a client for a Redis Cluster from some of its nodes. Every connection is an
 * ioredis `Cluster` that reads and writes on masters only, follows MOVED and ASK, and
 * refreshes its slot map after a failover; the same typed errors and redaction as
 * `make`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const makeCluster = (options: ClusterOptions): Effect.Effect<RedisClient.Service, RedisConnectionError, Scope.Scope> =>
  Effect.suspend(() => {
    const given: ReadonlyArray<unknown> = Array.isArray(options.nodes) ? options.nodes : []
    const parsed = given.map(parseNode)
    const bad = parsed.find((n): n is string => typeof n === "string")
    const nodes = parsed.filter((n): n is ClusterNode => typeof n !== "string")
    const shown = nodes.length === 0 ? "a Redis Cluster" : `redis cluster ${nodes.map((n) => `${n.host}:${n.port}`).join(",")}`
    if (bad !== undefined) return Effect.fail(new RedisConnectionError({ url: shown, reason: bad }))
    if (nodes.length === 0) return Effect.fail(new RedisConnectionError({ url: shown, reason: "no nodes given (expected host:port of at least one node)" }))
    const password = options.password ? Redacted.value(options.password) : undefined
    const connectTimeout = Duration.decode(options.connectTimeout ?? "5 seconds")
    const base = baseOptions(options, connectTimeout, false)
    const clusterOptions = (role: string, purpose: Purpose): IOClusterOptions => ({
      lazyConnect: true,
      enableOfflineQueue: false,
      enableReadyCheck: options.readyCheck ?? true,
      enableAutoPipelining: false,
      shardedSubscribers: purpose === "subscriber",
      scaleReads: "master",
      maxRedirections: 16,
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      retryDelayOnTryAgain: 100,
      retryDelayOnMoved: 0,
      slotsRefreshTimeout: Duration.toMillis(connectTimeout),
      clusterRetryStrategy: (times) => Math.min(50 * times, 1000),
      redisOptions: {
        ...base,
        ...(options.connectionName !== undefined ? { connectionName: `${options.connectionName}:${role}` } : {})
      }
    })
    return build(shown, true, options, password, (role, purpose) => new Cluster(nodes.map((n) => ({ host: n.host, port: n.port })), clusterOptions(role, purpose)))
  })

/**
 * The client as a Layer, from options.
 *
 * @example
 * ```ts
 * const Redis = RedisClient.layer({ url: "redis://127.0.0.1:6379" })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<RedisClient, RedisConnectionError> => Layer.scoped(RedisClient, make(options))

/**
 * Reads the URL from `REDIS_URL` (default `redis://127.0.0.1:6379`) and the password,
 * when set, from `REDIS_PASSWORD`, both as secrets.
 *
 * @since 0.1.0
 * @category config
 */
export const defaultConfig: Config.Config<Options> = Config.all({
  url: Config.option(Config.redacted("REDIS_URL")),
  password: Config.option(Config.redacted("REDIS_PASSWORD"))
}).pipe(
  Config.map(({ password, url }): Options => {
    // an empty REDIS_URL counts as unset
    const given = url._tag === "Some" && Redacted.value(url.value) !== "" ? url.value : Redacted.make("redis://127.0.0.1:6379")
    return password._tag === "Some" && Redacted.value(password.value) !== "" ? { url: given, password: password.value } : { url: given }
  })
)

/**
 * The client as a Layer, from `Config` (by default {@link defaultConfig}).
 *
 * @example
 * ```ts
 * const Redis = RedisClient.layerConfig({
 *   url: Config.redacted("CHRONICLE_REDIS_URL"),
 *   commandTimeout: Config.succeed("2 seconds")
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options> = defaultConfig
): Layer.Layer<RedisClient, RedisConnectionError | ConfigError.ConfigError> =>
  Layer.scoped(RedisClient, Effect.flatMap(Config.unwrap(config), make))

/**
 * The client for a Redis Cluster as a Layer, from some of its nodes.
 *
 * @example
 * ```ts
 * import { RedisClient } from "effect-chronicle/redis"
 *
 * const Redis = RedisClient.layerCluster({ nodes: ["10.0.0.1:6379", "10.0.0.2:6379"] })
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layerCluster = (options: ClusterOptions): Layer.Layer<RedisClient, RedisConnectionError> => Layer.scoped(RedisClient, makeCluster(options))

/**
 * Reads a cluster's nodes from `REDIS_CLUSTER_NODES` (`host:port` separated by commas)
 * and the password, when set, from `REDIS_PASSWORD` (a secret).
 *
 * @since 0.2.0
 * @category config
 */
export const clusterConfig: Config.Config<ClusterOptions> = Config.all({
  nodes: Config.string("REDIS_CLUSTER_NODES"),
  password: Config.option(Config.redacted("REDIS_PASSWORD"))
}).pipe(
  Config.map(({ nodes, password }): ClusterOptions => {
    const list = nodes.split(",").map((n) => n.trim()).filter((n) => n !== "")
    return password._tag === "Some" && Redacted.value(password.value) !== "" ? { nodes: list, password: password.value } : { nodes: list }
  })
)

/**
 * The cluster client as a Layer, from `Config` (by default {@link clusterConfig}).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerClusterConfig = (
  config: Config.Config.Wrap<ClusterOptions> = clusterConfig
): Layer.Layer<RedisClient, RedisConnectionError | ConfigError.ConfigError> =>
  Layer.scoped(RedisClient, Effect.flatMap(Config.unwrap(config), makeCluster))
