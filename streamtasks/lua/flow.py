"""The scripts of flow control: the rate limits' dual GCRA and the ``max_concurrency`` semaphore."""

from __future__ import annotations

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


def _now_ms(arg: int) -> str:
    """Lua that sets ``now`` (ms) to ``ARGV[arg]``, or to Redis' TIME when that is ``''``."""
    return (
        "\nlocal now"
        f"\nif ARGV[{arg}] == '' then"
        "\n  local tm = redis.call('TIME')"
        "\n  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)"
        "\nelse"
        f"\n  now = tonumber(ARGV[{arg}])"
        "\nend"
    )


# KEYS: a handler's concurrency semaphore (streamtasks.keys.concurrency_key): a sorted set with
# one member '<holder>:<i>' per slot held, scored by its expiry (ms). ARGV: limit, want,
# holder, ttl_ms, now_ms ('': Redis' TIME).
# Drops expired slots (a crashed holder's), then takes up to `want` free ones for `holder`,
# each expiring ttl_ms from now unless renewed (SEM_RENEW). -> {granted, held in all,
# ms until the first slot held expires (-1: none held)}
SEM_ACQUIRE = (
    _now_ms(5)
    + """
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
)

# KEYS: a concurrency semaphore. ARGV: ttl_ms, now_ms ('': Redis' TIME), member...
# Pushes the expiry of slots still held (a lease renewal while the batch runs); a slot that
# expired meanwhile is not taken back, whether or not an acquire has removed it. -> slots renewed
SEM_RENEW = (
    _now_ms(2)
    + """
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
)
