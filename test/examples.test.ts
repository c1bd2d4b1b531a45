/**
 * The examples and the README, as a user meets them: `npm start`, the quick start copied
 * from the README, the shipment-tracking roles as separate processes on Redis (with the
 * transit process killed and restarted), and the inventory example's deciders.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Stream } from "effect"
import { EventStore } from "effect-chronicle"
import { DeciderSpec } from "effect-chronicle/testing"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Inventory, InventoryItem, ItemDeactivated, ItemNotFound, NotEnoughStock, SameName } from "../examples/inventory/domain.js"
import { postgresFile } from "./support/postgres.js"
import { redisStore, redisUrl, uniquePrefix, withoutRedisUrl } from "./support/redis.js"

const root = fileURLToPath(new URL("..", import.meta.url))
/** The environment of an example run in memory: neither REDIS_URL nor DATABASE_URL. */
const inMemory = (): Record<string, string> => {
  const { DATABASE_URL: _, ...env } = withoutRedisUrl()
  return env
}
const tsx = (script: string, env: Record<string, string> = {}) =>
  spawn(process.execPath, ["--import", "tsx", script], { cwd: root, env: { ...inMemory(), ...env }, stdio: ["ignore", "pipe", "pipe"] })
const { server: postgres, schemas } = postgresFile()

const finished = (child: ChildProcess) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    let stdout = ""
    let stderr = ""
    child.stdout!.on("data", (c) => (stdout += c.toString()))
    child.stderr!.on("data", (c) => (stderr += c.toString()))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

const steps = (order: string) => [
  new RegExp(`^${order}: placed `, "m"),
  new RegExp(`^${order}: packing at station A$`, "m"),
  new RegExp(`^${order}: on delivery by bike$`, "m"),
  new RegExp(`^${order}: received, signed by the customer$`, "m")
]

