/**
 * Append throughput and latency through the public API, against raw ioredis in the same
 * run on the same redis-server.
 *
 * Baseline: 1000 streams, each appending one event at a time in order with its expected
 * version through a minimal Lua check-and-XADD script, on one auto-pipelined ioredis
 * connection, the payload JSON-encoded by the caller.
 * Candidate: the same workload through the public `EventStore.append` (the caller passes
 * the encoded fields, as the baseline does; the store adds the JSON encoding, limits,
 * idempotency, version, category log, id map and stream registry).
 * Typed: the same again through `EventStore.forContract(...).append`, which adds Schema
 * validation and id minting; reported beside the ratio, not in it.
 * Context: the baseline's own calls awaited from Effect fibers (`Effect.promise` in the
 * same 1000-fiber shape as the candidate), which shows what the Effect runtime alone
 * costs in this workload; reported beside the ratio, not in it.
 * Three alternating rounds of all four; the ratio is the median of the three per-round
 * candidate/baseline ratios. Latency: one awaited append at a time, p50 of each.
 *
 * Usage: npm run bench:append [-- --partitions 1 --events-per-stream 40]
 * Starts its own redis-server on a free loopback port unless REDIS_URL is set.
 * Prints one JSON line at the end.
 *
 * With `--personal`: the typed path with two fields marked `Contract.personal` (each
 * encrypted under its stream's key) beside the same typed path without personal fields,
 * three alternating rounds; the ratio is personal / plain.
 *
 * With `--cluster`: the same workload (16 partitions unless `--partitions` says
 * otherwise) on one redis-server and on a local Redis Cluster of 3 masters, started
 * side by side, in three alternating rounds; per topology the store's events/s, the raw
 * baseline's (its script loaded on every master, keys routed by the cluster client),
 * and the CPU per event of this process and of the servers together.
 *
 * With `--backend postgres`: the PostgreSQL store against the raw `pg` driver
 * (bench/append-postgres.ts).
 */
import { Chunk, Context, Effect, Layer, Schema, Stream } from "effect"
import { Contract, EventStore } from "effect-chronicle"
import { RedisChronicle, RedisClient } from "effect-chronicle/redis"
import { Cluster, Redis } from "ioredis"
import { partitionOf } from "../src/internal/ids.js"
import { startRedisCluster } from "../test/support/redisCluster.js"
import { startRedisServer } from "../test/support/redisServer.js"
import { arg, median, percentile, withCpu } from "./support.js"

const STREAMS = 1000
const PER_STREAM = arg("events-per-stream", 40)
const CLUSTER = process.argv.includes("--cluster")
const PERSONAL = process.argv.includes("--personal")
const PARTITIONS = arg("partitions", CLUSTER ? 16 : 1)
const LATENCY_SAMPLES = arg("latency-samples", 3000)
const MAX_EVENTS = arg("max-events", 0)
const IN_FLIGHT = arg("in-flight", 0)

const Bench = Contract.make("bench", {
  ItemAdded: {
    orderId: Schema.String,
    sku: Schema.String,
    quantity: Schema.Int,
    price: Schema.Number,
    note: Schema.String
  }
})
const BenchPersonal = Contract.make("benchp", {
  ItemAdded: {
    orderId: Schema.String,
    sku: Schema.String,
    quantity: Schema.Int,
    price: Schema.Number,
    note: Contract.personal(Schema.String, { forgotten: "" }),
    email: Contract.personal(Schema.String, { forgotten: "" })
  }
})
const fields = (i: number) => ({
  orderId: `order-${i}`,
  sku: "SKU-0001-ABCDEF",
  quantity: 2,
  price: 19.99,
  note: "a note long enough to make the payload about two hundred bytes in all, like a real event"
})
const payload = (i: number) => JSON.stringify(fields(i))

const BASELINE_LUA = `
local v = redis.call('XLEN', KEYS[1])
if v ~= tonumber(ARGV[1]) then return -1 end
redis.call('XADD', KEYS[1], '*', 'd', ARGV[2])
return v + 1`


