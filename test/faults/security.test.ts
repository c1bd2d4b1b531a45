/**
 * Security (docs/semantics.md §10): a tenant fenced by an ACL key pattern cannot touch another
 * tenant's keys (NOPERM is a typed error, nothing written); TLS with a CA the test makes;
 * a wrong CA fails with a clear error; a password never appears in logs or errors.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Effect, Layer, Logger, Redacted, Stream } from "effect"
import { EventStore } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Redis } from "ioredis"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { freePort, ping, startRedisServer, waitFor } from "../support/redisServer.js"

const event = () => ({ eventId: crypto.randomUUID(), type: "Happened", data: { secret: false } })

/** A CA and a server certificate for 127.0.0.1, made with openssl in a fresh directory. */
const makeCertificates = (dir: string, name: string) => {
  const ssl = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", `/CN=${name} test CA`, "-keyout", `${name}-ca.key`, "-out", `${name}-ca.crt`)
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", `${name}-server.key`, "-out", `${name}-server.csr`)
  execFileSync("sh", ["-c", `printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > ${name}-ext.cnf`], { cwd: dir })
  ssl("x509", "-req", "-in", `${name}-server.csr`, "-CA", `${name}-ca.crt`, "-CAkey", `${name}-ca.key`, "-CAcreateserial", "-days", "1", "-extfile", `${name}-ext.cnf`, "-out", `${name}-server.crt`)
  return { ca: join(dir, `${name}-ca.crt`), cert: join(dir, `${name}-server.crt`), key: join(dir, `${name}-server.key`) }
}

