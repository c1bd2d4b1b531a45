/**
 * What the benchmarks share: arguments, medians and percentiles, and the CPU the
 * servers used (read from INFO).
 */
import { Redis } from "ioredis"

/** CPU seconds the redis-servers at these loopback ports have used so far (INFO cpu). */
export const serverCpu = async (ports: ReadonlyArray<number>): Promise<number> => {
  let total = 0
  for (const port of ports) {
    const r = new Redis({ host: "127.0.0.1", port })
    const info = await r.info("cpu")
    r.disconnect()
    total += Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1] ?? 0) + Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1] ?? 0)
  }
  return total
}

/** Runs `run` (which returns events/s) and gives its CPU µs per event, this process's and the servers'. */
export const withCpu = async (ports: ReadonlyArray<number>, events: number, run: () => Promise<number>) => {
  const server0 = await serverCpu(ports)
  const client0 = process.cpuUsage()
  const rate = await run()
  const client = process.cpuUsage(client0)
  const server = (await serverCpu(ports)) - server0
  return {
    events_per_sec: Math.round(rate),
    client_cpu_us_per_event: +((client.user + client.system) / events).toFixed(1),
    server_cpu_us_per_event: +((server * 1e6) / events).toFixed(1)
  }
}

/** A numeric `--name value` argument, or `fallback`. */
export const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : fallback
}

export const median = (xs: ReadonlyArray<number>): number => {
  const s = xs.slice().sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

/** The p-quantile (0 to 1) of the samples; NaN when there are none. */
export const percentile = (xs: ReadonlyArray<number>, p: number): number => {
  const s = xs.slice().sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(s.length * p))]!
}

/** The `--backend` argument: "redis" (the default) or "postgres". */
export const backend = (): "redis" | "postgres" => {
  const i = process.argv.indexOf("--backend")
  const given = i >= 0 ? process.argv[i + 1] : "redis"
  if (given !== "redis" && given !== "postgres") {
    console.error(`--backend must be redis or postgres, not ${JSON.stringify(given)}`)
    process.exit(2)
  }
  return given
}
