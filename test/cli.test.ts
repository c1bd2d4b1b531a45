/**
 * The chronicle command against a real Redis: each command's output on a seeded store,
 * its --json output parsed, and bad URLs and passwords giving one line and a non-zero exit.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Schema } from "effect"
import { Contract, Producer, Projection, Subscriber } from "effect-chronicle"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { redisStore, redisUrl, uniquePrefix, withoutRedisUrl } from "./support/redis.js"
import { startRedisServer } from "./support/redisServer.js"

const url = redisUrl()
// from the sources (the package test runs the built command)
const bin = fileURLToPath(new URL("../src/bin/chronicle.ts", import.meta.url))

const chronicle = (args: ReadonlyArray<string>) =>
  Effect.promise(() =>
    new Promise<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>((resolve) => {
      // no terminal: plain text, as when piped
      const child = spawn(process.execPath, ["--import", "tsx", bin, ...args], { env: withoutRedisUrl() })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (c) => (stdout += c.toString()))
      child.stderr.on("data", (c) => (stderr += c.toString()))
      child.on("exit", (code) => resolve({ code, stdout, stderr }))
    })
  )

const Orders = Contract.make("clio", { Placed: { n: Schema.Int, email: Contract.personal(Schema.String) }, Shipped: { n: Schema.Int } })

/** One line on stderr, nothing on stdout, status 1: how every failure of the command looks. */
const failsInOneLine = (r: { readonly code: number | null; readonly stdout: string; readonly stderr: string }, pattern: RegExp) => {
  expect(r.code).toBe(1)
  expect(r.stderr.trim().split("\n")).toHaveLength(1)
  expect(r.stderr).toMatch(pattern)
  expect(r.stdout).toBe("")
}