/** The baseline's calls, each awaited from one of 1000 Effect fibers. */
const baselineInEffect = async (redis: Redis, run: string) => {
  const sha = (await redis.script("LOAD", BASELINE_LUA)) as string
  const start = performance.now()
  await Effect.runPromise(Effect.forEach(
    Array.from({ length: STREAMS }, (_, s) => s),
    (s) =>
      Effect.gen(function*() {
        for (let v = 0; v < PER_STREAM; v++) {
          yield* Effect.promise(() => redis.evalsha(sha, 1, `base:${run}:e${s}`, v, payload(s)))
        }
      }),
    { concurrency: "unbounded", discard: true }
  ))
  return (STREAMS * PER_STREAM) / ((performance.now() - start) / 1000)
}

const baselineRun = async (redis: Redis | Cluster, run: string) => {
  const sha = redis instanceof Cluster
    ? (await Promise.all(redis.nodes("master").map((node) => node.script("LOAD", BASELINE_LUA) as Promise<string>)))[0]!
    : (await redis.script("LOAD", BASELINE_LUA)) as string
  const start = performance.now()
  await Promise.all(
    Array.from({ length: STREAMS }, async (_, s) => {
      const key = `base:${run}:{s${s}}`
      for (let v = 0; v < PER_STREAM; v++) {
        const r = await redis.evalsha(sha, 1, key, v, payload(s))
        if (r !== v + 1) throw new Error(`baseline: unexpected reply ${String(r)}`)
      }
    })
  )
  const seconds = (performance.now() - start) / 1000
  const lengths = await Promise.all(Array.from({ length: STREAMS }, (_, s) => redis.xlen(`base:${run}:{s${s}}`)))
  if (!lengths.every((n) => n === PER_STREAM)) throw new Error("baseline: stream lengths are wrong")
  return (STREAMS * PER_STREAM) / seconds
}

type Target = string | ReadonlyArray<{ readonly host: string; readonly port: number }>

const candidateLayer = (target: Target, prefix: string) =>
  RedisChronicle.layer({
    prefix,
    partitions: PARTITIONS,
    coalescing: { maxEvents: MAX_EVENTS || undefined, maxCallsInFlight: IN_FLIGHT || undefined }
  }).pipe(Layer.provide(typeof target === "string" ? RedisClient.layer({ url: target }) : RedisClient.layerCluster({ nodes: target })))

/** The workload: every stream appended to once per version, in order, all streams at once; events/s. */
const timedWrites = <E>(append: (stream: number, version: number) => Effect.Effect<unknown, E>) =>
  Effect.gen(function*() {
    const start = performance.now()
    yield* Effect.forEach(
      Array.from({ length: STREAMS }, (_, s) => s),
      (s) =>
        Effect.gen(function*() {
          for (let v = 0; v < PER_STREAM; v++) yield* append(s, v)
        }),
      { concurrency: "unbounded", discard: true }
    )
    return (STREAMS * PER_STREAM) / ((performance.now() - start) / 1000)
  })

const candidateRun = (target: Target, prefix: string, typed: boolean) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(candidateLayer(target, prefix))
    const raw = Context.get(ctx, EventStore.EventStore)
    const store = yield* EventStore.forContract(Bench).pipe(Effect.provide(ctx))
    yield* store.append("warm", [Bench.make.ItemAdded(fields(0))])
    const eventsPerSec = yield* timedWrites((s, v) =>
      typed
        ? store.append(`s${s}`, [Bench.make.ItemAdded(fields(s))], { expectedVersion: v })
        : raw.append(`bench-s${s}`, [{ eventId: crypto.randomUUID(), type: "ItemAdded", data: fields(s) }], { expectedVersion: v })
    )
    return { eventsPerSec, partitions: yield* raw.partitions("bench") }
  }).pipe(Effect.scoped)

/**
 * p50 of one awaited append at a time, baseline and candidate alternating sample by
 * sample, so that both see the same machine (latency here is bimodal, with the CPUs'
 * idle states, and would otherwise depend on which ran when).
 */
