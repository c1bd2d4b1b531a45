/**
 * Redis connections for the Redis backend, as a scoped service: a shared auto-pipelined
 * connection for reads and small commands, and, on demand, dedicated connections (the
 * append coalescer, then WAIT) and blocking ones (live reads, consumer groups), each
 * closed with the scope that asked for it.
 *
 * Every connection runs with no offline queue and no resend of commands already written
 * to the socket, so nothing is replayed behind the caller's back; every call has an
 * Effect timeout.
 *
 * @since 0.1.0
 */
import { Config, type ConfigError, Context, Duration, Effect, Layer, Redacted, Schema, type Scope } from "effect"
import { Redis, type RedisOptions as IORedisOptions } from "ioredis"
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
    /** The shared, auto-pipelined connection: reads, registry, small commands. */
    readonly shared: Redis
    /** A new connection without auto-pipelining, closed with the scope. */
    readonly dedicated: (role: string) => Effect.Effect<Redis, RedisConnectionError, Scope.Scope>
    /** A new connection for blocking commands, closed with the scope. */
    readonly blocking: (role: string) => Effect.Effect<Redis, RedisConnectionError, Scope.Scope>
    /** Runs one call with the command timeout, mapping failures to typed errors. */
    readonly call: <A>(operation: string, f: (redis: Redis) => Promise<A>, connection?: Redis) => Effect.Effect<A, CallError>
    /** Runs a blocking call: the timeout is the command's own block time plus the command timeout. */
    readonly callBlocking: <A>(
      operation: string,
      connection: Redis,
      block: Duration.Duration,
      f: (redis: Redis) => Promise<A>
    ) => Effect.Effect<A, CallError>
    readonly commandTimeout: Duration.Duration
    /** The server's URL without its password, for messages. */
    readonly url: string
    /** The last connection-level error seen on a connection (a TLS failure, say). */
    readonly lastError: (connection: Redis) => string | undefined
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

const errors = new WeakMap<Redis, string>()

/** Failures to connect that pass by themselves: nothing listening yet, a reset, a server loading or stopping. */
const isPassingConnectFailure = (reason: string): boolean =>
  /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|Connection is closed|LOADING|no connection within|socket hang up/i.test(reason) &&
  !/WRONGPASS|NOAUTH|NOPERM|invalid password|certificate|CERT_|self.signed|ENOTFOUND|EAI_AGAIN/i.test(reason)

/**
 * Builds the client from options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<RedisClient.Service, RedisConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    const rawUrl = options.url === undefined ? "redis://127.0.0.1:6379" : typeof options.url === "string" ? options.url : Redacted.value(options.url)
    const url = redactUrl(rawUrl)
    const invalid = checkUrl(rawUrl)
    if (invalid !== undefined) return yield* new RedisConnectionError({ url: invalid.shown, reason: invalid.reason })
    const commandTimeout = Duration.decode(options.commandTimeout ?? "5 seconds")
    const connectTimeout = Duration.decode(options.connectTimeout ?? "5 seconds")
    const password = options.password ? Redacted.value(options.password) : (() => {
      try {
        return decodeURIComponent(new URL(rawUrl).password) || undefined
      } catch {
        return undefined
      }
    })()
    const scrub = (s: string) => (password ? s.split(password).join("***") : s)

    const base: IORedisOptions = {
      lazyConnect: true,
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0,
      enableReadyCheck: options.readyCheck ?? true,
      connectTimeout: Duration.toMillis(connectTimeout),
      retryStrategy: (times) => Math.min(50 * times, 1000),
      ...(options.username !== undefined ? { username: options.username } : {}),
      ...(options.password !== undefined ? { password: Redacted.value(options.password) } : {}),
      ...(options.tls !== undefined || rawUrl.startsWith("rediss:")
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
    }

    /** One attempt: a connected client, or why not (the server's own words, scrubbed). */
    const attempt = (role: string, autoPipelining: boolean, budget: Duration.Duration) =>
      Effect.suspend(() => {
        const redis = new Redis(rawUrl, {
          ...base,
          enableAutoPipelining: autoPipelining,
          ...(options.connectionName !== undefined ? { connectionName: `${options.connectionName}:${role}` } : {})
        })
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
            return Effect.fail({ reason: seen !== undefined && seen !== direct ? `${seen} (${direct})` : direct, passing: isPassingConnectFailure(seen ?? direct) })
          })
        )
      })

    /**
     * A connection, tried again while the failure is one that passes (the server
     * restarting, not listening yet, loading) until `connectTimeout` is spent; a wrong
     * password, a refused certificate or an unknown host fails at once.
     */
    const connect = (role: string, autoPipelining: boolean, graceful = true) =>
      Effect.acquireRelease(
        Effect.gen(function*() {
          const deadline = Date.now() + Duration.toMillis(connectTimeout)
          for (let n = 0;; n++) {
            const left = Math.max(1, deadline - Date.now())
            const r = yield* Effect.either(attempt(role, autoPipelining, Duration.millis(left)))
            if (r._tag === "Right") return r.right
            const wait = Math.min(1000, 50 * 2 ** Math.min(n, 10))
            if (!r.left.passing || Date.now() + wait >= deadline) return yield* new RedisConnectionError({ url, reason: r.left.reason })
            yield* Effect.sleep(Duration.millis(wait)).pipe(Effect.withClock(liveClock))
          }
        }),
        (redis) =>
          graceful
            ? Effect.promise(() => redis.quit().catch(() => "")).pipe(
              Effect.timeout("1 second"),
              Effect.ignore,
              Effect.ensuring(Effect.sync(() => redis.disconnect()))
            )
            // a blocking connection may be waiting in a read: QUIT would queue behind it
            : Effect.sync(() => redis.disconnect())
      )

    const shared = yield* connect("shared", true)

    const call = <A>(operation: string, f: (redis: Redis) => Promise<A>, connection: Redis = shared) =>
      Effect.tryPromise({ try: () => f(connection), catch: (cause) => cause }).pipe(
        Effect.timeoutFail({ duration: commandTimeout, onTimeout: () => new Error(`no reply within ${Duration.format(commandTimeout)}`) }),
        Effect.mapError((cause) => mapCallError(operation, withConnectionCause(connection, cause), password))
      )

    const callBlocking = <A>(operation: string, connection: Redis, block: Duration.Duration, f: (redis: Redis) => Promise<A>) =>
      Effect.tryPromise({ try: () => f(connection), catch: (cause) => cause }).pipe(
        Effect.timeoutFail({ duration: Duration.sum(block, commandTimeout), onTimeout: () => new Error("no reply to a blocking read in time") }),
        Effect.mapError((cause) => mapCallError(operation, withConnectionCause(connection, cause), password))
      )

    const withConnectionCause = (connection: Redis, cause: unknown) => {
      const m = messageOf(cause)
      const seen = errors.get(connection)
      return seen !== undefined && /Connection is closed|Stream isn't writeable/.test(m) ? new Error(`${m} (${seen})`) : cause
    }

    return RedisClient.of({
      shared,
      dedicated: (role) => connect(role, false),
      blocking: (role) => connect(role, false, false),
      call,
      callBlocking,
      commandTimeout,
      url,
      lastError: (connection) => errors.get(connection)
    })
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