describe("chronicle (CLI)", () => {
  it.live("streams, read, groups, dlq and projection rebuild on a seeded store, as text and as JSON", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("cli")
      const ctx = yield* Layer.build(redisStore(url, { prefix, partitions: 2 }))
      const base = ["--url", url, "--prefix", prefix]
      yield* Effect.gen(function*() {
        const producer = yield* Producer.make(Orders)
        for (let i = 0; i < 6; i++) yield* producer.Placed({ n: i, email: `person${i}@example.com` }, { entityId: `o${i % 3}` })
        // a group with one dead letter
        const sub = yield* Effect.fork(Subscriber.run(Orders, {
          group: "shipping",
          retry: undefined,
          maxDeliveries: 3,
          handlers: {
            Placed: (e) => (e.n === 4 ? Effect.die("poison") : Effect.void),
            Shipped: () => Effect.void
          }
        }))
        yield* Subscriber.awaitIdle("shipping").pipe(Effect.timeout("30 seconds"))
        // a projection with a checkpoint, left running for the rebuild
        let applied = 0
        const counter = Projection.make({
          name: "placed-count",
          contract: Orders,
          leaseTtl: 2000,
          handlers: { Placed: () => Effect.sync(() => applied++) },
          reset: Effect.sync(() => (applied = 0))
        })
        const runner = yield* Effect.fork(Projection.run(counter))
        yield* Projection.awaitCaughtUp(counter).pipe(Effect.timeout("30 seconds"))

        const streams = yield* chronicle([...base, "streams"])
        expect(streams.code).toBe(0)
        expect(streams.stdout).toContain("clio: 3 stream(s), 6 event(s), 2 partition(s)")
        expect(streams.stdout).toMatch(/clio-o0\s+v2/)
        const streamsJson = JSON.parse((yield* chronicle(["--json", ...base, "streams"])).stdout)
        expect(streamsJson[0].streams.map((s: { stream: string }) => s.stream).sort()).toEqual(["clio-o0", "clio-o1", "clio-o2"])

        const read = yield* chronicle([...base, "read", "clio-o1"])
        expect(read.code).toBe(0)
        expect(read.stdout.trim().split("\n").map((l) => l.split("  ").slice(0, 1)[0])).toEqual(["v1", "v2"])
        // personal fields masked unless asked for
        expect(read.stdout).toContain(`Placed  {"n":4,"email":"***"}`)
        expect(read.stdout).not.toContain("@example.com")
        const shown = yield* chronicle([...base, "read", "clio-o1", "--show-personal"])
        expect(shown.stdout).toContain(`Placed  {"n":4,"email":"person4@example.com"}`)
        const readJson = (yield* chronicle(["--json", ...base, "read", "clio-o1"])).stdout.trim().split("\n").map((l) => JSON.parse(l))
        expect(readJson.map((e: { data: { n: number } }) => e.data.n)).toEqual([1, 4])
        expect(readJson.every((e: { data: { email: string }; personalFields: Array<string> }) => e.data.email === "***" && e.personalFields[0] === "email")).toBe(true)
        failsInOneLine(yield* chronicle([...base, "read", "clio-nope"]), /no such stream: clio-nope/)

        const groups = yield* chronicle([...base, "groups"])
        expect(groups.code).toBe(0)
        expect(groups.stdout).toMatch(/shipping\s+clio\s+0\s+consumer:/)
        const groupsJson = JSON.parse((yield* chronicle(["--json", ...base, "groups"])).stdout)
        expect(groupsJson[0].group).toBe("shipping")
        expect(groupsJson[0].partitionStatus.reduce((n: number, p: { deadLetters: number }) => n + p.deadLetters, 0)).toBe(1)

        const list = yield* chronicle([...base, "dlq", "list", "shipping"])
        expect(list.stdout).toContain("HandlerDefect")
        const letters = JSON.parse((yield* chronicle(["--json", ...base, "dlq", "list", "shipping"])).stdout)
        expect(letters.length).toBe(1)
        const replay = yield* chronicle([...base, "dlq", "replay", "shipping", letters[0].id])
        expect(replay.stdout).toContain("1 dead letter(s) handed back to shipping")
        yield* Subscriber.awaitIdle("shipping").pipe(Effect.timeout("30 seconds"))
        // purging everything needs --all
        failsInOneLine(yield* chronicle([...base, "dlq", "purge", "shipping"]), /--all/)
        const purged = JSON.parse((yield* chronicle(["--json", ...base, "dlq", "purge", "shipping", "--all"])).stdout)
        expect(purged).toEqual({ group: "shipping", purged: 1 })

        failsInOneLine(yield* chronicle([...base, "projection", "rebuild", "placed-cuont"]), /no such projection: placed-cuont/)
        const rebuild = yield* chronicle([...base, "projection", "rebuild", "placed-count"])
        expect(rebuild.code).toBe(0)
        expect(rebuild.stdout).toContain("generation 1 started")
        expect(rebuild.stdout).toContain("100%")
        expect(rebuild.stdout).toContain("caught up")
        // without a terminal: sparse progress lines, no colours
        expect(rebuild.stdout.split("\n").filter((l) => l.startsWith("[")).length).toBeLessThanOrEqual(12)
        expect(rebuild.stdout).not.toMatch(/\u001b\[/)
        const again = JSON.parse((yield* chronicle(["--json", ...base, "projection", "rebuild", "placed-count"])).stdout)
        expect(again).toEqual({ projection: "placed-count", generation: 2, caughtUp: true })
        yield* Projection.awaitCaughtUp(counter).pipe(Effect.timeout("30 seconds"))
        expect(applied).toBe(6)
        yield* Fiber.interrupt(runner)
        yield* Fiber.interrupt(sub)
      }).pipe(Effect.provide(ctx))
    }).pipe(Effect.scoped), 120_000)

  it.live("bad input: one line, status 1, never a password", () =>
    Effect.gen(function*() {
      failsInOneLine(yield* chronicle(["--url", "not a url", "streams"]), /is not a URL/)
      failsInOneLine(yield* chronicle(["--url", "", "streams"]), /--url is empty/)
      failsInOneLine(yield* chronicle(["--url", "http://127.0.0.1:1", "streams"]), /http:\/\/ URLs are not Redis URLs/)
      failsInOneLine(yield* chronicle(["--url", "redis://:pw-in-url@", "streams"]), /no host|not a URL/)
      const help = yield* chronicle(["--help"])
      expect(help.code).toBe(0)
      expect(help.stdout).toContain("usage: chronicle")
      expect(help.stdout).not.toMatch(/user-defined piece of text|--wizard|\u001b\[/)
    }), 60_000)

  it.live("a wrong URL or password: one line, a non-zero exit, and no password in the output", () =>
    Effect.gen(function*() {
      const refused = yield* chronicle(["--url", "redis://:s3cret-pw@127.0.0.1:1", "streams"])
      expect(refused.code).not.toBe(0)
      expect(refused.stderr.trim().split("\n").length).toBe(1)
      expect(refused.stderr).toContain("cannot connect")
      expect(refused.stdout + refused.stderr).not.toContain("s3cret-pw")
      const server = yield* Effect.acquireRelease(
        Effect.promise(() => startRedisServer({ args: ["--requirepass", "the-right-one"] })),
        (s) => Effect.promise(() => s.stop())
      )
      const denied = yield* chronicle(["--url", `redis://:wrong-pw-123@127.0.0.1:${server.port}`, "groups"])
      expect(denied.code).not.toBe(0)
      expect(denied.stderr.trim().split("\n").length).toBe(1)
      expect(denied.stderr).toMatch(/WRONGPASS/)
      expect(denied.stdout + denied.stderr).not.toContain("wrong-pw-123")
      const ok = yield* chronicle(["--url", `redis://:the-right-one@127.0.0.1:${server.port}`, "groups"])
      expect([ok.code, ok.stdout.trim()]).toEqual([0, "no groups"])
      expect(ok.stdout + ok.stderr).not.toContain("the-right-one")
    }).pipe(Effect.scoped), 60_000)
})