const latency = (url: string, redis: Redis, prefix: string) =>
  Effect.gen(function*() {
    const sha = (yield* Effect.promise(() => redis.script("LOAD", BASELINE_LUA))) as string
    const ctx = yield* Layer.build(candidateLayer(url, prefix))
    const store = Context.get(ctx, EventStore.EventStore)
    const base: Array<number> = []
    const candidate: Array<number> = []
    for (let v = 0; v < LATENCY_SAMPLES; v++) {
      let t = process.hrtime.bigint()
      yield* Effect.promise(() => redis.evalsha(sha, 1, `${prefix}:base`, v, payload(v)))
      base.push(Number(process.hrtime.bigint() - t) / 1000)
      t = process.hrtime.bigint()
      yield* store.append("bench-latency", [{ eventId: crypto.randomUUID(), type: "ItemAdded", data: fields(v) }], { expectedVersion: v })
      candidate.push(Number(process.hrtime.bigint() - t) / 1000)
    }
    return { baseline: percentile(base, 0.5), candidate: percentile(candidate, 0.5) }
  }).pipe(Effect.scoped)

/** Checks what the candidate wrote: every stream at its version, id map and list sizes, log lengths. */
const verify = async (redis: Redis, prefix: string, partitions: number) => {
  const pipeline = redis.pipeline()
  for (let s = 0; s < STREAMS; s++) {
    for (let p = 0; p < partitions; p++) {
      // the stream lives in exactly one partition; look in all and require exactly one hit
      pipeline.hget(`${prefix}:{bench:${p}}:ids:s${s}`, "v")
      pipeline.hlen(`${prefix}:{bench:${p}}:ids:s${s}`)
      pipeline.llen(`${prefix}:{bench:${p}}:s:s${s}`)
    }
  }
  const replies = (await pipeline.exec())!.map(([error, value]) => {
    if (error) throw error
    return value
  })
  let i = 0
  for (let s = 0; s < STREAMS; s++) {
    let hits = 0
    for (let p = 0; p < partitions; p++) {
      const [version, hlen, llen] = [replies[i++], replies[i++], replies[i++]]
      if (version === null) continue
      hits++
      if (Number(version) !== PER_STREAM || hlen !== PER_STREAM + 1 || llen !== PER_STREAM) return false
    }
    if (hits !== 1) return false
  }
  let logged = 0
  for (let p = 0; p < partitions; p++) logged += await redis.xlen(`${prefix}:{bench:${p}}:log`)
  return logged === STREAMS * PER_STREAM + 1
}

/** verify, one command per key (each routed to its slot's master on a cluster). */
const verifyRouted = async (redis: Redis | Cluster, prefix: string) => {
  const checks = await Promise.all(Array.from({ length: STREAMS }, async (_, s) => {
    const p = partitionOf(`s${s}`, PARTITIONS)
    const [version, hlen, llen] = await Promise.all([
      redis.hget(`${prefix}:{bench:${p}}:ids:s${s}`, "v"),
      redis.hlen(`${prefix}:{bench:${p}}:ids:s${s}`),
      redis.llen(`${prefix}:{bench:${p}}:s:s${s}`)
    ])
    return Number(version) === PER_STREAM && hlen === PER_STREAM + 1 && llen === PER_STREAM
  }))
  let logged = 0
  for (let p = 0; p < PARTITIONS; p++) logged += await redis.xlen(`${prefix}:{bench:${p}}:log`)
  return checks.every(Boolean) && logged === STREAMS * PER_STREAM + 1
}

/** The typed path with two personal fields, over the usual workload: events/s, and whether it stored them sealed. */
const personalRun = (url: string, prefix: string) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(candidateLayer(url, prefix))
    const secret = yield* EventStore.forContract(BenchPersonal).pipe(Effect.provide(ctx))
    const event = (s: number) => BenchPersonal.make.ItemAdded({ ...fields(s), email: `customer${s}@example.com` })
    yield* secret.append("warm", [event(0)])
    const rate = yield* timedWrites((s, v) => secret.append(`s${s}`, [event(s)], { expectedVersion: v }))
    // what was written reads back in clear through the contract, and is stored sealed
    const raw = Context.get(ctx, EventStore.EventStore)
    const back = yield* Stream.runCollect(secret.read("s7"))
    const stored = yield* Stream.runCollect(raw.read("benchp-s7"))
    const verified = Chunk.size(back) === PER_STREAM &&
      Chunk.toReadonlyArray(back).every((r) => r.event.email === "customer7@example.com") &&
      Chunk.toReadonlyArray(stored).every((r) => !JSON.stringify(r.data).includes("customer7@example.com"))
    return { rate, verified }
  }).pipe(Effect.scoped)

