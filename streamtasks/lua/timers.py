"""The scripts of delayed entries (schedule, move when due, cancel) and periodic ticks (claim)."""

from __future__ import annotations

# KEYS: delayed set, delayed fields hash. ARGV: message id, due ms, packed fields, ... (triples)
# Schedules delayed entries: the fields and the due time of each are written together, so the
# mover never finds one without the other. Sending a message id again replaces its entry.
# -> how many were scheduled
SCHEDULE = """
for i = 1, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
end
return #ARGV / 3
"""

# KEYS: delayed set, delayed fields hash, stream, dead-letter stream.
# ARGV: count, group, handler, most values an entry may have.
# Moves up to `count` entries due by Redis' clock (TIME: every mover agrees on it) into the
# stream, each XADDed with its fields (its message id among them) and removed from the set and
# the hash in the same step: with any number of movers each entry enters the stream once, and
# a mover killed at any point leaves every entry either scheduled or added. Fields that are not
# netstrings (a foreign writer's) are dead-lettered as `bad_scheduled_entry`, not retried
# forever; a member without fields is dropped and counted (`missing`).
# -> {moved, dead-lettered, missing, next due ms or false, now ms}
MOVE_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local most = tonumber(ARGV[4])
local function fields_of(s)
  local out, pos, n = {}, 1, #s
  while pos <= n do
    local colon = string.find(s, ':', pos, true)
    if not colon or colon - pos > 10 or colon == pos then return nil end
    local digits = string.sub(s, pos, colon - 1)
    if not string.match(digits, '^%d+$') then return nil end
    local stop = colon + tonumber(digits)
    if string.sub(s, stop + 1, stop + 1) ~= ',' then return nil end
    out[#out + 1] = string.sub(s, colon + 1, stop)
    if #out > most then return nil end
    pos = stop + 2
  end
  if #out == 0 or #out % 2 == 1 then return nil end
  return out
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved, bad, missing = 0, 0, 0
for _, mid in ipairs(due) do
  local packed = redis.call('HGET', KEYS[2], mid)
  if not packed then
    missing = missing + 1
  else
    local fields = fields_of(packed)
    if fields then
      redis.call('XADD', KEYS[3], '*', unpack(fields))
      moved = moved + 1
    else
      redis.call('XADD', KEYS[4], '*', 'stream', KEYS[3], 'id', '', 'group', ARGV[2],
        'handler', ARGV[3], 'reason', 'bad_scheduled_entry', 'error_type', 'BadScheduledEntry',
        'error', 'the fields of a delayed entry in ' .. KEYS[2] .. ' are not netstrings',
        'traceback', '', 'attempts', '0', 'first_failure_ms', string.format('%d', now),
        'last_failure_ms', string.format('%d', now),
        'f:_st_mid', mid, 'f:_st_scheduled', packed)
      bad = bad + 1
    end
  end
  redis.call('ZREM', KEYS[1], mid)
  redis.call('HDEL', KEYS[2], mid)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, bad, missing, nxt[2] or false, now}
"""

# KEYS: delayed set, delayed fields hash. ARGV: message ids (none: every delayed entry).
# Cancels delayed entries that are still scheduled. -> how many were
CANCEL_SCHEDULED = """
if #ARGV == 0 then
  local n = redis.call('ZCARD', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2])
  return n
end
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return n
"""

# KEYS: tick hash, stream. ARGV: last tick to record at least (ms), next tick (ms, '' for
# none), schedule text, then tick ms, message id, ... in ascending order.
# Claims periodic ticks: each tick later than the hash's `last` becomes one entry (its message
# id derived from the stream and the tick), and `last` moves to the latest tick, in one step:
# with any number of tickers every tick is added once. A `last` that is not a number (not
# ours) counts as none. -> {added, 1 if `last` moved (this call claimed or skipped ticks) else 0}
CLAIM_TICKS = """
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '') or -1
local last_text = nil
local added = 0
for i = 4, #ARGV, 2 do
  local tick = tonumber(ARGV[i])
  if tick > last then
    redis.call('XADD', KEYS[2], '*', '_st_mid', ARGV[i + 1], '_st_tick', ARGV[i])
    last, last_text, added = tick, ARGV[i], added + 1
  end
end
if tonumber(ARGV[1]) > last then last, last_text = tonumber(ARGV[1]), ARGV[1] end
if last_text then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[1], 'last', last_text, 'next', ARGV[2], 'schedule', ARGV[3],
    'claimed_at', string.format('%d', now))
end
if last_text then return {added, 1} end
return {added, 0}
"""
