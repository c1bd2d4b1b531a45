/**
 * Vitest global setup: one redis-server on a free loopback port for the test run, or the
 * server in REDIS_URL when it is set (never flushed: tests write under fresh prefixes).
 */
import type {} from "vitest"
import type { TestProject } from "vitest/node"
import { startRedisServer } from "./redisServer.js"

declare module "vitest" {
  export interface ProvidedContext {
    redisUrl: string
    redisOwned: boolean
  }
}

export default async function setup(project: TestProject) {
  const external = process.env.REDIS_URL
  if (external !== undefined && external !== "") {
    project.provide("redisUrl", external)
    project.provide("redisOwned", false)
    return
  }
  const server = await startRedisServer()
  project.provide("redisUrl", server.url)
  project.provide("redisOwned", true)
  return async () => {
    await server.stop()
  }
}
