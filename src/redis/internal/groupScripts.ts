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
 * Renews a member, publishes its in-flight counts (replacing what it published before,
 * so a partition it gave up is no longer reported as its own) and returns the live members.
 * KEYS: members (zset), in-flight (hash), both under the group's hash tag.
 * ARGV: member, ttl ms, then pairs partition, count.
 */
export const HEARTBEAT = script(
  "heartbeat",
  `#!lua flags=allow-oom
${NOW}
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local mine = {}
for i = 3, #ARGV, 2 do
  mine[ARGV[i]] = true
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[1] .. '|' .. ARGV[i + 1])
end
local reported = redis.call('HGETALL', KEYS[2])
local prefix = ARGV[1] .. '|'
for i = 1, #reported, 2 do
  if not mine[reported[i]] and string.sub(reported[i + 1], 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[2], reported[i])
  end
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
  `#!lua flags=allow-oom
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
  `#!lua flags=allow-oom
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
  `#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`
)

/**
 * One page of a new owner's claim of a partition's pending list: XAUTOCLAIM (min-idle 0,
 * never JUSTID, so deliveries are counted) from a cursor, at most `count` entries, on one
 * source (the redelivery stream or the log). On 7.0 XAUTOCLAIM gives no delivery counts,
 * so they are read with XPENDING over the claimed range. Ids whose entries no longer
 * exist become dead letters (LostBeforeProcessing). When a source has been taken whole,
 * consumers other than the new owner with nothing pending are deleted (names of members
 * that are gone).
 *
 * The first page of a claim (the redelivery stream from "0-0") also moves the
 * partition's wait fence on: a wait's reads sent before it (see READ_WAITED) then take
 * nothing, so no entry can reach the member's pending list behind the claim's back.
 *
 * KEYS: lease, source stream, log, dead letters, starts, wait fence.
 * ARGV: token, group, member, cursor, count, source ("r" or "l"), now ms.
 * Reply: false when the lease is gone; else {nextCursor, entries, fence} where each entry
 * is {id, entryId, fields|false, deliveries}; for redeliveries entryId/fields are the log
 * entry's; fence is the wait fence after a first page, else false. nextCursor "0-0"
 * means the source's pending list has been taken whole.
 */
export const CLAIM = script(
  "claim",
  `#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local key, log, dlq = KEYS[2], KEYS[3], KEYS[4]
local group, member, source = ARGV[2], ARGV[3], ARGV[6]
local fence = false
if source == 'r' and ARGV[4] == '0-0' then fence = redis.call('INCR', KEYS[6]) end
local r = redis.call('XAUTOCLAIM', key, group, member, 0, ARGV[4], 'COUNT', tonumber(ARGV[5]))
local claimed = r[2]
if r[3] then
  for _, id in ipairs(r[3]) do
    redis.call('XADD', dlq, '*', 'entryId', id, 'source', source, 'eventId', '', 'stream', '', 'version', '0', 'type', '',
      'tag', 'LostBeforeProcessing', 'message', 'the entry was deleted before it was processed', 'attempts', '0', 'deliveries', '0', 'at', ARGV[7])
    redis.call('XACK', key, group, id)
    redis.call('HDEL', KEYS[5], source .. ':' .. id)
  end
end
local out = {}
if #claimed > 0 then
  local counts = {}
  local pending = redis.call('XPENDING', key, group, claimed[1][1], claimed[#claimed][1], #claimed, member)
  for _, p in ipairs(pending) do counts[p[1]] = p[4] end
  for _, e in ipairs(claimed) do
    if source == 'r' then
      local entryId = nil
      for i = 1, #e[2], 2 do if e[2][i] == 'r' then entryId = e[2][i + 1] end end
      local orig = entryId and redis.call('XRANGE', log, entryId, entryId)[1]
      out[#out + 1] = {e[1], entryId or '', orig and orig[2] or false, counts[e[1]] or 1}
    else
      out[#out + 1] = {e[1], e[1], e[2], counts[e[1]] or 1}
    end
  end
end
if r[1] == '0-0' then
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, group)) do
    local name, pend = nil, nil
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pend = c[i + 1] end
    end
    if name ~= member and pend == 0 then redis.call('XGROUP', 'DELCONSUMER', key, group, name) end
  end
end
return {r[1], out, fence}
`
)