const personalMain = async () => {
  const external = process.env.REDIS_URL
  const server = external ? undefined : await startRedisServer()
  const url = external ?? server!.url
  const tag = Date.now().toString(36)
  try {
    await Effect.runPromise(candidateRun(url, `benchp_${tag}_w`, true))
    await Effect.runPromise(personalRun(url, `benchp_${tag}_wp`))
    const rounds: Array<{ plain: number; personal: number; verified: boolean }> = []
    for (let r = 0; r < 3; r++) {
      const plain = (await Effect.runPromise(candidateRun(url, `benchp_${tag}_${r}`, true))).eventsPerSec
      const personal = await Effect.runPromise(personalRun(url, `benchp_${tag}_${r}p`))
      rounds.push({ plain, personal: personal.rate, verified: personal.verified })
      console.error(JSON.stringify({ round: r, typed_events_per_sec: Math.round(plain), personal_events_per_sec: Math.round(personal.rate), ratio: +(personal.rate / plain).toFixed(3) }))
    }
    console.log(JSON.stringify({
      bench: "append",
      personal: true,
      personal_fields: 2,
      typed_events_per_sec: Math.round(median(rounds.map((r) => r.plain))),
      personal_events_per_sec: Math.round(median(rounds.map((r) => r.personal))),
      ratio: +median(rounds.map((r) => r.personal / r.plain)).toFixed(3),
      verified: rounds.every((r) => r.verified)
    }))
  } finally {
    await server?.stop()
  }
}

const clusterMain = async () => {
  const single = await startRedisServer()
  const cluster = await startRedisCluster({ masters: 3, replicas: 0 })
  const masters = await cluster.masters()
  const redis = new Redis(single.url, { enableAutoPipelining: true })
  // routed per key by the cluster client (auto-pipelining there groups by the first argument, not the key)
  const clustered = new Cluster(cluster.seeds.map((n) => ({ host: n.host, port: n.port })), { scaleReads: "master" })
  const tag = Date.now().toString(36)
  try {
    await baselineRun(redis, `${tag}w`)
    await baselineRun(clustered, `${tag}w`)
    await Effect.runPromise(candidateRun(single.url, `bench_${tag}_w`, false))
    await Effect.runPromise(candidateRun(cluster.seeds, `bench_${tag}_w`, false))
    const rounds: Array<Record<string, Awaited<ReturnType<typeof withCpu>>>> = []
    for (let r = 0; r < 3; r++) {
      const row = {
        single: await withCpu([single.port], STREAMS * PER_STREAM, () => Effect.runPromise(Effect.map(candidateRun(single.url, `bench_${tag}_${r}`, false), (x) => x.eventsPerSec))),
        single_baseline: await withCpu([single.port], STREAMS * PER_STREAM, () => baselineRun(redis, `${tag}${r}`)),
        cluster: await withCpu(masters, STREAMS * PER_STREAM, () => Effect.runPromise(Effect.map(candidateRun(cluster.seeds, `bench_${tag}_${r}`, false), (x) => x.eventsPerSec))),
        cluster_baseline: await withCpu(masters, STREAMS * PER_STREAM, () => baselineRun(clustered, `${tag}${r}`))
      }
      console.error(JSON.stringify({ round: r, ...row }))
      rounds.push(row)
    }
    const pick = (name: string) => {
      const rows = rounds.map((row) => row[name]!)
      const mid = rows.slice().sort((a, b) => a.events_per_sec - b.events_per_sec)[1]!
      return mid
    }
    const verified = (await verifyRouted(redis, `bench_${tag}_2`)) && (await verifyRouted(clustered, `bench_${tag}_2`))
    console.log(JSON.stringify({
      bench: "append",
      topology: "single server vs cluster",
      masters: masters.length,
      partitions: PARTITIONS,
      single: pick("single"),
      single_baseline: pick("single_baseline"),
      cluster: pick("cluster"),
      cluster_baseline: pick("cluster_baseline"),
      cluster_vs_single: +(pick("cluster").events_per_sec / pick("single").events_per_sec).toFixed(3),
      cores: (await import("node:os")).availableParallelism(),
      verified
    }))
  } finally {
    redis.disconnect()
    clustered.disconnect()
    await single.stop()
    await cluster.stop()
  }
}

