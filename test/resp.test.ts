import { describe, expect, it } from "@effect/vitest"
import { Command } from "ioredis"
import { prepareAppend } from "../src/internal/append.js"
import { defaultLimits } from "../src/EventStore.js"
import { encodeAppendCall } from "../src/redis/internal/resp.js"
import { APPEND } from "../src/redis/internal/scripts.js"

const pick = <A>(xs: ReadonlyArray<A>, i: number) => xs[i % xs.length]!

describe("RESP encoding of an append call", () => {
  it("writes exactly the bytes ioredis writes for the same arguments (ASCII and not)", () => {
    const entities = ["a", "order-12345", "émile", "日本語-id", "x".repeat(300), "🙂"]
    const types = ["Created", "Renamed", "Ça va", "類型"]
    const datas = [{ a: 1 }, { text: "naïve café" }, { emoji: "🙂🙂" }, { big: "z".repeat(2000) }, {}]
    for (let round = 0; round < 40; round++) {
      const batches = Array.from({ length: 1 + (round % 7) }, (_, b) => {
        const prepared = prepareAppend(
          `cat-${pick(entities, round + b)}`,
          Array.from({ length: 1 + ((round + b) % 4) }, (_, i) => ({
            eventId: crypto.randomUUID(),
            type: pick(types, round + i),
            data: pick(datas, round * 3 + i),
            ...(i % 2 === 0 ? { correlationId: `corr-${round}-é` } : {}),
            ...(i % 3 === 1 ? { eventVersion: 2 } : {})
          })),
          pick(["any", "exists", 0, 17, "no-stream"] as const, round + b),
          defaultLimits
        )
        if (prepared instanceof Error) throw prepared
        return { prepared }
      })
      const tag = `pfx:{cat:${round % 3}}`
      for (const withSource of [false, true]) {
        const ours = encodeAppendCall(APPEND, withSource, tag, `${tag}:log`, `${tag}:streams`, batches, 0)
        expect(ours).toBeDefined()
        const argv: Array<string | number> = [withSource ? APPEND.source : APPEND.sha, 2 + 2 * batches.length, `${tag}:log`, `${tag}:streams`]
        for (const { prepared } of batches) argv.push(`${tag}:ids:${prepared.entityId}`, `${tag}:s:${prepared.entityId}`)
        argv.push(batches.length)
        for (const { prepared } of batches) {
          argv.push(prepared.entityId, prepared.expected, prepared.events.length)
          for (const e of prepared.events) argv.push(e.eventId, e.type, e.data, e.meta)
        }
        const theirs = new Command(withSource ? "EVAL" : "EVALSHA", argv.map(String))
        const expected = Buffer.from(theirs.toWritable(undefined as never) as string, "utf8")
        expect((ours!.toWritable(undefined as never) as Buffer).equals(expected)).toBe(true)
      }
    }
  })
})
