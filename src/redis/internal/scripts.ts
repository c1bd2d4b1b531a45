/**
 * The Lua scripts of the Redis backend and how they are sent (EVALSHA, falling back to
 * EVAL on NOSCRIPT, which the server answers before running anything).
 *
 * @internal
 */
import { createHash } from "node:crypto"
import type { Connection } from "../RedisClient.js"

export interface Script {
  readonly name: string
  readonly source: string
  readonly sha: string
  /** Run only against one server: its keys may lie in several slots (never sent to a cluster). */
  readonly singleServer: boolean
}

const registry: Array<Script> = []

/** Every script of the backend made so far (the modules that define them loaded). */
export const allScripts = (): ReadonlyArray<Script> => registry

/** A script and its SHA1, for EVALSHA. */
export const script = (name: string, source: string, options?: { readonly singleServer?: boolean }): Script => {
  const s = { name, source, sha: createHash("sha1").update(source).digest("hex"), singleServer: options?.singleServer ?? false }
  registry.push(s)
  return s
}

/**
 * Appends one or more batches to one partition, each checked and applied on its own.
 *
 * Layout (all keys under the partition's hash tag, so a call never spans slots):
 * - `log` (stream): the partition's category log. Each entry is the event itself:
 *   e = event id, i = entity id, v = version, t = type, d = data (JSON), m = metadata.
 *   The payload lives here, once: every consumer group and projection reads the log,
 *   while aggregates read only an entity's tail after its snapshot, so the log is the
 *   hot path and entity reads fetch payloads by reference (see READ_STREAM).
 * - `ids:<id>` (hash): field `v` = the stream's version; field <eventId> =
 *   "<version>:<type>", permanent, for idempotency. One HMGET reads the version and every
 *   id of a batch (and, through pcall, is the hash's type check); one HSET writes them.
 * - `s:<id>` (list): the log entry id of each version, in order.
 * - `streams` (set): the entity ids of the partition, for listing without SCAN.
 *
 * KEYS: log, streams, then per batch: ids hash, entity list.
 * ARGV: batch count, then per batch: entity id, expected (-1 any, -2 exists, n exact),
 * event count n, then n × (event id, type, data, metadata).
 *
 * Every check of a batch runs before its first write; a batch that fails a check writes
 * nothing. A replay writes the stream's version as it is: the WAIT written behind the call
 * then covers the original write, whichever connection made it. Replies, one per batch:
 *   {"ok", firstVersion, entryId…} | {"replay", firstVersion, entryId…} | {"wev", actual}
 *   | {"mismatch", index, storedValue|false}   (the first id is known: not an exact replay)
 *   | {"known", index, storedValue}            (the first id is new, a later one is known)
 *   | {"type", key, expected, actual}
 *
 * Each batch written publishes the stream's new version on the stream's shard channel
 * (`<tag>:appended:<id>`, the same hash tag, so the same cluster slot): live readers of
 * one stream wait on it instead of reading the category. A call that wrote also
 * publishes once on the partition's channel (`<tag>:appended`), which readers of a
 * whole partition wait on where one read cannot span partitions (a cluster). With no
 * subscriber, SPUBLISH is one dictionary lookup.
 *
 * The `#!lua` shebang makes Redis refuse the whole script before it runs when the server
 * is out of memory, instead of failing a write half-way.
 */
