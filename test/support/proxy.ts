/**
 * A TCP proxy on loopback in front of a Redis server that can lose a reply: when armed,
 * the next client request that matches forwards to the server, then the client's
 * connection is cut before the reply comes back. The server still runs the command.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net"

export interface Proxy {
  readonly port: number
  readonly url: string
  /** Cut the client connection after forwarding the next request whose text matches. */
  readonly cutAfterRequest: (match: (request: string) => boolean) => Promise<void>
  /** How many client connections were cut so far. */
  readonly cuts: () => number
  readonly close: () => Promise<void>
}

export const startProxy = (upstreamPort: number): Promise<Proxy> =>
  new Promise((resolve, reject) => {
    let armed: { match: (s: string) => boolean; done: () => void } | undefined
    let cuts = 0
    const sockets = new Set<Socket>()
    const server: Server = createServer((client) => {
      const upstream = createConnection({ host: "127.0.0.1", port: upstreamPort })
      sockets.add(client)
      sockets.add(upstream)
      let cut = false
      client.on("data", (chunk) => {
        if (cut) return
        const a = armed
        if (a !== undefined && a.match(chunk.toString("latin1"))) {
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
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy()
            server.close(() => done())
          })
      })
    })
  })
