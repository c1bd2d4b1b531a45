/**
 * A TCP proxy on loopback in front of a Redis server that can lose a reply: when armed,
 * the next client request that matches forwards to the server, then the client's
 * connection is cut before the reply comes back. The server still runs the command.
 * It can also hold a request on its way (a slow path): the bytes reach the server late,
 * even when the client has given up and closed its side meanwhile.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net"

export interface Proxy {
  readonly port: number
  readonly url: string
  /** From now on, cut after forwarding each matching request with this probability (seeded, repeatable). */
  readonly cutRandomly: (probability: number, seed: number, match: (request: string) => boolean) => void
  /** Cut the client connection after forwarding the next request whose text matches. */
  readonly cutAfterRequest: (match: (request: string) => boolean) => Promise<void>
  /**
   * Holds the next request whose text matches, and what follows it on that connection,
   * for `millis`, then forwards it; a client that closes meanwhile does not stop it.
   */
  readonly holdRequest: (match: (request: string) => boolean, millis: number) => void
  /** How many client connections were cut so far. */
  readonly cuts: () => number
  readonly close: () => Promise<void>
}

export const startProxy = (upstreamPort: number): Promise<Proxy> =>
  new Promise((resolve, reject) => {
    let armed: { match: (s: string) => boolean; done: () => void } | undefined
    let random: { probability: number; next: () => number; match: (s: string) => boolean } | undefined
    let cuts = 0
    let hold: { match: (s: string) => boolean; millis: number } | undefined
    const sockets = new Set<Socket>()
    const server: Server = createServer((client) => {
      const upstream = createConnection({ host: "127.0.0.1", port: upstreamPort })
      sockets.add(client)
      sockets.add(upstream)
      let cut = false
      let held: Array<Buffer> | undefined
      let clientClosed = false
      client.on("data", (chunk) => {
        if (cut) return
        const text = chunk.toString("latin1")
        if (held !== undefined) {
          held.push(chunk)
          return
        }
        if (hold !== undefined && hold.match(text)) {
          const { millis } = hold
          hold = undefined
          held = [chunk]
          setTimeout(() => {
            for (const c of held!) upstream.write(c)
            held = undefined
            // the client gave up meanwhile: the server still gets the request, then the close
            if (clientClosed) setTimeout(() => upstream.destroy(), 1000).unref()
          }, millis).unref()
          return
        }
        const a = armed ?? (random !== undefined && random.match(text) && random.next() < random.probability
          ? { match: () => true, done: () => undefined }
          : undefined)
        if (a !== undefined && a.match(text)) {
          armed = undefined
          cut = true
          cuts++
          // the request reaches the server; its reply is read and dropped, then both sides close
          upstream.write(chunk, () => {
            client.destroy()
            upstream.once("data", () => upstream.destroy())
            setTimeout(() => upstream.destroy(), 2000).unref()
            a.done()
          })
          return
        }
        upstream.write(chunk)
      })
      upstream.on("data", (chunk) => {
        if (!cut) client.write(chunk)
      })
      const close = () => {
        client.destroy()
        upstream.destroy()
        sockets.delete(client)
        sockets.delete(upstream)
      }
      client.on("close", () => {
        clientClosed = true
        if (held !== undefined) {
          sockets.delete(client)
          return
        }
        if (!cut) close()
      })
      upstream.on("close", () => {
        client.destroy()
        sockets.delete(upstream)
      })
      client.on("error", () => undefined)
      upstream.on("error", () => undefined)
    })
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve({
        port,
        url: `redis://127.0.0.1:${port}`,
        cutAfterRequest: (match) =>
          new Promise<void>((done) => {
            armed = { match, done }
          }),
        cuts: () => cuts,
        holdRequest: (match, millis) => {
          hold = { match, millis }
        },
        cutRandomly: (probability, seed, match) => {
          // mulberry32: a small seeded generator, so a run can be repeated
          let state = seed >>> 0
          const next = () => {
            state = (state + 0x6d2b79f5) >>> 0
            let t = state
            t = Math.imul(t ^ (t >>> 15), t | 1)
            t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
            return ((t ^ (t >>> 14)) >>> 0) / 4294967296
          }
          random = { probability, next, match }
        },
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy()
            server.close(() => done())
          })
      })
    })
  })
