/**
 * The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag (the part between the
 * first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
 *
 * @internal
 */

const TABLE = (() => {
  const t = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let c = i << 8
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff
    t[i] = c
  }
  return t
})()

const crc16 = (bytes: Uint8Array, start: number, end: number): number => {
  let crc = 0
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ bytes[i]!) & 0xff]!
  return crc
}

export const SLOTS = 16384

export const slotOf = (key: string): number => {
  const bytes = Buffer.from(key, "utf8")
  const open = bytes.indexOf(123) // {
  if (open >= 0) {
    const close = bytes.indexOf(125, open + 1) // }
    if (close > open + 1) return crc16(bytes, open + 1, close) % SLOTS
  }
  return crc16(bytes, 0, bytes.length) % SLOTS
}
