/**
 * The append call, encoded straight into one RESP buffer.
 *
 * A coalesced call carries hundreds of batches; through ioredis's generic command path
 * every argument is copied into an argument array, flattened, measured and concatenated
 * into one large string, which made the client, not Redis, the bottleneck (measured:
 * more than half of the allocations per appended event). Here the call is measured once
 * and written once, and ioredis only sends the bytes and parses the reply.
 *
 * @internal
 */
import { Command } from "ioredis"
import type { PreparedAppend } from "../../internal/append.js"
import type { Script } from "./scripts.js"

/** One batch of a call: its entity, its keys' common prefix (the partition's hash tag) and its events. */
export interface CallBatch {
  readonly prepared: PreparedAppend
}

const CRLF_LEN = 2

const digits = (n: number): number => (n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : n < 100000 ? 5 : String(n).length)

const bulkSize = (bytes: number) => 1 + digits(bytes) + CRLF_LEN + bytes + CRLF_LEN

const utf8 = (s: string) => (s.length < 32 && ASCII.test(s) ? s.length : Buffer.byteLength(s, "utf8"))
const ASCII = /^[\x00-\x7f]*$/

/** A command whose bytes are already encoded; on a cluster it goes to the master of `slot`. */
class Encoded extends Command {
  constructor(name: string, private readonly payload: Buffer, private readonly target: number) {
    super(name, [], { replyEncoding: "utf8" })
  }
  override toWritable(): Buffer {
    return this.payload
  }
  override getSlot(): number {
    return this.target
  }
}

/**
 * Encodes `EVALSHA sha numkeys log streams (ids list)… nb (entity expected n (id type data meta)…)…`
 * (or `EVAL source …` when `withSource`), with the keys of batch `b` being
 * `tag + ":ids:" + entity` and `tag + ":s:" + entity`.
 */
export const encodeAppendCall = (
  script: Script,
  withSource: boolean,
  tag: string,
  log: string,
  streams: string,
  batches: ReadonlyArray<CallBatch>,
  slot: number
): Command | undefined => {
  const nb = batches.length
  const tagBytes = tag.length // ASCII: prefix and category are checked
  let argc = 3 + 2 + 2 * nb + 1
  const head = withSource ? script.source : script.sha
  const headBytes = withSource ? Buffer.byteLength(head, "utf8") : head.length
  let size = 0
  size += bulkSize(headBytes) + bulkSize(digits(2 + 2 * nb)) + bulkSize(log.length) + bulkSize(streams.length) + bulkSize(digits(nb))
  const entityBytes = new Array<number>(nb)
  const metaBytes: Array<number> = []
  const typeBytes: Array<number> = []
  for (let b = 0; b < nb; b++) {
    const p = batches[b]!.prepared
    const eb = utf8(p.entityId)
    entityBytes[b] = eb
    size += bulkSize(tagBytes + 5 + eb) + bulkSize(tagBytes + 3 + eb)
    size += bulkSize(eb) + bulkSize(String(p.expected).length) + bulkSize(digits(p.events.length))
    argc += 3 + 4 * p.events.length
    for (const e of p.events) {
      const tb = utf8(e.type)
      const mb = e.meta.length === 0 ? 0 : utf8(e.meta)
      typeBytes.push(tb)
      metaBytes.push(mb)
      size += bulkSize(e.eventId.length) + bulkSize(tb) + bulkSize(e.dataBytes) + bulkSize(mb)
    }
  }
  const name = withSource ? "EVAL" : "EVALSHA"
  size += 1 + digits(argc) + CRLF_LEN + bulkSize(name.length)
  const buf = Buffer.allocUnsafe(size)
  let o = 0
  const crlf = () => {
    buf[o++] = 13
    buf[o++] = 10
  }
  const int = (n: number) => {
    o += buf.write(String(n), o, "latin1")
  }
  const header = (bytes: number) => {
    buf[o++] = 36 // $
    if (bytes < 10) buf[o++] = 48 + bytes
    else int(bytes)
    crlf()
  }
  const ascii = (s: string) => {
    header(s.length)
    o += buf.write(s, o, "latin1")
    crlf()
  }
  const text = (s: string, bytes: number) => {
    header(bytes)
    if (bytes > 0) o += buf.write(s, o, "utf8")
    crlf()
  }
  buf[o++] = 42 // *
  int(argc)
  crlf()
  ascii(name)
  text(head, headBytes)
  ascii(String(2 + 2 * nb))
  ascii(log)
  ascii(streams)
  for (let b = 0; b < nb; b++) {
    const id = batches[b]!.prepared.entityId
    const eb = entityBytes[b]!
    header(tagBytes + 5 + eb)
    o += buf.write(tag, o, "latin1")
    o += buf.write(":ids:", o, "latin1")
    o += buf.write(id, o, "utf8")
    crlf()
    header(tagBytes + 3 + eb)
    o += buf.write(tag, o, "latin1")
    o += buf.write(":s:", o, "latin1")
    o += buf.write(id, o, "utf8")
    crlf()
  }
  ascii(String(nb))
  let k = 0
  for (let b = 0; b < nb; b++) {
    const p = batches[b]!.prepared
    text(p.entityId, entityBytes[b]!)
    ascii(String(p.expected))
    ascii(String(p.events.length))
    for (const e of p.events) {
      ascii(e.eventId)
      text(e.type, typeBytes[k]!)
      text(e.data, e.dataBytes)
      text(e.meta, metaBytes[k]!)
      k++
    }
  }
  // sizes are computed exactly; a mismatch would be a bug, and sending a truncated
  // command is never acceptable, so the caller then takes ioredis's generic path
  return o === size ? new Encoded(name.toLowerCase(), buf, slot) : undefined
}
