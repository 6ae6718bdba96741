"""The scripts of an entry's way through a group: settle, reclaim, hand back, dead-letter,
store a result, replay, trim, and the consumer hygiene's removal."""

from __future__ import annotations

# KEYS: stream. ARGV: cap id ('' for none).
# Ack-aware trimming (streamtasks.worker.trim.trim_point is the same rule in Python): every
# group's bound is its oldest pending id, or just past its last-delivered id when nothing is
# pending; the stream is trimmed (XTRIM MINID, exact) below the lowest bound, and below the
# cap (now - retention) if that is lower. No group: nothing is trimmed. Atomic, so a group
# created or moved back between looking and trimming cannot be overtaken.
# -> {removed, minid or '', holder: group name, '' for the cap, or '*' for "no group"}
TRIM_ACKED = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms, seq
end
local function num_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return num_less(am, bm) end
  return num_less(as, bs)
end
local function after(id)
  local ms, seq = parse(id)
  if #seq < 16 then return ms .. '-' .. string.format('%d', tonumber(seq) + 1) end
  return string.format('%d', tonumber(ms) + 1) .. '-0'
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, '', '*'} end
local best, holder = nil, ''
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local bound
  if tonumber(info['pending']) > 0 then
    bound = redis.call('XPENDING', KEYS[1], info['name'])[2]
  else
    bound = after(info['last-delivered-id'])
  end
  if best == nil or less(bound, best) then best, holder = bound, info['name'] end
end
if ARGV[1] ~= '' and less(ARGV[1], best) then best, holder = ARGV[1], '' end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', best)
return {removed, best, holder}
"""

# KEYS: stream. ARGV: group, consumer, min_idle_ms, cursor, count.
# -> {next_cursor, entries, delivery_counts, deleted_ids}
RECLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, e in ipairs(r[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if p[1] then counts[i] = p[1][4] else counts[i] = 1 end
end
return {r[1], r[2], counts, r[3] or {}}
"""

# KEYS: stream. ARGV: group, consumer, idle_ms, retrycount (-1: keep), ids...
# Sets the idle time (and optionally the delivery count) of entries still pending on us.
# idle 0 extends a lease; idle > visibility timeout hands the entry to any consumer now;
# idle = visibility timeout - delay schedules a retry `delay` from now. -> count touched
RESET = """
local n = 0
for i = 5, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if p[1] then
    if ARGV[4] == '-1' then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    else
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3],
                 'RETRYCOUNT', ARGV[4], 'JUSTID')
    end
    n = n + 1
  end
end
return n
"""

# KEYS: stream, dead-letter stream, failures hash[, result key].
# ARGV: group, consumer, id, maxlen (0: none), now_ms[, result ttl_ms, outcome], field, value,
# ... (at most deadletter.MAX_SCRIPT_VALUES field/value items: dead_letter_fields packs bigger
# entries). With a result key (a handler with results=True), ARGV 6 and 7 are there too.
# Adds the dead letter (with first_failure_ms from the failures hash) and acks the source
# entry in one step, only if it is still pending on us; with a result key, stores the outcome
# for the caller in the same step: 'd<dead-letter id> <outcome>' (results.py), unless a value
# is stored there already (a value, once stored, never changes).
# -> dead-letter entry id (with a result key: {id, the stored outcome}), or false when the
# entry was no longer ours.
DEAD_LETTER = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if not p[1] then return false end
local args = {KEYS[2]}
if ARGV[4] ~= '0' then
  table.insert(args, 'MAXLEN'); table.insert(args, '~'); table.insert(args, ARGV[4])
end
table.insert(args, '*')
local first = redis.call('HGET', KEYS[3], ARGV[3]) or ARGV[5]
table.insert(args, 'first_failure_ms'); table.insert(args, first)
local from = 6
if KEYS[4] then from = 8 end
for i = from, #ARGV do table.insert(args, ARGV[i]) end
local id = redis.call('XADD', unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[3])
if not KEYS[4] then return id end
local cur = redis.call('GET', KEYS[4])
if (not cur) or string.sub(cur, 1, 1) == 'd' then
  cur = 'd' .. id .. ' ' .. ARGV[7]
  redis.call('SET', KEYS[4], cur, 'PX', ARGV[6])
end
return {id, cur}
"""

# KEYS: stream, result key. ARGV: group, entry id, ttl_ms, value ('v<json>', results.py).
# The handler of a results=True stream succeeded: store its value and ack, in one step, so an
# entry is never acked without its result. The first value stored wins (a redelivery, or a
# second entry sent with the same message id, cannot change the answer); a dead-letter
# outcome stored before (the message was dead-lettered, then replayed) is replaced.
# -> the outcome stored now (ours, or the one that was there first).
SETTLE_RESULT = """
local cur = redis.call('GET', KEYS[2])
if (not cur) or string.sub(cur, 1, 1) == 'd' then
  cur = ARGV[4]
  redis.call('SET', KEYS[2], cur, 'PX', ARGV[3])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return cur
"""

# KEYS: reply stream (a caller's process). ARGV: maxlen, result identity, stored outcome.
# Tells a waiting caller its result is stored; a reply stream that expired (its process is
# gone) is not re-created. -> 1 notified, 0 nobody waits there any more
NOTIFY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'k', ARGV[2], 'v', ARGV[3])
return 1
"""

# KEYS: dead-letter stream, target stream. ARGV: dead-letter id, then field, value, ... to add
# (at most deadletter.MAX_SCRIPT_VALUES of them; deadletter.replay does bigger ones by MULTI).
# Moves a dead letter back onto its stream; a second replay of the same id finds nothing.
REPLAY = """
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if not e[1] then return false end
local args = {KEYS[2], '*'}
for i = 2, #ARGV do table.insert(args, ARGV[i]) end
local id = redis.call('XADD', unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""

# KEYS: stream. ARGV: group, last-delivered-id seen, entries-read seen, entries-read to set.
# Counts entries removed before the group read them as read (so its lag can drain), only if
# the group has not moved since it was sampled. -> 1 done, 0 the group moved (or is gone)
REPAIR_READ_COUNTER = """
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == ARGV[1] then
    if info['last-delivered-id'] ~= ARGV[2] or info['entries-read'] ~= tonumber(ARGV[3]) then
      return 0
    end
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2], 'ENTRIESREAD', ARGV[4])
    return 1
  end
end
return 0
"""

# KEYS: stream. ARGV: group, consumer, min_idle_ms.
# Deletes the consumer from the group only if it holds no pending entry and has not tried to
# read for min_idle_ms (XINFO CONSUMERS "idle"), both looked at in the same atomic step as the
# XGROUP DELCONSUMER: a consumer that read or was given an entry meanwhile is kept.
# (Whether a live worker owns it is asked before, from its heartbeat key: another key, which
# on Redis Cluster lives in another slot. Deleting an empty consumer never loses an entry: a
# worker that still reads under its name is recreated by its next XREADGROUP.)
# -> 1 deleted, 0 kept (or already gone)
FORGET_CONSUMER = """
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] == ARGV[2] then
    if tonumber(info['pending']) > 0 or tonumber(info['idle']) < tonumber(ARGV[3]) then return 0 end
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
    return 1
  end
end
return 0
"""