/**
 * The body of a fenced read of one partition, shared by READ and READ_WAITED: a Lua
 * function `fenced(lease, log, red, token, group, member, count)` that answers false when
 * the lease is gone, else {tail|false, logEntries, redeliveries, pending} (see READ);
 * `take(log, red, group, member, count)`, its reads without the lease check; `lastId(key)`
 * and `pendingOf(key, group, member)`. Every `redis.call` costs a few microseconds of the
 * server's time on the path from an append to its handler: none is repeated.
 */
const FENCED_READ = `-- an entry as {id, e, i, v, t, d, m}: the values of its fields in a fixed order, half
-- the strings of a field list for the client to take apart
local slot = {e = 2, i = 3, v = 4, t = 5, d = 6, m = 7}
local function values(id, f)
  -- the append script writes e, i, v, t, d, m in this order: take them as they stand
  if f and #f == 12 and f[1] == 'e' and f[3] == 'i' and f[5] == 'v' and f[7] == 't' and f[9] == 'd' and f[11] == 'm' then
    return {id, f[2], f[4], f[6], f[8], f[10], f[12]}
  end
  local out = {id, false, false, false, false, false, false}
  if f then
    for i = 1, #f, 2 do
      local at = slot[f[i]]
      if at then out[at] = f[i + 1] end
    end
  end
  return out
end
-- the member's pending entries in one source (the summary form: one count per consumer)
local function pendingOf(key, group, member)
  local summary = redis.call('XPENDING', key, group)
  if summary[4] then
    for _, c in ipairs(summary[4]) do
      if c[1] == member then return tonumber(c[2]) end
    end
  end
  return 0
end
local function lastId(key)
  local e = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  return e and e[1] or '0-0'
end
-- the member's new entries: redeliveries first, then the log, count in all; with the
-- last id each source gave (nil when it gave none). Fewer than count in all: the sources
-- were read to their ends (the log is never trimmed; the redelivery stream loses only
-- entries already delivered), so those ids are where they end
local function take(log, red, group, member, count)
  local rout = {}
  local rr = redis.call('XREADGROUP', 'GROUP', group, member, 'COUNT', count, 'STREAMS', red, '>')
  if rr then
    for _, e in ipairs(rr[1][2]) do
      local entryId = nil
      if e[2] then
        for i = 1, #e[2], 2 do if e[2][i] == 'r' then entryId = e[2][i + 1] end end
      end
      local orig = entryId and redis.call('XRANGE', log, entryId, entryId)[1]
      rout[#rout + 1] = {e[1], entryId or '', orig and values(orig[1], orig[2]) or false}
    end
  end
  local entries = {}
  local left = count - #rout
  if left > 0 then
    local lr = redis.call('XREADGROUP', 'GROUP', group, member, 'COUNT', left, 'STREAMS', log, '>')
    if lr then
      for i, e in ipairs(lr[1][2]) do entries[i] = values(e[1], e[2]) end
    end
  end
  local lastLog = entries[#entries] and entries[#entries][1]
  local lastRed = rout[#rout] and rout[#rout][1]
  return rout, entries, lastLog, lastRed
end
local function fenced(lease, log, red, token, group, member, count)
  if redis.call('GET', lease) ~= token then return false end
  local rout, entries, lastLog, lastRed = take(log, red, group, member, count)
  local tail = false
  if #rout + #entries < count then tail = {lastLog or lastId(log), lastRed or lastId(red)} end
  return {tail, entries, rout, pendingOf(log, group, member) + pendingOf(red, group, member)}
end`

