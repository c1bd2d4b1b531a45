import { describe, expect, it } from "@effect/vitest"
import { Duration } from "effect"
import { EventEmitter } from "node:events"
import type { Connection } from "../src/redis/RedisClient.js"
import { whenReady } from "../src/redis/internal/server.js"

/** A connection as far as `whenReady` looks at one: its status and its "ready" event. */
const fakeConnection = () => Object.assign(new EventEmitter(), { status: "reconnecting" })

describe("whenReady", () => {
  it("many calls waiting for one connection hold one listener; all go on when it is ready", async () => {
    const conn = fakeConnection()
    const waits = Array.from({ length: 50 }, () => whenReady(conn as unknown as Connection, Duration.seconds(5)))
    expect(conn.listenerCount("ready")).toBe(1)
    conn.status = "ready"
    conn.emit("ready")
    await Promise.all(waits)
    expect(conn.listenerCount("ready")).toBe(0)
    // ready now: at once, no listener
    await whenReady(conn as unknown as Connection, Duration.seconds(5))
    expect(conn.listenerCount("ready")).toBe(0)
  })

  it("a call fails after its timeout, while the others still wait, and the next ready is waited for again", async () => {
    const conn = fakeConnection()
    const short = whenReady(conn as unknown as Connection, Duration.millis(20))
    const long = whenReady(conn as unknown as Connection, Duration.seconds(5))
    await expect(short).rejects.toThrow("the connection is reconnecting, not ready")
    expect(conn.listenerCount("ready")).toBe(1)
    conn.emit("ready")
    await long
    const again = whenReady(conn as unknown as Connection, Duration.seconds(5))
    expect(conn.listenerCount("ready")).toBe(1)
    conn.emit("ready")
    await again
  })
})