describe("faults: security", () => {
  it.live("an ACL-fenced tenant cannot read or write another tenant's keys: PermissionDenied, nothing touched", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(Effect.promise(() => startRedisServer()), (s) => Effect.promise(() => s.stop()))
      const admin = new Redis(server.url)
      yield* Effect.addFinalizer(() => Effect.promise(() => admin.quit()))
      yield* Effect.promise(() => admin.call("ACL", "SETUSER", "tenantA", "on", ">pw-of-tenant-a", "~tenantA:*", "&tenantA:*", "+@all"))
      yield* Effect.promise(() => admin.call("ACL", "SETUSER", "nochannels", "on", ">pw-nc", "~nc:*", "resetchannels", "+@all"))
      const asTenantA = (prefix: string) =>
        RedisChronicle.layer({ prefix, partitions: 1 }).pipe(
          Layer.provide(RedisClient.layer({ url: server.url, username: "tenantA", password: Redacted.make("pw-of-tenant-a") }))
        )
      const own = Context.get(yield* Layer.build(asTenantA("tenantA")), EventStore.EventStore)
      expect((yield* own.append("orders-1", [event()])).lastVersion).toBe(1)
      // its live readers subscribe to channels under its prefix, which its ACL allows
      const followed = yield* own.read("orders-1", { live: true }).pipe(Stream.take(2), Stream.runCollect)
      expect(Chunk.toReadonlyArray(followed).map((x) => (EventStore.isStreamCaughtUp(x) ? "CaughtUp" : x.version))).toEqual([1, "CaughtUp"])
      // a user without channel permissions still appends; its live reader of one stream is refused, clearly
      const noChannels = Context.get(
        yield* Layer.build(RedisChronicle.layer({ prefix: "nc", partitions: 1 }).pipe(
          Layer.provide(RedisClient.layer({ url: server.url, username: "nochannels", password: Redacted.make("pw-nc") }))
        )),
        EventStore.EventStore
      )
      expect((yield* noChannels.append("orders-1", [event()])).lastVersion).toBe(1)
      expect((yield* noChannels.append("orders-1", [event()])).lastVersion).toBe(2)
      const refused = yield* Effect.flip(Stream.runDrain(noChannels.read("orders-1", { live: true })))
      expect(refused._tag).toBe("PermissionDenied")
      // tenantB's data exists; tenantA must not see or change it
      const b = Context.get(yield* Layer.build(RedisChronicle.layer({ prefix: "tenantB", partitions: 1 }).pipe(Layer.provide(RedisClient.layer({ url: server.url })))), EventStore.EventStore)
      yield* b.append("orders-1", [event()])
      const before = (yield* Effect.promise(() => admin.keys("tenantB:*"))).sort()
      const other = yield* Effect.either(Layer.build(asTenantA("tenantB")))
      if (other._tag === "Right") {
        const store = Context.get(other.right, EventStore.EventStore)
        const write = yield* Effect.flip(store.append("orders-2", [event()]))
        expect(write._tag).toBe("PermissionDenied")
        const read = yield* Effect.flip(store.partitions("orders"))
        expect(read._tag).toBe("PermissionDenied")
      }
      expect((yield* Effect.promise(() => admin.keys("tenantB:*"))).sort()).toEqual(before)
      expect(yield* Effect.promise(() => admin.xlen("tenantB:{orders:0}:log"))).toBe(1)
    }).pipe(Effect.scoped), 30_000)

  it.live("TLS with the test's own CA works; a wrong CA fails with a clear certificate error", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "chronicle-tls-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const right = makeCertificates(dir, "right")
      const wrong = makeCertificates(dir, "wrong")
      const port = yield* Effect.promise(() => freePort())
      yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const { spawn } = await import("node:child_process")
          const child = spawn("redis-server", [
            "--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
            "--tls-cert-file", right.cert, "--tls-key-file", right.key, "--tls-ca-cert-file", right.ca, "--tls-auth-clients", "no"
          ], { stdio: "ignore" })
          // a TLS port does not answer a plain PING; wait until it accepts connections
          await waitFor("the TLS port", async () => (await ping(port, 200)) !== "" || (await isListening(port)), 10_000)
          return child
        }),
        (child) => Effect.sync(() => child.kill("SIGKILL"))
      )
      const url = `rediss://127.0.0.1:${port}`
      const store = Context.get(
        yield* Layer.build(RedisChronicle.layer({ prefix: "tls" }).pipe(Layer.provide(RedisClient.layer({ url, tls: { ca: readFileSync(right.ca, "utf8") } })))),
        EventStore.EventStore
      )
      expect((yield* store.append("secure-1", [event()])).lastVersion).toBe(1)
      const failed = yield* Effect.flip(Layer.build(RedisClient.layer({ url, tls: { ca: readFileSync(wrong.ca, "utf8") }, connectTimeout: "3 seconds" })))
      expect(failed._tag).toBe("RedisConnectionError")
      expect(failed.message).toMatch(/certificate|SELF_SIGNED|verify/i)
      expect(failed.message.split("\n").length).toBe(1)
    }).pipe(Effect.scoped), 60_000)

  it.live("a seeded password never appears in logs or errors", () =>
    Effect.gen(function*() {
      const password = "seeded-Pa55word-XYZ"
      const server = yield* Effect.acquireRelease(Effect.promise(() => startRedisServer({ args: ["--requirepass", password] })), (s) => Effect.promise(() => s.stop()))
      const logs: Array<string> = []
      const capture = Logger.replace(Logger.defaultLogger, Logger.make(({ message, cause }) => logs.push(`${String(message)} ${String(cause)}`)))
      const texts: Array<string> = []
      // wrong password, password in the URL, a server that goes away: every error and log line
      const attempts = [
        RedisClient.layer({ url: server.url, password: Redacted.make("not-" + password) }),
        RedisClient.layer({ url: `redis://:${password}@127.0.0.1:1`, connectTimeout: "1 second" }),
        RedisClient.layer({ url: `redis://:x${password}@127.0.0.1:${server.port}` })
      ]
      for (const layer of attempts) {
        const e = yield* Effect.flip(Layer.build(layer).pipe(Effect.provide(capture)))
        texts.push(e.message, JSON.stringify(e), String(e))
      }
      const ok = yield* Layer.build(
        RedisChronicle.layer({ prefix: "pw" }).pipe(Layer.provideMerge(RedisClient.layer({ url: `redis://:${password}@127.0.0.1:${server.port}`, commandTimeout: "500 millis" }))),
        ).pipe(Effect.provide(capture))
      const store = Context.get(ok, EventStore.EventStore)
      yield* store.append("pw-1", [event()])
      yield* Effect.promise(() => server.stop())
      const down = yield* Effect.flip(store.append("pw-1", [event()]))
      texts.push(down.message, JSON.stringify(down))
      texts.push(Context.get(ok, RedisClient.RedisClient).url)
      for (const t of [...texts, ...logs]) expect(t).not.toContain(password)
      expect(texts.some((t) => t.includes("***"))).toBe(true)
    }).pipe(Effect.scoped), 30_000)
})

const isListening = (port: number) =>
  new Promise<boolean>((resolve) => {
    import("node:net").then(({ createConnection }) => {
      const socket = createConnection({ host: "127.0.0.1", port })
      socket.on("connect", () => {
        socket.destroy()
        resolve(true)
      })
      socket.on("error", () => resolve(false))
    })
  })
