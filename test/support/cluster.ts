/**
 * The test run's Redis Cluster (3 masters, 3 replicas), shared by the files of
 * test/cluster: started once by the first file that asks, stopped when the process ends.
 */
import { Effect, Layer } from "effect"
import type { Chronicle } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { type RedisCluster, startRedisCluster } from "./redisCluster.js"

let started: Promise<RedisCluster> | undefined = undefined

export const sharedCluster = (): Promise<RedisCluster> => {
  if (started === undefined) started = startRedisCluster({ masters: 3, replicas: 1 })
  return started
}

export const clusterStore = (cluster: RedisCluster, options: RedisChronicle.Options): Layer.Layer<Chronicle.Services, unknown> =>
  RedisChronicle.layer(options).pipe(Layer.provide(RedisClient.layerCluster({ nodes: cluster.seeds })))

/** Sum of an INFO field over every node that answers (or only the masters). */
export const overNodes = (cluster: RedisCluster, section: string, pattern: RegExp, mastersOnly = false) =>
  Effect.promise(async () => {
    let total = 0
    const masters = mastersOnly ? new Set(await cluster.masters()) : undefined
    for (const node of cluster.nodes) {
      if (masters !== undefined && !masters.has(node.port)) continue
      const r = new Redis({ host: "127.0.0.1", port: node.port, lazyConnect: true, maxRetriesPerRequest: 0 })
      try {
        await r.connect()
        const info = await r.info(section)
        for (const line of info.split("\r\n")) {
          const m = pattern.exec(line)
          if (m) total += Number(m[1])
        }
      } catch {
        // a node that is down counts nothing
      } finally {
        r.disconnect()
      }
    }
    return total
  })

/**
 * Commands the masters ran, INFO, CLUSTER and REPLCONF excluded (the probe's own, the
 * clients' slot refreshes, the replicas' acknowledgements every second): what the
 * suites' "nothing sent" checks count. Replicas are left out: they count what they
 * replicate.
 */
export const clusterCommandCount = (cluster: RedisCluster) =>
  overNodes(cluster, "commandstats", /^cmdstat_(?!info:|cluster:|replconf:)[^:]+:calls=(\d+)/, true)
