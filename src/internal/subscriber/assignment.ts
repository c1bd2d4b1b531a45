/**
 * Which member owns which partition (docs/semantics.md §5): sticky and balanced.
 *
 * Every member computes the same assignment from the same facts (the live members and
 * the current owner of each partition), so no coordinator is needed; the leases settle
 * any moment of disagreement. Counts differ by at most one. A partition stays with its
 * current owner while that owner is live and within its share; only partitions without a
 * live owner, or beyond an owner's share, move, each to the member that ranks it highest
 * by rendezvous hashing among those below their share. So a join moves only what the
 * newcomer's share needs (3 → 4 members over 8 partitions moves 2), a leave moves only
 * the leaver's partitions, and a restarted member (a new incarnation) takes only its share.
 *
 * @internal
 */

/** A well-mixed 32-bit score of (member, partition): FNV-1a, then the murmur3 finalizer. */
export const score = (member: string, partition: number): number => {
  let h = 0x811c9dc5
  const s = `${member}/${partition}`
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

/**
 * The owner of each partition. `owners` is who holds each partition now (a member that is
 * not in `members` counts as none).
 */
export const assign = (
  members: ReadonlyArray<string>,
  partitions: number,
  owners: ReadonlyArray<string | undefined> = []
): ReadonlyArray<string | undefined> => {
  const live = Array.from(new Set(members)).sort(byName)
  const out: Array<string | undefined> = Array.from({ length: partitions }, () => undefined)
  const n = live.length
  if (n === 0) return out
  const alive = new Set(live)
  const held = new Map<string, Array<number>>(live.map((m) => [m, []]))
  for (let p = 0; p < partitions; p++) {
    const o = owners[p]
    if (o !== undefined && alive.has(o)) held.get(o)!.push(p)
  }
  // shares: q each, and one more for r members; the extra goes to those holding the most
  // now (then by name), so that no member has to give up a partition it could keep
  const q = Math.floor(partitions / n)
  const r = partitions % n
  const ranked = live.slice().sort((a, b) => held.get(b)!.length - held.get(a)!.length || byName(a, b))
  const share = new Map<string, number>(ranked.map((m, i) => [m, q + (i < r ? 1 : 0)]))
  const count = new Map<string, number>(live.map((m) => [m, 0]))
  // keep what each member holds, up to its share, preferring the partitions it ranks highest
  for (const m of live) {
    const mine = held.get(m)!.slice().sort((a, b) => score(m, b) - score(m, a) || a - b)
    for (const p of mine.slice(0, share.get(m)!)) {
      out[p] = m
      count.set(m, count.get(m)! + 1)
    }
  }
  // the rest: highest (member, partition) score first, among members below their share
  const pairs: Array<readonly [number, string, number]> = []
  for (let p = 0; p < partitions; p++) {
    if (out[p] !== undefined) continue
    for (const m of live) pairs.push([score(m, p), m, p])
  }
  pairs.sort((a, b) => b[0] - a[0] || byName(a[1], b[1]) || a[2] - b[2])
  for (const [, m, p] of pairs) {
    if (out[p] !== undefined || count.get(m)! >= share.get(m)!) continue
    out[p] = m
    count.set(m, count.get(m)! + 1)
  }
  return out
}
