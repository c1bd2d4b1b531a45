/**
 * Lua scripts of the Redis consumer groups. Every partition-level script touches only
 * keys under that partition's hash tag; the lease is checked before anything else, and a
 * script that finds the lease gone changes nothing.
 *
 * @internal
 */
import { script } from "./scripts.js"


/** The server's clock in milliseconds (members and leases expire by it, not by clients' clocks). */
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`

/**
 * Renews a member and returns the live ones.
 * KEYS: members (zset), in-flight (hash). ARGV: member, ttl ms, then pairs partition, count.
 */
export const HEARTBEAT = script(
  "heartbeat",
  `#!lua
${NOW}
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[1] .. '|' .. ARGV[i + 1])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
`
)

/**
 * Takes a free lease (new epoch) or renews one the member holds; false when another holds it.
 * KEYS: lease, epoch. ARGV: member, ttl ms.
 */
export const ACQUIRE = script(
  "acquire",
  `#!lua
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return cur
  end
  return false
end
local token = ARGV[1] .. ':' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
`
)

/** KEYS: lease. ARGV: token, ttl ms. 1 when renewed, 0 when lost. */
export const RENEW = script(
  "renew",
  `#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`
)

/** KEYS: lease. ARGV: token. */
export const RELEASE = script(
  "release",
  `#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`
)

/**
 * A new owner takes the partition's whole pending list: the redelivery stream's, then the
 * log's, each looping XAUTOCLAIM (min-idle 0, never JUSTID, so deliveries are counted) to
 * cursor 0-0. On 7.0 XAUTOCLAIM gives no delivery counts, so they are read with XPENDING.
 * Ids whose entries no longer exist become dead letters (LostBeforeProcessing). Consumers
 * other than the new owner whose pending lists are now empty are deleted.
 *
 * KEYS: lease, log, redelivery, dead letters, starts. ARGV: token, group, member, now ms.
 * Reply: false when the lease is gone; else a list of {source, id, entryId, fields, deliveries}
 * where source is "r" or "l" and, for redeliveries, entryId/fields are the log entry's.
 */
export const CLAIM = script(
  "claim",
  `#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local log, red, dlq = KEYS[2], KEYS[3], KEYS[4]
local group, member = ARGV[2], ARGV[3]
local out = {}
local function claimAll(key, source)
  local cursor = '0-0'
  local claimed = {}
  repeat
    local r = redis.call('XAUTOCLAIM', key, group, member, 0, cursor, 'COUNT', 100)
    cursor = r[1]
    for _, e in ipairs(r[2]) do claimed[#claimed + 1] = e end
    if r[3] then
      for _, id in ipairs(r[3]) do
        redis.call('XADD', dlq, '*', 'entryId', id, 'source', source, 'eventId', '', 'stream', '', 'version', '0', 'type', '',
          'tag', 'LostBeforeProcessing', 'message', 'the entry was deleted before it was processed', 'attempts', '0', 'deliveries', '0', 'at', ARGV[4])
        redis.call('XACK', key, group, id)
        redis.call('HDEL', KEYS[5], source .. ':' .. id)
      end
    end
  until cursor == '0-0'
  if #claimed == 0 then return end
  local counts = {}
  local pending = redis.call('XPENDING', key, group, '-', '+', #claimed + 100, member)
  for _, p in ipairs(pending) do counts[p[1]] = p[4] end
  for _, e in ipairs(claimed) do
    if source == 'r' then
      local entryId = nil
      for i = 1, #e[2], 2 do if e[2][i] == 'r' then entryId = e[2][i + 1] end end
      local orig = entryId and redis.call('XRANGE', log, entryId, entryId)[1]
      out[#out + 1] = {'r', e[1], entryId or '', orig and orig[2] or false, counts[e[1]] or 1}
    else
      out[#out + 1] = {'l', e[1], e[1], e[2], counts[e[1]] or 1}
    end
  end
end
claimAll(red, 'r')
claimAll(log, 'l')
for _, key in ipairs({red, log}) do
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, group)) do
    local name, pend = nil, nil
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pend = c[i + 1] end
    end
    if name ~= member and pend == 0 then redis.call('XGROUP', 'DELCONSUMER', key, group, name) end
  end
end
return out
`
)

