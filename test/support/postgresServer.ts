/**
 * A PostgreSQL server for a test file: a private PostgreSQL 15 on a free loopback port,
 * in a fresh temporary directory, or the server in `DATABASE_URL` when it is set.
 *
 * Private servers: initdb and pg_ctl come from `pg_config --bindir` (or Debian's
 * /usr/lib/postgresql/15/bin). PostgreSQL refuses to run as root, so as root the
 * directory is given to the `postgres` user and both run through `runuser`. The server
 * is stopped with `pg_ctl -m immediate stop` (only the one started here, never the one on
 * 5432), and a watchdog ends it (by its PID) if this process dies first.
 *
 * With `DATABASE_URL`, each test file works in schemas of its own with fresh names and
 * drops only those it created.
 *
 * Fault tests need a server of their own (`startPostgresServer({ private: true })`, which
 * ignores `DATABASE_URL`): `restart()` stops it at once and starts it again on the same
 * port and data directory, and `pids()` names its processes, for signals sent by PID.
 */
import { execFile, spawn, spawnSync } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { freePort } from "./redisServer.js"

export interface PostgresServer {
  /** A connection URL (database `postgres`, user `postgres`, no password for a private server). */
  readonly url: string
  /** True for a server started here; false for `DATABASE_URL`'s. */
  readonly owned: boolean
  /** Whether `pg_stat_statements` is loaded (private servers only): statement counts can be read. */
  readonly statementStats: boolean
  /** A fresh schema name for this test file (created by whoever uses it, not here). */
  readonly freshSchema: (name: string) => string
  /** Stops a private server and removes its directory; with `DATABASE_URL`, does nothing. */
  readonly stop: () => Promise<void>
  /**
   * A private server's processes by PID, the postmaster first, then its children (none
   * for `DATABASE_URL`'s). Once the postmaster is stopped (SIGSTOP) the children's PIDs
   * cannot be reused: one that exits stays a zombie until the postmaster reaps it.
   */
  readonly pids: () => ReadonlyArray<number>
  /**
   * Stops a private server at once (`pg_ctl -m immediate stop`, as a crash would) and
   * starts it again on the same port and data directory (crash recovery included);
   * rejects for `DATABASE_URL`'s.
   */
  readonly restart: () => Promise<void>
}

export interface StartOptions {
  /** A server of this process's own even when `DATABASE_URL` is set (fault tests signal and restart it). */
  readonly private?: boolean
}

export const missingPostgresMessage =
  "PostgreSQL 15's server binaries (initdb, pg_ctl) were not found (neither `pg_config --bindir` nor /usr/lib/postgresql/15/bin has them). " +
  "Install them (Debian/Ubuntu: `apt-get install postgresql`) or set DATABASE_URL to a PostgreSQL server that tests may write to."

const run = (command: string, args: ReadonlyArray<string>, timeoutMs = 60_000): Promise<{ code: number; out: string }> =>
  new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, encoding: "utf8" }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1
      resolve({ code, out: `${stdout}${stderr}${error !== null && code === 1 ? ` ${error.message}` : ""}` })
    })
  })

