/**
 * Starts and stops redis-server processes for tests and benchmarks: loopback only, a
 * free port chosen at run time, a fresh directory, and only processes we started are
 * ever stopped (by their PID).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { createConnection, createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface RedisServer {
  readonly url: string
  readonly port: number
  readonly dir: string
  readonly process: ChildProcess
  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and removes its directory. */
  readonly stop: () => Promise<void>
}

export const missingRedisMessage =
  "redis-server is not on the PATH. Install Redis 7 (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`) " +
  "or set REDIS_URL to a Redis 7 server that tests may write to."

export const assertRedisServerAvailable = (): void => {
  const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" })
  if (probe.error !== undefined || probe.status !== 0) throw new Error(missingRedisMessage)
}

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** One PING over a raw socket: resolves with the reply line ("+PONG", "-LOADING …"), or "" when it cannot connect. */
export const ping = (port: number, timeoutMs = 500): Promise<string> =>
  new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port })
    let data = ""
    const done = (reply: string) => {
      socket.destroy()
      resolve(reply)
    }
    socket.setTimeout(timeoutMs, () => done(""))
    socket.on("error", () => done(""))
    socket.on("connect", () => socket.write("PING\r\n"))
    socket.on("data", (chunk) => {
      data += chunk.toString("utf8")
      if (data.includes("\r\n")) done(data.split("\r\n")[0]!)
    })
  })

export const waitFor = async (what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}

/**
 * Ends the server (by its PID) if this process dies without stopping it (a test runner
 * killed mid-run, say): a small watchdog polls this process once a second, for at most
 * six hours.
 */
const guard = (pid: number | undefined) => {
  if (pid === undefined) return
  const watchdog = spawn(
    "sh",
    ["-c", `i=0; while [ $i -lt 21600 ] && kill -0 ${process.pid} 2>/dev/null && kill -0 ${pid} 2>/dev/null; do sleep 1; i=$((i+1)); done; kill -9 ${pid} 2>/dev/null; exit 0`],
    { stdio: "ignore", detached: true }
  )
  watchdog.unref()
}

export interface StartOptions {
  readonly port?: number
  readonly dir?: string
  /** Extra redis-server arguments, e.g. ["--appendonly", "yes"]. */
  readonly args?: ReadonlyArray<string>
}

export const startRedisServer = async (options: StartOptions = {}): Promise<RedisServer> => {
  assertRedisServerAvailable()
  const port = options.port ?? (await freePort())
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "chronicle-redis-"))
  const ownsDir = options.dir === undefined
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, ...(options.args ?? [])],
    { stdio: ["ignore", "ignore", "pipe"] }
  )
  let stderr = ""
  child.stderr?.on("data", (c) => (stderr += c.toString()))
  let exited = false
  child.on("exit", () => (exited = true))
  guard(child.pid)
  try {
    await waitFor(`redis-server on port ${port} to answer PING`, async () => {
      if (exited) throw new Error(`redis-server exited at start: ${stderr}`)
      const reply = await ping(port)
      // a server with a password answers NOAUTH: it is up all the same
      return reply === "+PONG" || reply.startsWith("-NOAUTH")
    })
  } catch (error) {
    child.kill("SIGKILL")
    if (ownsDir) rmSync(dir, { recursive: true, force: true })
    throw error
  }
  const stop = async () => {
    if (!exited && child.pid !== undefined) {
      child.kill("SIGTERM")
      const deadline = Date.now() + 5000
      while (!exited && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
      if (!exited) child.kill("SIGKILL")
    }
    await waitFor(`port ${port} to close`, async () => (await ping(port, 200)) === "", 5000).catch(() => undefined)
    if (ownsDir) rmSync(dir, { recursive: true, force: true })
  }
  return { url: `redis://127.0.0.1:${port}`, port, dir, process: child, stop }
}