describe("examples", () => {
  it.live("npm start runs shipment tracking in memory, prints the four changes of every order and exits 0", () =>
    Effect.gen(function*() {
      const run = yield* Effect.promise(() => finished(spawn("npm", ["start", "--silent"], { cwd: root, env: inMemory() })))
      expect(run.code, run.stderr).toBe(0)
      for (let i = 1; i <= 5; i++) for (const step of steps(`order-${i}`)) expect(run.stdout).toMatch(step)
      expect(run.stdout).toContain("every order was received")
    }), 60_000)

  it.live("with DATABASE_URL set, npm start runs the same program on PostgreSQL", () =>
    Effect.gen(function*() {
      const pg = yield* Effect.promise(() => postgres.get())
      const schema = pg.freshSchema("shipments")
      schemas.add(schema)
      const env = { ...inMemory(), DATABASE_URL: pg.url, CHRONICLE_PG_SCHEMA: schema }
      const run = yield* Effect.promise(() => finished(spawn("npm", ["start", "--silent"], { cwd: root, env })))
      expect(run.code, run.stderr).toBe(0)
      for (let i = 1; i <= 5; i++) for (const step of steps(`order-${i}`)) expect(run.stdout).toMatch(step)
      expect(run.stdout).toContain("every order was received")
    }), 90_000)

  it.live("every TypeScript block of the README is a complete program that compiles and runs, or an excerpt found as is in an example a test runs", () =>
    Effect.gen(function*() {
      const readme = readFileSync(`${root}/README.md`, "utf8")
      const blocks = Array.from(readme.matchAll(/(?:<!-- excerpt: (\S+) -->\n)?```ts\n([\s\S]*?)```/g), (m) => ({ excerptOf: m[1], code: m[2]! }))
      expect(blocks.length).toBeGreaterThan(5)
      // the examples the tests below (and this one) run
      const exercised = [
        "examples/shipment-tracking/roles.ts",
        "examples/inventory/domain.ts",
        "examples/inventory/main.ts",
        "examples/inventory/readModels.ts",
        "examples/delivery-checker/main.ts",
        "examples/live-reads/main.ts"
      ]
      const complete: Array<string> = []
      for (const { code, excerptOf } of blocks) {
        if (excerptOf !== undefined) {
          expect(exercised, `${excerptOf} is run by a test`).toContain(excerptOf)
          expect(readFileSync(`${root}/${excerptOf}`, "utf8").includes(code), `an excerpt of ${excerptOf} as it stands:\n${code}`).toBe(true)
        } else complete.push(code)
      }
      mkdirSync(`${root}/.tmp/readme`, { recursive: true })
      complete.forEach((code, i) => writeFileSync(`${root}/.tmp/readme/block${i}.ts`, code))
      writeFileSync(`${root}/.tmp/readme/tsconfig.json`, JSON.stringify({ extends: "../../tsconfig.json", include: ["*.ts"], compilerOptions: { noUnusedLocals: false } }))
      const typecheck = spawnSync(process.execPath, [`${root}/node_modules/typescript/bin/tsc`, "-p", `${root}/.tmp/readme/tsconfig.json`], { cwd: root, encoding: "utf8" })
      expect(typecheck.stdout + typecheck.stderr).toBe("")
      expect(typecheck.status).toBe(0)
      const outputs: Array<string> = []
      for (let i = 0; i < complete.length; i++) {
        const run = yield* Effect.promise(() => finished(tsx(`.tmp/readme/block${i}.ts`)))
        expect(run.code, run.stderr).toBe(0)
        outputs.push(run.stdout)
      }
      // the quick start prints what it read
      expect(outputs[0]).toBe("shipments-order-1 v1: OrderPlaced\nshipments-order-1 v2: Packing\n")
    }), 120_000)

  it.live("the live-reads example follows one order and counts from the category's end, in memory and on Redis", () =>
    Effect.gen(function*() {
      const expected = "v1 Placed\n-- up to date at v1 --\nv2 Packed\nv3 Shipped\nevents since the report asked: 51\n"
      const memory = yield* Effect.promise(() => finished(tsx("examples/live-reads/main.ts")))
      expect(memory.code, memory.stderr).toBe(0)
      expect(memory.stdout).toBe(expected)
      const redis = yield* Effect.promise(() => finished(tsx("examples/live-reads/main.ts", { REDIS_URL: redisUrl() })))
      expect(redis.code, redis.stderr).toBe(0)
      expect(redis.stdout).toBe(expected)
    }), 60_000)

  it.live("the delivery checker example finds every event handled, in order", () =>
    Effect.gen(function*() {
      const run = yield* Effect.promise(() => finished(tsx("examples/delivery-checker/main.ts")))
      expect(run.code, run.stderr).toBe(0)
      expect(run.stdout).toBe("handled 200 of 200; order violations 0, lost 0, late starts 0\n")
    }), 60_000)

  it.live("the inventory example runs commands and prints its read models", () =>
    Effect.gen(function*() {
      const run = yield* Effect.promise(() => finished(tsx("examples/inventory/main.ts")))
      expect(run.code, run.stderr).toBe(0)
      expect(run.stdout).toContain("removing 100 lamps: NotEnoughStock")
      expect(run.stdout).toContain("lamp: Desk lamp, 7 in stock, version 3")
      expect(run.stdout).toContain("chair: Office chair (deactivated), 0 in stock, version 3")
    }), 60_000)

  it.live("on Redis, producer, transit and reporter run as separate processes; transit killed with SIGKILL and restarted loses nothing", () =>
    Effect.gen(function*() {
      const url = redisUrl()
      const prefix = uniquePrefix("ship")
      const env = { REDIS_URL: url, CHRONICLE_PREFIX: prefix }
      const started: Array<ChildProcess> = []
      const start = (role: string, extra: Record<string, string> = {}) => {
        const child = tsx(`examples/shipment-tracking/${role}.ts`, { ...env, ...extra })
        started.push(child)
        return child
      }
      yield* Effect.addFinalizer(() => Effect.sync(() => started.forEach((c) => c.exitCode === null && c.kill("SIGKILL"))))
      const reporter = start("reporter")
      const reported = finished(reporter)
      let reporterOutput = ""
      reporter.stdout!.on("data", (c) => (reporterOutput += c.toString()))
      const transit = start("transit")
      const producer = start("producer", { ORDERS: "20", PAUSE_MS: "100" })
      const produced = finished(producer)
      const ctx = yield* Layer.build(redisStore(url, { prefix }))
      const store = yield* Effect.provide(EventStore.EventStore, ctx)
      const orderEvents = (i: number) => Effect.map(Stream.runCollect(store.read(`shipments-order-${i}`)), Chunk.toReadonlyArray)
      // let a few orders through, then kill transit in the middle of the flow
      for (let i = 0; i < 300 && (yield* orderEvents(3)).length < 4; i++) yield* Effect.sleep("50 millis")
      transit.kill("SIGKILL")
      expect((yield* Effect.promise(() => produced)).code).toBe(0)
      start("transit")
      for (let i = 1; i <= 20; i++) {
        for (let t = 0; t < 600 && (yield* orderEvents(i)).length < 4; t++) yield* Effect.sleep("50 millis")
        const events = yield* orderEvents(i)
        expect(events.map((e) => e.type), `order-${i}`).toEqual(["OrderPlaced", "Packing", "OnDelivery", "OnReceived"])
      }
      for (let t = 0; t < 600 && !reporterOutput.includes("order-20: received"); t++) yield* Effect.sleep("50 millis")
      for (let i = 1; i <= 20; i++) for (const step of steps(`order-${i}`)) expect(reporterOutput).toMatch(step)
      reporter.kill("SIGTERM")
      yield* Effect.promise(() => reported)
    }).pipe(Effect.scoped), 120_000)

  describe("inventory deciders", () => {
    const spec = DeciderSpec.make(InventoryItem)
    const created = Inventory.make.ItemCreated({ name: "Lamp" })

    it.effect("create", () => spec.given([]).when({ _tag: "Create", name: "Lamp" }).then([created]))
    it.effect("check in", () => spec.given([created]).when({ _tag: "CheckIn", count: 3 }).then([Inventory.make.ItemsCheckedIn({ count: 3 })]))
    it.effect("remove what is there", () =>
      spec.given([created, Inventory.make.ItemsCheckedIn({ count: 3 })]).when({ _tag: "Remove", count: 2 }).then([Inventory.make.ItemsRemoved({ count: 2 })]))
    it.effect("remove more than there is", () =>
      spec.given([created, Inventory.make.ItemsCheckedIn({ count: 3 })]).when({ _tag: "Remove", count: 4 }).thenFails(new NotEnoughStock({ inStock: 3, requested: 4 })))
    it.effect("rename to the same name", () => spec.given([created]).when({ _tag: "Rename", name: "Lamp" }).thenFails(new SameName()))
    it.effect("rename", () => spec.given([created]).when({ _tag: "Rename", name: "Desk lamp" }).then([Inventory.make.ItemRenamed({ name: "Desk lamp" })]))
    it.effect("deactivate, then check in", () =>
      spec.given([created, Inventory.make.ItemDeactivated({})]).when({ _tag: "CheckIn", count: 1 }).thenFails(new ItemDeactivated()))
    it.effect("a missing item", () => spec.given([]).when({ _tag: "Deactivate" }).thenFails(new ItemNotFound()))
  })
})
