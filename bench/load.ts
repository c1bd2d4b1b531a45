/**
 * Loading an aggregate of 10,000 events, with and without snapshots, on Redis.
 *
 * The aggregate is written once (100 commands of 100 events, snapshotEvery 100). Then, in
 * alternating rounds, each load runs through a freshly built Layer (new connections, no
 * in-process cache): with snapshots it reads the last snapshot and the events after it;
 * without, it replays all 10,000 events. Medians of 5 rounds each.
 *
 * Usage: npm run bench:load   (starts its own redis-server unless REDIS_URL is set)
 * Prints one JSON line at the end.
 */
import { Effect, Layer, Schema } from "effect"
import { Aggregate, Contract } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { startRedisServer } from "../test/support/redisServer.js"
import { median } from "./support.js"

const EVENTS = 10_000
const ROUNDS = 5

const Ledger = Contract.make("ledger", {
  Posted: { account: Schema.String, amount: Schema.Int, memo: Schema.String }
})

const State = Schema.Struct({ balance: Schema.Int, postings: Schema.Int })

const Account = Aggregate.make({
  contract: Ledger,
  command: Schema.Struct({ count: Schema.Int }),
  initialState: { balance: 0, postings: 0 },
  evolve: (s, e) => ({ balance: s.balance + e.amount, postings: s.postings + 1 }),
  decide: (command: { readonly count: number }) =>
    Effect.succeed(Array.from({ length: command.count }, (_, i) => Ledger.make.Posted({ account: "acc-1", amount: i % 7, memo: "a posting of the ledger" }))),
  snapshotEvery: 100,
  stateSchema: State
})
const WithoutSnapshots = { ...Account, snapshotEvery: undefined }

const layerFor = (url: string) => RedisChronicle.layer({ prefix: "bench_load" }).pipe(Layer.provide(RedisClient.layer({ url })))

const timedLoad = (url: string, agg: typeof Account) =>
  Effect.scoped(
    Effect.gen(function*() {
      const ctx = yield* Layer.build(layerFor(url))
      const start = performance.now()
      const loaded = yield* Aggregate.load(agg, "acc-1").pipe(Effect.provide(ctx))
      const ms = performance.now() - start
      if (loaded.version !== EVENTS || loaded.state.postings !== EVENTS) throw new Error(`loaded version ${loaded.version}`)
      return ms
    })
  )


const main = async () => {
  const external = process.env.REDIS_URL
  const server = external ? undefined : await startRedisServer()
  const url = external ?? server!.url
  try {
    await Effect.runPromise(
      Effect.gen(function*() {
        for (let i = 0; i < EVENTS / 100; i++) yield* Aggregate.handle(Account, "acc-1", { count: 100 })
      }).pipe(Effect.provide(layerFor(url)))
    )
    // warm-up (JIT) of both paths
    await Effect.runPromise(timedLoad(url, Account))
    await Effect.runPromise(timedLoad(url, WithoutSnapshots))
    const withSnapshots: Array<number> = []
    const without: Array<number> = []
    for (let r = 0; r < ROUNDS; r++) {
      withSnapshots.push(await Effect.runPromise(timedLoad(url, Account)))
      without.push(await Effect.runPromise(timedLoad(url, WithoutSnapshots)))
    }
    const a = median(withSnapshots)
    const b = median(without)
    console.log(JSON.stringify({
      bench: "load",
      events: EVENTS,
      with_snapshots_ms: +a.toFixed(2),
      without_snapshots_ms: +b.toFixed(2),
      ratio: +(b / a).toFixed(1)
    }))
  } finally {
    await server?.stop()
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