export const APPEND = script(
  "append",
  `#!lua
local log, set = KEYS[1], KEYS[2]
local nb = tonumber(ARGV[1])
local out = {}
local tag = string.sub(log, 1, -5)
local wrote = false
-- the log's and the set's types are checked once, before the first batch that writes
-- (the set's only when a batch creates a stream); a wrong type fails every batch that
-- would write, and nothing is written
local logState, setState = nil, nil
local function badType(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= want and t ~= 'none' then return t end
  return false
end
local a = 2
for b = 1, nb do
  local hk, lk = KEYS[1 + 2 * b], KEYS[2 + 2 * b]
  local ent, exp, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local base = a + 3
  a = base + 4 * n
  local q = {'v'}
  for i = 0, n - 1 do q[i + 2] = ARGV[base + 4 * i] end
  local vals = redis.pcall('HMGET', hk, unpack(q))
  if vals['err'] then
    out[b] = {'type', hk, 'hash', 'another type'}
  else
    local cur = tonumber(vals[1]) or 0
    local first = vals[2]
    if first then
      local v0 = tonumber(string.match(first, '^(%d+):'))
      local bad = nil
      if not v0 then v0 = 0 bad = 0 end
      for i = 0, n - 1 do
        if bad then break end
        if vals[i + 2] ~= (v0 + i) .. ':' .. ARGV[base + 4 * i + 1] then bad = i break end
      end
      if bad then
        out[b] = {'mismatch', bad, vals[bad + 2]}
      else
        local ids = redis.pcall('LRANGE', lk, v0 - 1, v0 + n - 2)
        if ids['err'] then
          out[b] = {'type', lk, 'list', 'another type'}
        else
          out[b] = {'replay', v0, unpack(ids)}
          -- a write, of the version as it is: the confirmation (WAIT, WAITAOF) sent behind
          -- this call counts the writes of its own connection, and the batch replayed may
          -- have been written by another (a reply lost, then a retry on a new connection)
          redis.call('HSET', hk, 'v', cur)
        end
      end
    else
      local bad = nil
      for i = 1, n - 1 do if vals[i + 2] then bad = i break end end
      if bad then
        out[b] = {'known', bad, vals[bad + 2]}
      elseif not (exp == -1 or (exp == -2 and cur > 0) or exp == cur) then
        out[b] = {'wev', cur}
      else
        if logState == nil then logState = badType(log, 'stream') end
        if cur == 0 and setState == nil then setState = badType(set, 'set') end
        local lt = badType(lk, 'list')
        if logState then
          out[b] = {'type', log, 'stream', logState}
        elseif cur == 0 and setState then
          out[b] = {'type', set, 'set', setState}
        elseif lt then
          out[b] = {'type', lk, 'list', lt}
        else
          local ids = {}
          local h = {'v', cur + n}
          for i = 0, n - 1 do
            local j = base + 4 * i
            local ver = cur + i + 1
            ids[i + 1] = redis.call('XADD', log, '*', 'e', ARGV[j], 'i', ent, 'v', ver, 't', ARGV[j + 1], 'd', ARGV[j + 2], 'm', ARGV[j + 3])
            h[2 * i + 3] = ARGV[j]
            h[2 * i + 4] = ver .. ':' .. ARGV[j + 1]
          end
          redis.call('RPUSH', lk, unpack(ids))
          redis.call('HSET', hk, unpack(h))
          if cur == 0 then redis.call('SADD', set, ent) end
          out[b] = {'ok', cur + 1, unpack(ids)}
          wrote = true
          -- pcall: a user without the channel's permission still appends (its live readers are refused)
          redis.pcall('SPUBLISH', tag .. ':appended:' .. ent, cur + n)
        end
      end
    end
  end
end
-- the partition's channel: one notice per call that wrote, for waits over a partition
if wrote then redis.pcall('SPUBLISH', tag .. ':appended', '') end
return out
`
)

/**
 * Reads a page of one entity's stream: its log entry ids from the list, then each entry
 * from the log, in one round trip.
 *
 * KEYS: log, entity list. ARGV: direction ("f" or "b"), from version (0 = the default:
 * 1 forwards, the last backwards), count.
 * Reply: {firstVersion, entry|false, …} in ascending version order, where an entry is
 * {entryId, fields}; `false` marks a version whose log entry is missing.
 */
export const READ_STREAM = script(
  "read-stream",
  `#!lua flags=no-writes
local log, lk = KEYS[1], KEYS[2]
local dir, from, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local len = redis.call('LLEN', lk)
local lo, hi
if dir == 'f' then
  lo = from
  if lo < 1 then lo = 1 end
  hi = lo + count - 1
  if hi > len then hi = len end
else
  hi = from
  if hi < 1 or hi > len then hi = len end
  lo = hi - count + 1
  if lo < 1 then lo = 1 end
end
local out = {lo}
if hi < lo then return out end
local ids = redis.call('LRANGE', lk, lo - 1, hi - 1)
for i, id in ipairs(ids) do
  local e = redis.call('XRANGE', log, id, id)
  if e[1] then out[i + 1] = e[1] else out[i + 1] = false end
end
return out
`
)

/** Sends a script with EVALSHA, and with EVAL when the server does not have it (NOSCRIPT). */
export const evalScript = (redis: Connection, s: Script, keys: ReadonlyArray<string>, args: ReadonlyArray<string | number>): Promise<unknown> =>
  (redis.evalsha(s.sha, keys.length, ...keys, ...args) as Promise<unknown>).catch((error: unknown) => {
    if (error instanceof Error && error.message.startsWith("NOSCRIPT")) {
      return redis.eval(s.source, keys.length, ...keys, ...args) as Promise<unknown>
    }
    return Promise.reject(error)
  })