const BACKEND = process.argv.includes("--backend") ? process.argv[process.argv.indexOf("--backend") + 1] : "redis"

const main = async () => {
  if (BACKEND === "postgres") return (await import("./append-postgres.js")).postgresMain()
  if (BACKEND !== "redis") throw new Error(`--backend: ${String(BACKEND)} is not redis or postgres`)
  if (CLUSTER) return clusterMain()
  if (PERSONAL) return personalMain()
  const external = process.env.REDIS_URL
  const server = external ? undefined : await startRedisServer()
  const url = external ?? server!.url
  const redis = new Redis(url, { enableAutoPipelining: true })
  const tag = Date.now().toString(36)
  try {
    // warm-up of every path (JIT, script cache)
    await baselineRun(redis, `${tag}w`)
    await Effect.runPromise(candidateRun(url, `bench_${tag}_w`, false))
    await Effect.runPromise(candidateRun(url, `bench_${tag}_wt`, true))
    const pairs: Array<{ baseline: number; candidate: number; typed: number; inEffect: number; verified: boolean }> = []
    for (let r = 0; r < 3; r++) {
      const baseline = await baselineRun(redis, `${tag}${r}`)
      const prefix = `bench_${tag}_${r}`
      const { eventsPerSec, partitions } = await Effect.runPromise(candidateRun(url, prefix, false))
      const typed = await Effect.runPromise(candidateRun(url, `${prefix}t`, true))
      const inEffect = await baselineInEffect(redis, `${tag}${r}`)
      const verified = (await verify(redis, prefix, partitions)) && (await verify(redis, `${prefix}t`, partitions))
      pairs.push({ baseline, candidate: eventsPerSec, typed: typed.eventsPerSec, inEffect, verified })
      console.error(JSON.stringify({
        round: r,
        baseline_events_per_sec: Math.round(baseline),
        events_per_sec: Math.round(eventsPerSec),
        typed_events_per_sec: Math.round(typed.eventsPerSec),
        baseline_in_effect_events_per_sec: Math.round(inEffect),
        ratio: +(eventsPerSec / baseline).toFixed(3),
        verified
      }))
    }
    const { baseline: baselineP50, candidate: p50 } = await Effect.runPromise(latency(url, redis, `bench_${tag}_lat`))
    const ratios = pairs.map((p) => p.candidate / p.baseline)
    const result = {
      bench: "append",
      partitions: PARTITIONS,
      events_per_sec: Math.round(median(pairs.map((p) => p.candidate))),
      baseline_events_per_sec: Math.round(median(pairs.map((p) => p.baseline))),
      ratio: +median(ratios).toFixed(3),
      typed_events_per_sec: Math.round(median(pairs.map((p) => p.typed))),
      typed_ratio: +median(pairs.map((p) => p.typed / p.baseline)).toFixed(3),
      baseline_in_effect_events_per_sec: Math.round(median(pairs.map((p) => p.inEffect))),
      baseline_in_effect_ratio: +median(pairs.map((p) => p.inEffect / p.baseline)).toFixed(3),
      p50_us: +p50.toFixed(1),
      baseline_p50_us: +baselineP50.toFixed(1),
      verified: pairs.every((p) => p.verified)
    }
    console.log(JSON.stringify(result))
  } finally {
    redis.disconnect()
    await server?.stop()
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