/** The directory holding initdb and pg_ctl, or undefined. */
export const postgresBinDir = (): string | undefined => {
  const candidates: Array<string> = []
  const probe = spawnSync("pg_config", ["--bindir"], { encoding: "utf8" })
  if (probe.status === 0 && probe.stdout.trim() !== "") candidates.push(probe.stdout.trim())
  candidates.push("/usr/lib/postgresql/15/bin")
  return candidates.find((dir) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl")))
}

const uniqueName = (name: string) => `${name}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`

/**
 * Ends the postmaster (SIGQUIT: immediate shutdown, by its PID) and removes the directory
 * if this process dies without stopping it: a small watchdog polls this process once a
 * second, for at most six hours.
 */
const guard = (postmaster: number, dir: string) => {
  const script = `i=0; while [ $i -lt 21600 ] && kill -0 ${process.pid} 2>/dev/null && kill -0 ${postmaster} 2>/dev/null; do sleep 1; i=$((i+1)); done; ` +
    `if kill -0 ${postmaster} 2>/dev/null; then kill -QUIT ${postmaster} 2>/dev/null; sleep 2; kill -9 ${postmaster} 2>/dev/null; rm -rf '${dir}'; fi; exit 0`
  const watchdog = spawn("sh", ["-c", script], { stdio: "ignore", detached: true })
  watchdog.unref()
}

/** Starts a private PostgreSQL, or describes `DATABASE_URL`'s server. Rejects with a clear message when neither can be had. */
export const startPostgresServer = async (startOptions: StartOptions = {}): Promise<PostgresServer> => {
  const external = process.env.DATABASE_URL
  if (external !== undefined && external !== "" && startOptions.private !== true) {
    const restart = () => Promise.reject(new Error("DATABASE_URL's server is not this process's to restart"))
    return { url: external, owned: false, statementStats: false, freshSchema: uniqueName, stop: async () => undefined, pids: () => [], restart }
  }
  const bin = postgresBinDir()
  if (bin === undefined) throw new Error(missingPostgresMessage)
  const root = typeof process.getuid === "function" && process.getuid() === 0
  const dir = mkdtempSync(join(tmpdir(), "chronicle-pg-"))
  const data = join(dir, "data")
  const asPostgres = (command: string, args: ReadonlyArray<string>) =>
    root ? run("runuser", ["-u", "postgres", "--", command, ...args]) : run(command, args)
  try {
    if (root) chownSync(dir, ...postgresIds())
    const init = await asPostgres(join(bin, "initdb"), ["-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"])
    if (init.code !== 0) throw new Error(`initdb failed (exit ${init.code}): ${init.out.slice(-2000)}`)
    const port = await freePort()
    // fsync off: a throwaway server on a shared machine; what the tests check does not depend on it
    const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c shared_preload_libraries=pg_stat_statements -c max_connections=200`
    let postmaster = 0
    const start = async () => {
      const started = await asPostgres(join(bin, "pg_ctl"), ["-D", data, "-o", options, "-l", join(dir, "log"), "-w", "-t", "60", "start"])
      if (started.code !== 0) {
        const log = existsSync(join(dir, "log")) ? readFileSync(join(dir, "log"), "utf8").slice(-2000) : ""
        throw new Error(`pg_ctl start failed (exit ${started.code}): ${started.out.slice(-1000)}\n${log}`)
      }
      postmaster = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0])
      if (Number.isSafeInteger(postmaster) && postmaster > 0) guard(postmaster, dir)
      else postmaster = 0
    }
    const immediateStop = () => asPostgres(join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"])
    await start()
    let stopped = false
    const stop = async () => {
      if (stopped) return
      stopped = true
      await immediateStop()
      rmSync(dir, { recursive: true, force: true })
    }
    const restart = async () => {
      if (stopped) throw new Error("the server was stopped")
      const down = await immediateStop()
      if (down.code !== 0) throw new Error(`pg_ctl stop failed (exit ${down.code}): ${down.out.slice(-1000)}`)
      postmaster = 0
      await start()
    }
    const pids = () => (stopped || postmaster === 0 ? [] : [postmaster, ...childrenOf(postmaster)])
    return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, owned: true, statementStats: true, freshSchema: uniqueName, stop, pids, restart }
  } catch (error) {
    // a server that started (pg_ctl's own wait timed out, say) is stopped before the directory goes
    if (existsSync(join(data, "postmaster.pid"))) await asPostgres(join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"])
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
}

/** The PIDs whose parent is `parent` (from /proc). */
const childrenOf = (parent: number): Array<number> => {
  const out: Array<number> = []
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    try {
      // pid (comm) state ppid …: the command may hold spaces and parentheses
      const stat = readFileSync(`/proc/${name}/stat`, "utf8")
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      if (ppid === parent) out.push(Number(name))
    } catch {
      // the process ended meanwhile
    }
  }
  return out
}

const postgresIds = (): [number, number] => {
  const uid = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" })
  const gid = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" })
  if (uid.status !== 0 || gid.status !== 0) {
    throw new Error(`running as root, PostgreSQL needs the \`postgres\` user, which this machine lacks. ${missingPostgresMessage}`)
  }
  return [Number(uid.stdout.trim()), Number(gid.stdout.trim())]
}

/**
 * One server per test file, started on first use: `get()` starts it (once), `stop()` stops
 * it if it was started. Call `stop` from `afterAll`.
 */
export const lazyPostgresServer = () => {
  let started: Promise<PostgresServer> | undefined
  return {
    get: (): Promise<PostgresServer> => (started ??= startPostgresServer()),
    stop: async (): Promise<void> => {
      if (started === undefined) return
      const server = await started.catch(() => undefined)
      await server?.stop()
    }
  }
}