/**
 * Counts a handler start for a redelivered entry (SEMANTICS §6: crash loops).
 * KEYS: lease, starts (hash). ARGV: token, field ("l:<id>" or "r:<id>").
 * The starts so far, the first delivery included; false when the lease is gone.
 */
export const BEGIN = script(
  "begin",
  `#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
return redis.call('HINCRBY', KEYS[2], ARGV[2], 1) + 1
`
)

/**
 * Acknowledges handled entries (redelivery entries are deleted once acknowledged) and
 * forgets their start counts.
 * KEYS: lease, log, redelivery, starts. ARGV: token, group, log id count, log ids…, redelivery ids…
 * 1 when done, 0 when the lease is gone (nothing acknowledged).
 */
export const ACK = script(
  "ack",
  `#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[3])
local starts = redis.call('EXISTS', KEYS[4]) == 1
if n > 0 then
  redis.call('XACK', KEYS[2], ARGV[2], unpack(ARGV, 4, 3 + n))
  if starts then for i = 4, 3 + n do redis.call('HDEL', KEYS[4], 'l:' .. ARGV[i]) end end
end
if #ARGV > 3 + n then
  redis.call('XACK', KEYS[3], ARGV[2], unpack(ARGV, 4 + n, #ARGV))
  redis.call('XDEL', KEYS[3], unpack(ARGV, 4 + n, #ARGV))
  if starts then for i = 4 + n, #ARGV do redis.call('HDEL', KEYS[4], 'r:' .. ARGV[i]) end end
end
return 1
`
)

/**
 * Parks an entry: acknowledges it and adds the dead letter, atomically; an entry already
 * acknowledged (a retry of a call whose reply was lost) adds nothing.
 * KEYS: lease, source stream (log or redelivery), dead letters, starts. ARGV: token, group,
 * id, is-redelivery ("1"/"0"), then the dead letter's field/value pairs.
 * 1 when done, 0 when the lease is gone (nothing changed).
 */
export const DEAD_LETTER = script(
  "dead-letter",
  `#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local t = redis.call('TYPE', KEYS[3])['ok']
if t ~= 'stream' and t ~= 'none' then return redis.error_reply('WRONGTYPE the dead letters of this group are not a stream') end
-- acknowledged already (a retried call whose first reply was lost): nothing more to do
if redis.call('XACK', KEYS[2], ARGV[2], ARGV[3]) == 0 then return 1 end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 5, #ARGV))
if ARGV[4] == '1' then
  redis.call('XDEL', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[4], 'r:' .. ARGV[3])
else
  redis.call('HDEL', KEYS[4], 'l:' .. ARGV[3])
end
return 1
`
)

/**
 * Moves dead letters to the redelivery stream (all, or the given ids), atomically per partition.
 * KEYS: dead letters, redelivery. ARGV: ids… (none = all). Returns how many moved.
 */
export const REPLAY = script(
  "replay",
  `#!lua
local entries
if #ARGV == 0 then
  entries = redis.call('XRANGE', KEYS[1], '-', '+')
else
  entries = {}
  for _, id in ipairs(ARGV) do
    local e = redis.call('XRANGE', KEYS[1], id, id)[1]
    if e then entries[#entries + 1] = e end
  end
end
for _, e in ipairs(entries) do
  local entryId = ''
  for i = 1, #e[2], 2 do if e[2][i] == 'entryId' then entryId = e[2][i + 1] end end
  redis.call('XADD', KEYS[2], '*', 'r', entryId)
  redis.call('XDEL', KEYS[1], e[1])
end
return #entries
`
)
