/**
 * A local Redis Cluster for tests and benchmarks: `masters` masters, each with `replicas`
 * replicas, on free loopback ports (../shared/REDIS-TESTING.md has the recipe). Every
 * node is a redis-server of this process's own (stopped by its PID, and by its watchdog
 * if this process dies first).
 */
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Redis } from "ioredis"
import { freePort, type RedisServer, startRedisServer, waitFor } from "./redisServer.js"

export interface RedisCluster {
  /** Every node, masters first as created. */
  readonly nodes: ReadonlyArray<RedisServer>
  /** `host:port` of each node, for a cluster client's seed list. */
  readonly seeds: ReadonlyArray<{ readonly host: string; readonly port: number }>
  /** The node now serving `port`'s slots as master, after a failover say. */
  readonly masters: () => Promise<ReadonlyArray<number>>
  readonly stop: () => Promise<void>
}

export interface ClusterOptions {
  readonly masters?: number
  readonly replicas?: number
  readonly args?: ReadonlyArray<string>
}

const run = (cmd: string, args: ReadonlyArray<string>) =>
  new Promise<string>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    child.stdout!.on("data", (c) => (out += c))
    child.stderr!.on("data", (c) => (out += c))
    child.on("error", reject)
    child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(" ")} exited ${code}: ${out}`))))
  })

const clusterInfo = async (port: number) => {
  const r = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0 })
  try {
    await r.connect()
    return (await r.cluster("INFO")) as string
  } catch {
    return ""
  } finally {
    r.disconnect()
  }
}

export const startRedisCluster = async (options: ClusterOptions = {}): Promise<RedisCluster> => {
  const masters = options.masters ?? 3
  const replicas = options.replicas ?? 1
  const count = masters * (1 + replicas)
  const root = mkdtempSync(join(tmpdir(), "chronicle-cluster-"))
  const nodes: Array<RedisServer> = []
  try {
    for (let i = 0; i < count; i++) {
      const dir = join(root, `n${i}`)
      await run("mkdir", ["-p", dir])
      const port = await freePort()
      nodes.push(await startRedisServer({
        port,
        dir,
        args: [
          "--cluster-enabled", "yes",
          "--cluster-config-file", join(dir, "nodes.conf"),
          "--cluster-node-timeout", "1000",
          "--repl-diskless-sync-delay", "0",
          ...(options.args ?? [])
        ]
      }))
    }
    await run("redis-cli", [
      "--cluster", "create",
      ...nodes.map((n) => `127.0.0.1:${n.port}`),
      "--cluster-replicas", String(replicas),
      "--cluster-yes"
    ])
    await waitFor("the cluster to be ok on every node", async () => {
      const infos = await Promise.all(nodes.map((n) => clusterInfo(n.port)))
      return infos.every((i) => i.includes("cluster_state:ok"))
    }, 30_000)
    // every replica in sync with its master before anything is written
    await waitFor("every replica to be linked", async () => {
      const links = await Promise.all(nodes.map(async (n) => {
        const r = new Redis({ port: n.port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0 })
        try {
          await r.connect()
          const info = await r.info("replication")
          return info.includes("role:master") || info.includes("master_link_status:up")
        } catch {
          return false
        } finally {
          r.disconnect()
        }
      }))
      return links.every(Boolean)
    }, 30_000)
  } catch (error) {
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)))
    rmSync(root, { recursive: true, force: true })
    throw error
  }
  return {
    nodes,
    seeds: nodes.map((n) => ({ host: "127.0.0.1", port: n.port })),
    masters: async () => {
      const out: Array<number> = []
      for (const n of nodes) {
        const r = new Redis({ port: n.port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0 })
        try {
          await r.connect()
          if ((await r.info("replication")).includes("role:master")) out.push(n.port)
        } catch {
          // a stopped node
        } finally {
          r.disconnect()
        }
      }
      return out
    },
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)))
      rmSync(root, { recursive: true, force: true })
    }
  }
}
