"""Lua scripts: each step that must be atomic on Redis is one script.

Every script that moves an entry checks first that it is still pending on *this* consumer,
so a worker whose lease was lost can never steal an entry back or settle it twice.

Lua hands at most ~8,000 values to one command (``unpack`` and the C stack), while Redis
accepts entries of any number of fields. No script here ``unpack``s a list whose length
the entry decides: the dead-letter fields of a big entry arrive packed into one value
(:mod:`streamtasks.deadletter`), and a replay too big for :data:`REPLAY` is done with
``WATCH``/``MULTI`` instead. Loops over ARGV (``RESET``) have no such limit.
"""

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
# KEYS: a handler's rate limit (streamtasks.keys.rate_key): 'tat_rate tat_peak', microseconds.
# ARGV: interval_us, bank, peak_interval_us, burst, want, chunk, now_us ('': Redis' TIME, the one
# clock every worker shares).
# Dual GCRA (streamtasks.limits.gcra is the same arithmetic): grants up to `want` calls, keeping
# tat_rate <= now + bank * interval and tat_peak <= now + burst * peak_interval; when fewer were
# granted, says how long until `chunk` more (at most burst) would be. A value that is not two
# whole numbers (written by someone else) counts as a new limit, and one further ahead than a
# grant can leave it (a clock that went back) as the furthest a grant can. Whole microseconds
# throughout (exact in Lua's doubles). -> {granted, wait_us, now_us}
GCRA = """
local now
if ARGV[7] == '' then
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
else
  now = tonumber(ARGV[7])
end
local want = tonumber(ARGV[5])
local cells = {{tonumber(ARGV[1]), tonumber(ARGV[2])}, {tonumber(ARGV[3]), tonumber(ARGV[4])}}
local tat = {0, 0}
local state = redis.call('GET', KEYS[1])
if state then
  local a, b = string.match(state, '^(%d+) (%d+)$')
  if a then tat = {tonumber(a), tonumber(b)} end
end
local granted = want
for i = 1, 2 do
  if tat[i] < now then tat[i] = now end
  local ceiling = now + cells[i][2] * cells[i][1]
  if tat[i] > ceiling then tat[i] = ceiling end
  local room = math.floor((now + cells[i][2] * cells[i][1] - tat[i]) / cells[i][1])
  if room < granted then granted = room end
end
if granted < 0 then granted = 0 end
local wait = 0
if granted < want then
  local need = math.min(want - granted, math.max(1, tonumber(ARGV[6])), cells[2][2])
  for i = 1, 2 do
    local late = tat[i] + (granted + need - cells[i][2]) * cells[i][1] - now
    if late > wait then wait = late end
  end
end
if granted > 0 then
  local a = tat[1] + granted * cells[1][1]
  local b = tat[2] + granted * cells[2][1]
  local ttl_ms = math.floor((math.max(a, b) - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%d %d', a, b), 'PX', string.format('%d', ttl_ms))
end
return {granted, wait, now}
"""

# KEYS: a handler's concurrency semaphore (streamtasks.keys.concurrency_key): a sorted set with
# one member '<holder>:<i>' per slot held, scored by its expiry (ms). ARGV: limit, want,
# holder, ttl_ms, now_ms ('': Redis' TIME).
# Drops expired slots (a crashed holder's), then takes up to `want` free ones for `holder`,
# each expiring ttl_ms from now unless renewed (SEM_RENEW). -> {granted, held in all,
# ms until the first slot held expires (-1: none held)}
SEM_ACQUIRE = """
local now
if ARGV[5] == '' then
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
else
  now = tonumber(ARGV[5])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
local held = redis.call('ZCARD', KEYS[1])
local granted = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - held)
if granted < 0 then granted = 0 end
local ttl = tonumber(ARGV[4])
for i = 1, granted do
  redis.call('ZADD', KEYS[1], string.format('%d', now + ttl), ARGV[3] .. ':' .. i)
end
if granted > 0 then redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl)) end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local until_first = -1
if first[2] then until_first = tonumber(first[2]) - now end
return {granted, held + granted, until_first}
"""

# KEYS: a concurrency semaphore. ARGV: ttl_ms, now_ms ('': Redis' TIME), member...
# Pushes the expiry of slots still held (a lease renewal while the batch runs); a slot that
# expired meanwhile is not taken back, whether or not an acquire has removed it. -> slots renewed
SEM_RENEW = """
local now
if ARGV[2] == '' then
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
else
  now = tonumber(ARGV[2])
end
local expiry = string.format('%d', now + tonumber(ARGV[1]))
local n = 0
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
    n = n + 1
  end
end
if n > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""
