/**
 * What users install: the packed tarball, in a fresh project beside only its peers, with
 * plain node and a strict TypeScript. `npm pack` builds dist/ first (prepack).
 *   (a) a strict NodeNext TypeScript project (strict, noPropertyAccessFromIndexSignature,
 *       exactOptionalPropertyTypes, skipLibCheck false) typechecks and, compiled, appends
 *       and reads with plain node;
 *   (b) a plain .mjs does the same;
 *   (c) the testing entry imports, in a vitest run, with its optional peers present;
 *   (d) `chronicle --help` runs with plain node;
 * and a consumer process started from the built package reaches its first heartbeat
 * sooner than the same consumer through tsx (both times printed).
 * Installs use npm's cache (the project's own install filled it): no network needed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Redis } from "ioredis"
import { execFile, spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { figures } from "./support/figures.js"
import { redisUrl, uniquePrefix } from "./support/redis.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as { packages: Record<string, { version?: string }> }
const versionOf = (name: string) => lock.packages[`node_modules/${name}`]!.version!
const tsc = join(root, "node_modules", "typescript", "bin", "tsc")

const run = (command: string, args: ReadonlyArray<string>, cwd: string, env: Record<string, string | undefined> = {}) =>
  Effect.async<{ readonly code: number; readonly stdout: string; readonly stderr: string }>((resume) => {
    execFile(command, args, { cwd, env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024, timeout: 240_000 }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error ? Number((error as { code?: unknown }).code ?? 1) || 1 : 0, stdout, stderr })))
  })

const ok = <A extends { readonly code: number; readonly stdout: string; readonly stderr: string }>(what: string) => (r: A) => {
  expect(r.code, `${what}:\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`).toBe(0)
  return r
}

const program = `import { Effect, Schema, Stream, Chunk } from "effect"
import { Chronicle, Contract, EventStore } from "effect-chronicle"

const Orders = Contract.make("orders", {
  Placed: { sku: Schema.String, quantity: Schema.Int }
})

const main = Effect.gen(function*() {
  const orders = yield* EventStore.forContract(Orders)
  const result = yield* orders.append("o-1", [Orders.make.Placed({ sku: "book", quantity: 2 })], { expectedVersion: "no-stream" })
  const read = yield* Stream.runCollect(orders.read("o-1"))
  const first = Chunk.unsafeGet(read, 0)
  const event = first.event
  console.log(JSON.stringify({ version: result.lastVersion, type: event._tag, sku: event.sku, entityId: first.entityId }))
})

Effect.runPromise(main.pipe(Effect.provide(Chronicle.layerMemory)))
`

describe("the package as users install it", () => {
  it.live("npm pack, installed in a fresh project: strict TypeScript, plain node, the testing entry, the chronicle command", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "chronicle-package-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const packed = ok("npm pack")(yield* run("npm", ["pack", "--json", "--pack-destination", dir], root))
      const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as Array<{ filename: string; size: number; unpackedSize: number; files: Array<{ path: string }> }>
      const paths = info!.files.map((f) => f.path)
      expect(paths.filter((p) => /^(test|bench|examples|scratch|\.ci)\//.test(p) || p.endsWith(".tgz"))).toEqual([])
      for (const needed of ["dist/index.js", "dist/index.d.ts", "dist/redis/index.js", "dist/postgres/index.js", "dist/testing/index.js", "bin/chronicle.mjs", "LICENSE", "docs/semantics.md"]) {
        expect(paths, needed).toContain(needed)
      }
      figures(({ tarball: info!.filename, files: paths.length, size: info!.size, unpacked_size: info!.unpackedSize }))

      const app = join(dir, "app")
      mkdirSync(app)
      const peers = ["effect", "ioredis", "@effect/vitest", "vitest", "@effect/cli", "@effect/platform", "@effect/platform-node", "@types/node"]
      writeFileSync(join(app, "package.json"), JSON.stringify({
        name: "an-app",
        private: true,
        type: "module",
        dependencies: Object.fromEntries([["effect-chronicle", `file:${join(dir, info!.filename)}`], ...peers.map((p) => [p, versionOf(p)])])
      }, null, 2))
      ok("npm install")(yield* run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"], app))
      const installed = JSON.parse(readFileSync(join(app, "node_modules", "effect-chronicle", "package.json"), "utf8")) as { version: string }
      expect(installed.version).toBe(JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version)

      // (a) a strict NodeNext project: typecheck, compile, run with plain node
      writeFileSync(join(app, "tsconfig.json"), JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noPropertyAccessFromIndexSignature: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          skipLibCheck: false,
          outDir: "out",
          types: ["node"]
        },
        include: ["main.ts"]
      }))
      writeFileSync(join(app, "main.ts"), program)
      ok("tsc in the app")(yield* run(process.execPath, [tsc, "-p", "."], app))
      const compiled = ok("node out/main.js")(yield* run(process.execPath, ["out/main.js"], app))
      expect(JSON.parse(compiled.stdout.trim())).toEqual({ version: 1, type: "Placed", sku: "book", entityId: "o-1" })

      // (b) plain JavaScript
      writeFileSync(join(app, "main.mjs"), program.replace("const first = Chunk.unsafeGet(read, 0)", "const first = Chunk.unsafeGet(read, 0)"))
      const plain = ok("node main.mjs")(yield* run(process.execPath, ["main.mjs"], app))
      expect(JSON.parse(plain.stdout.trim())).toEqual({ version: 1, type: "Placed", sku: "book", entityId: "o-1" })

      // (c) the testing entry, in a vitest run (its optional peers installed)
      writeFileSync(join(app, "decider.test.mjs"), `import { it, expect } from "@effect/vitest"
import { DeliveryChecker, DeciderSpec, EventStoreSuite } from "effect-chronicle/testing"
it("the testing entry loads", () => {
  expect(typeof DeciderSpec.make).toBe("function")
  expect(typeof EventStoreSuite.conformance).toBe("function")
  expect(DeliveryChecker.check([], { expected: [] }).ok).toBe(true)
})
`)
      ok("vitest in the app")(yield* run(process.execPath, [join(app, "node_modules", "vitest", "vitest.mjs"), "run", "decider.test.mjs"], app))

      // (d) the chronicle command with plain node
      const help = ok("chronicle --help")(yield* run(process.execPath, [join(app, "node_modules", "effect-chronicle", "bin", "chronicle.mjs"), "--help"], app))
      expect(help.stdout).toContain("usage: chronicle")
      expect(help.stdout).not.toMatch(/\u001b\[/)

      // a consumer process from the built package against one through tsx: time to its first heartbeat
      const url = redisUrl()
      writeFileSync(join(app, "consumer.mjs"), `import { Effect, Layer, Schema } from "effect"
import { Contract, Subscriber } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
const [url, prefix] = process.argv.slice(2)
const Events = Contract.make("boot", { Happened: { n: Schema.Int }, Followed: { n: Schema.Int } })
const layer = RedisChronicle.layer({ prefix, partitions: 1 }).pipe(Layer.provide(RedisClient.layer({ url })))
Effect.runPromise(Subscriber.run(Events, { group: "g", leaseTtl: "3 seconds", handlers: { Happened: () => Effect.void, Followed: () => Effect.void } }).pipe(Effect.provide(layer)))
`)
      const firstHeartbeat = (args: ReadonlyArray<string>, cwd: string, prefix: string) =>
        Effect.promise(async () => {
          const redis = new Redis(url)
          const started = performance.now()
          const child = spawn(process.execPath, [...args, url, prefix], { cwd, stdio: "ignore" })
          try {
            for (;;) {
              if ((await redis.zcard(`${prefix}:{group:g}:members`)) > 0) return performance.now() - started
              if (performance.now() - started > 60_000) throw new Error("no heartbeat within 60 s")
              await new Promise((r) => setTimeout(r, 5))
            }
          } finally {
            child.kill("SIGKILL")
            redis.disconnect()
          }
        })
      const viaTsx = join(root, "test", "support", "bootConsumer.ts")
      const built = yield* firstHeartbeat(["consumer.mjs"], app, uniquePrefix("boot"))
      const sources = yield* firstHeartbeat(["--import", "tsx", viaTsx], root, uniquePrefix("boot"))
      figures(({ test: "first-heartbeat", built_ms: Math.round(built), tsx_ms: Math.round(sources) }))
      expect(built).toBeLessThan(sources + 500)
    }).pipe(Effect.scoped), 300_000)
})