/**
 * A fenced read (docs/semantics.md §5): new entries of one partition enter the member's pending
 * list only while it holds the lease, checked in the same atomic step. Never blocks.
 * The redelivery stream (replayed dead letters) is read before the log.
 *
 * KEYS: lease, log, redelivery. ARGV: token, group, member, count.
 * Reply: false when the lease is gone; else {tail|false, logEntries, redeliveries} where
 * a log entry is {id, e, i, v, t, d, m} (its fields' values, false where missing), a
 * redelivery {id, entryId, logEntry|false}, and tail, set when fewer than count entries
 * were there, is {last log id, last redelivery id} ("0-0" for an empty stream): what a
 * wait starts after; pending is how many entries of both sources are pending for the
 * member after the read (it should have each of them in hand: one it does not is an
 * acknowledgement the server lost, in a failover without durability).
 */
export const READ = script(
  "read",
  `#!lua flags=allow-oom
${FENCED_READ}
return fenced(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
`
)

/**
 * The fenced reads of a wait (docs/semantics.md §5), on one server: sent right behind the
 * wait's blocking XREAD on the same connection, so the server runs it the moment that
 * read ends (an entry arrived, the time ran out, or the member's wake stream was
 * written) and a waiting member gets new entries without a round trip of its own.
 * Checked when it runs, not when it was sent, per partition: the lease (a member whose
 * lease lapsed meanwhile takes nothing) and the wait fence (a claim made since, after
 * the member gave up on this wait, takes the partition back: these reads take nothing).
 * A partition with nothing new answers 0; one read to its ends has as its tail the last
 * entry of each source read, or the wait's tail for a source that gave nothing (should
 * the group's position have moved past it, the next wait ends at once and finds nothing,
 * and the partition is then read plainly). The member's pending count (see READ) is
 * taken only when asked for: the client asks now and then, and every plain read takes it.
 *
 * KEYS: per partition lease, log, redelivery, wait fence (any slots: single server only).
 * ARGV: group, member, count, pending ("1": count the member's pending entries), then per
 * partition token, fence ("" when none was seen), log tail, redelivery tail.
 * Reply: per partition, in order: false when its lease is gone, 0 when nothing new, else
 * READ's {tail|false, logEntries, redeliveries, pending?} (fenced off: {false, {}, {}},
 * nothing taken and no tail, so the member reads the partition again with READ).
 */
export const READ_WAITED = script(
  "read-waited",
  `#!lua flags=allow-oom
${FENCED_READ}
local group, member, count, counted = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local out = {}
for i = 1, #KEYS / 4 do
  local lease, log, red, fk = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local a = 5 + 4 * (i - 1)
  local token, fence, tlog, tred = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local r = 0
  if redis.call('GET', lease) ~= token then
    r = false
  elseif fence ~= '' and (redis.call('GET', fk) or '0') ~= fence then
    -- fenced off: nothing taken, and the member is told to read the partition plainly
    r = {false, {}, {}}
  else
    local rout, entries, lastLog, lastRed = take(log, red, group, member, count)
    if #rout + #entries >= count then
      r = {false, entries, rout}
    elseif #rout + #entries > 0 then
      r = {{lastLog or tlog, lastRed or tred}, entries, rout}
    end
    if r ~= 0 and counted then r[4] = pendingOf(log, group, member) + pendingOf(red, group, member) end
  end
  out[i] = r
end
return out
`,
  { singleServer: true }
)

/**
 * Wakes a member's wait early: one entry in the member's wake stream, which every wait
 * of the member also reads (no admin command, and it cannot reach another client's
 * wait). The stream keeps one entry and expires when the member is gone.
 * KEYS: wake stream. ARGV: expiry ms.
 */
export const WAKE = script(
  "wake",
  `#!lua flags=allow-oom
redis.call('XADD', KEYS[1], 'MAXLEN', '1', '*', 'w', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`,
  { singleServer: true }
)

/**
 * Counts a handler start for a redelivered entry (docs/semantics.md §6: crash loops).
 * KEYS: lease, starts (hash). ARGV: token, field ("l:<id>" or "r:<id>").
 * The starts so far, the first delivery included; false when the lease is gone.
 */
export const BEGIN = script(
  "begin",
  `#!lua flags=allow-oom
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
  `#!lua flags=allow-oom
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
