"""The Lua scripts of the token store's lock and of the shared rate limiter.

The lock is released by a compare-and-delete (`RELEASE_LOCK`): only the holder's random
value frees it.

The limiter's shared state is one hash per limiter: next (the GCRA "next allowed time"),
last (when the latest start was let go), rate (after a cut; absent: the ceiling), hdr (the
ceiling a header set), last_cut, last_adjust, epoch (number of cuts), cut_at and cut_factor
(the last cut, to re-space waiters reserved before it). Times are Redis' clock in seconds,
kept as "%.6f" strings (Lua's own number formatting keeps only 14 digits). Each script
answers one string of space-separated fields, shown below as {a, b, ...}: redis-py parses
one string much faster than an array of them.

A slot is reserved at once (`ACQUIRE`), but a waiter is let go only by a second script
(`CONFIRM`) when it wakes: no sooner than its slot, and no sooner than one interval after
the latest start booked (`last`). A process that wakes late (a busy CPU, a stalled event
loop) then delays those behind it instead of ending up closer than one interval to them
(the server's sliding window counts starts, not reservations); those it delays are booked
at exact intervals, so the delay does not grow along the queue.

**Without qps/rpm** the schedule has no ceiling until a throttled answer: processes report
their starts every so often (`SYNC`, which counts them in two one-second buckets, c_sec,
c_cur, c_prev) and learn whether a limit is in force; the first throttled answer sets
`peak` to the starts of the last second, all processes together (`OPEN`), and the usual
`CUT` halves it. `peak` then stands for the ceiling, and `RELEASE` lifts the limit after a
quiet minute back at the peak.

**The token budget** (`tpm`) lives in the same hash (thdr: the header's budget, tscale:
the adaptive share, ttat: the pace's next allowed time, tratio: used/estimated tokens,
ttotal: tokens booked in the window, tlast: the latest booking, tseq: booking ids,
tcut/tadj: the last cut and adjustment) and in a sorted set beside it: one member
"id:tokens" per booking, scored by its time. A request is booked only when it may start
now (else it is told how long to wait and asks again), so bookings are made in time order
and a give-back or a settlement helps the next request at once; the price is that shared
waiters are not served in order (a large request may wait while smaller ones fit).
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE",
    "CONFIRM",
    "CUT",
    "GIVE_BACK",
    "HEADER",
    "OPEN",
    "RECOVER",
    "RELEASE",
    "RELEASE_LOCK",
    "SYNC",
    "TOKENS_HEADER",
    "TOKENS_SETTLE",
    "TOKENS_TAKE",
]

# KEYS[1] lock; ARGV: the holder's value -> 1 if deleted, else 0
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_LUA_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end
local function num(x) return string.format('%.17g', x) end
local function reply(...) return table.concat({...}, ' ') end
local function limits(configured, rate_field, hdr_field)
    local ceiling = tonumber(configured)
    local hdr = tonumber(hdr_field)
    if hdr and hdr < ceiling then ceiling = hdr end
    local rate = tonumber(rate_field) or ceiling
    if rate > ceiling then rate = ceiling end
    return rate, ceiling
end
"""

# the starts of all processes, counted in two one-second buckets (without a ceiling)
_LUA_STARTS = """
local function count_starts(n, c_sec, c_cur, c_prev)
    local sec = math.floor(now)
    local cur, prev = tonumber(c_cur) or 0, tonumber(c_prev) or 0
    local at = tonumber(c_sec)
    if at ~= sec then
        if at == sec - 1 then prev = cur else prev = 0 end
        cur = 0
    end
    cur = cur + n
    redis.call('HSET', KEYS[1], 'c_sec', tostring(sec), 'c_cur', tostring(cur), 'c_prev',
        tostring(prev))
    return prev * (1 - (now - sec)) + cur
end
"""

# the token budget's helpers: a booking's tokens, the budget a header may have lowered
_LUA_TOKENS = """
local function amount(member) return tonumber(string.match(member, ':([^:]+)$')) end
local function tlimit(tpm, hdr_field)
    local limit = tonumber(tpm)
    local hdr = tonumber(hdr_field)
    if hdr and hdr < limit then limit = hdr end
    return limit
end
"""

# KEYS[1] state; ARGV: configured rate, safety, state ttl (ms), seconds booked on top if let go
# -> {wait, slot, end of slot, epoch, rate, ceiling}; wait "0": go now (already let go)
ACQUIRE = (
    _LUA_COMMON
    + """
local s = redis.call('HMGET', KEYS[1], 'next', 'rate', 'hdr', 'epoch', 'last')
local rate, ceiling = limits(ARGV[1], s[2], s[3])
local interval = 1 / (rate * tonumber(ARGV[2]))
local slot = tonumber(s[1]) or now
local last = tonumber(s[5])
if last and last + interval > slot then slot = last + interval end
if slot < now then slot = now end
local finish = fmt(slot + interval)
if slot <= now then
    redis.call('HSET', KEYS[1], 'next', finish, 'last', fmt(now + tonumber(ARGV[4])))
else
    redis.call('HSET', KEYS[1], 'next', finish)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return reply(fmt(slot - now), fmt(slot), finish, s[4] or '0', num(rate), num(ceiling))
"""
)

# KEYS[1] state; ARGV: slot, epoch it was reserved in, configured rate, safety, seconds on
# top, lateness tolerated
# -> {wait, slot, epoch, go}: go "1": let go after `wait` (its start is booked now);
# go "0": the slot was stretched by a cut, come back after `wait`
CONFIRM = (
    _LUA_COMMON
    + """
local s = redis.call('HMGET', KEYS[1], 'epoch', 'cut_at', 'cut_factor', 'last', 'rate', 'hdr')
local epoch = s[1] or '0'
local slot = tonumber(ARGV[1])
if epoch ~= ARGV[2] then  -- cut since the reservation: the queue behind the cut stretches
    local cut_at = tonumber(s[2]) or now
    local factor = tonumber(s[3]) or 1
    if slot > cut_at then slot = cut_at + (slot - cut_at) * factor end
end
if slot > now then return reply(fmt(slot - now), fmt(slot), epoch, '0') end
local rate = limits(ARGV[3], s[5], s[6])
local interval = 1 / (rate * tonumber(ARGV[4]))
local last = tonumber(s[4])
if last and last + interval > slot then slot = last + interval end
if slot > now then  -- one interval after the latest start: booked, go then
    redis.call('HSET', KEYS[1], 'last', fmt(slot + tonumber(ARGV[5])))
    return reply(fmt(slot - now), fmt(slot), epoch, '1')
end
-- late: a little (the wake-up, this call) keeps the grid; more moves it, so those
-- behind keep their distance from this start
local booked = math.max(slot, now - tonumber(ARGV[6]))
redis.call('HSET', KEYS[1], 'last', fmt(booked + tonumber(ARGV[5])))
return reply('0', fmt(slot), epoch, '1')
"""
)

# KEYS[1] state; ARGV: end of the slot, slot -> '1' if handed back
GIVE_BACK = """
if redis.call('HGET', KEYS[1], 'next') == ARGV[1] then
    redis.call('HSET', KEYS[1], 'next', ARGV[2])
    return '1'
end
return '0'
"""

# KEYS[1] state; ARGV: configured rate, holdoff, factor, min rate, state ttl (ms)
# -> {cut (0/1), rate, ceiling}
CUT = (
    _LUA_COMMON
    + """
local s = redis.call('HMGET', KEYS[1], 'rate', 'hdr', 'last_cut', 'epoch', 'next')
local rate, ceiling = limits(ARGV[1], s[1], s[2])
local last = tonumber(s[3])
if last and now - last < tonumber(ARGV[2]) then return reply('0', num(rate), num(ceiling)) end
local new = math.max(rate * tonumber(ARGV[3]), math.min(tonumber(ARGV[4]), ceiling / 8))
if new >= rate then
    redis.call('HSET', KEYS[1], 'last_cut', fmt(now), 'last_adjust', fmt(now))
    return reply('0', num(rate), num(ceiling))
end
local factor = rate / new
local nxt = tonumber(s[5]) or now
if nxt > now then nxt = now + (nxt - now) * factor end
redis.call('HSET', KEYS[1], 'rate', num(new), 'last_cut', fmt(now), 'last_adjust', fmt(now),
    'epoch', tostring((tonumber(s[4]) or 0) + 1), 'cut_at', fmt(now), 'cut_factor', num(factor),
    'next', fmt(nxt))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return reply('1', num(new), num(ceiling))
"""
)

# KEYS[1] state; ARGV: configured rate, recovery, max step, state ttl (ms) -> {rate, ceiling}
RECOVER = (
    _LUA_COMMON
    + """
local s = redis.call('HMGET', KEYS[1], 'rate', 'hdr', 'last_adjust')
local rate, ceiling = limits(ARGV[1], s[1], s[2])
if not tonumber(s[1]) or rate >= ceiling then return reply(num(ceiling), num(ceiling)) end
local dt = math.min(now - (tonumber(s[3]) or now), tonumber(ARGV[3]))
if dt <= 0 then return reply(num(rate), num(ceiling)) end
rate = math.min(rate + tonumber(ARGV[2]) * ceiling * dt, ceiling)
redis.call('HSET', KEYS[1], 'rate', num(rate), 'last_adjust', fmt(now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return reply(num(rate), num(ceiling))
"""
)

# KEYS[1] state; ARGV: configured rate, header rate, state ttl (ms) -> {rate, ceiling}
HEADER = (
    _LUA_COMMON
    + """
local hdr = tonumber(redis.call('HGET', KEYS[1], 'hdr'))
local limit = tonumber(ARGV[2])
if not hdr or limit < hdr then redis.call('HSET', KEYS[1], 'hdr', ARGV[2]) end
local s = redis.call('HMGET', KEYS[1], 'rate', 'hdr')
local rate, ceiling = limits(ARGV[1], s[1], s[2])
if tonumber(s[1]) and tonumber(s[1]) > ceiling then
    redis.call('HSET', KEYS[1], 'rate', num(ceiling))
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return reply(num(rate), num(ceiling))
"""
)

# KEYS[1] state; ARGV: starts since the last report, state ttl (ms) -> peak, or "" (no limit)
SYNC = (
    _LUA_COMMON
    + _LUA_STARTS
    + """
local s = redis.call('HMGET', KEYS[1], 'peak', 'c_sec', 'c_cur', 'c_prev')
count_starts(tonumber(ARGV[1]), s[2], s[3], s[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return s[1] or ''
"""
)

# KEYS[1] state; ARGV: starts since the last report, min rate, state ttl (ms) -> peak
# The first throttled answer without a ceiling: the starts of the last second (all
# processes) become the ceiling, which CUT then halves.
OPEN = (
    _LUA_COMMON
    + _LUA_STARTS
    + """
local s = redis.call('HMGET', KEYS[1], 'peak', 'c_sec', 'c_cur', 'c_prev')
local observed = count_starts(tonumber(ARGV[1]), s[2], s[3], s[4])
if s[1] then return s[1] end
local peak = math.max(observed, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'peak', num(peak), 'rate', num(peak))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return num(peak)
"""
)

# KEYS[1] state; ARGV: quiet seconds -> '1' if the limit was lifted
RELEASE = (
    _LUA_COMMON
    + """
local s = redis.call('HMGET', KEYS[1], 'peak', 'rate', 'last_cut')
local peak, rate, cut = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
if not peak then return '1' end
if (rate and rate < peak) or (cut and now - cut < tonumber(ARGV[1])) then return '0' end
redis.call('HDEL', KEYS[1], 'peak', 'rate', 'hdr')
return '1'
"""
)

# KEYS[1] state, KEYS[2] bookings; ARGV: tokens, tpm, window (s), pace share, grace share,
# state ttl (ms) -> {wait, id, booked at, paced, budget}; wait "-1": larger than the budget;
# id "0": not booked, ask again after `wait`
TOKENS_TAKE = (
    _LUA_COMMON
    + _LUA_TOKENS
    + """
local n = tonumber(ARGV[1])
local W = tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'thdr', 'tscale', 'ttat', 'tratio', 'ttotal', 'tlast')
local limit = tlimit(ARGV[2], s[1])
if n > limit then return reply('-1', '0', '0', '0', num(limit)) end
local budget = limit * (tonumber(s[2]) or 1)
local pace = budget * tonumber(ARGV[4]) / W
local total = tonumber(s[5]) or 0
local cutoff = fmt(now - W)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
if #gone > 0 then
    for _, m in ipairs(gone) do total = total - amount(m) end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
end
if total < 0 then total = 0 end
local at = now
local tat = tonumber(s[3])
if tat and tat > at then at = tat end
local last = tonumber(s[6])
if last and last > at then at = last end
local excess = total + n - budget
if excess > 0 then  -- wait for the oldest bookings to leave the window
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    local free_at = nil
    for i = 1, #entries, 2 do
        excess = excess - amount(entries[i])
        if excess <= 0 then free_at = tonumber(entries[i + 1]) + W break end
    end
    -- a cut took the budget below this request: it goes alone, once the window is empty
    if not free_at and #entries > 0 then free_at = tonumber(entries[#entries]) + W end
    if free_at and free_at > at then at = free_at end
end
if at > now then  -- not booked: waiting here, a give-back would not reach it
    redis.call('HSET', KEYS[1], 'ttotal', num(total))
    return reply(fmt(at - now), '0', fmt(at), '0', num(budget))
end
local id = redis.call('HINCRBY', KEYS[1], 'tseq', 1)
redis.call('ZADD', KEYS[2], fmt(at), id .. ':' .. ARGV[1])
local ratio = tonumber(s[4]) or 1
if ratio > 1 then ratio = 1 end
local paced = n * ratio
local base = at - tonumber(ARGV[5]) * W
if tat and tat > base then base = tat end
redis.call('HSET', KEYS[1], 'ttotal', num(total + n), 'ttat', fmt(base + paced / pace),
    'tlast', fmt(at))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return reply(fmt(at - now), tostring(id), fmt(at), num(paced), num(budget))
"""
)

# KEYS[1] state, KEYS[2] bookings; ARGV: id, tokens charged, tokens used, tokens paced,
# throttled (0/1), tpm, window, pace share, holdoff, factor, min share, recovery, max step,
# ratio weight, state ttl (ms) -> {budget}
TOKENS_SETTLE = (
    _LUA_COMMON
    + _LUA_TOKENS
    + """
local s = redis.call('HMGET', KEYS[1], 'thdr', 'tscale', 'ttat', 'tratio', 'ttotal', 'tcut',
    'tadj')
local charged, used = tonumber(ARGV[2]), tonumber(ARGV[3])
local member = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[2], member)
local total = tonumber(s[5]) or 0
if score then  -- still in the window
    redis.call('ZREM', KEYS[2], member)
    if used > 0 then redis.call('ZADD', KEYS[2], score, ARGV[1] .. ':' .. ARGV[3]) end
    total = math.max(total + used - charged, 0)
end
local limit = tlimit(ARGV[6], s[1])
local scale = tonumber(s[2]) or 1
local fields = {'ttotal', num(total)}
if ARGV[5] == '1' then
    local last = tonumber(s[6])
    if not last or now - last >= tonumber(ARGV[9]) then
        scale = math.max(scale * tonumber(ARGV[10]), tonumber(ARGV[11]))
        table.insert(fields, 'tscale') table.insert(fields, num(scale))
        table.insert(fields, 'tcut') table.insert(fields, fmt(now))
        table.insert(fields, 'tadj') table.insert(fields, fmt(now))
    end
elseif used > 0 and scale < 1 then
    local dt = math.min(now - (tonumber(s[7]) or now), tonumber(ARGV[13]))
    if dt > 0 then
        scale = math.min(1, scale + tonumber(ARGV[12]) * dt)
        table.insert(fields, 'tscale') table.insert(fields, num(scale))
        table.insert(fields, 'tadj') table.insert(fields, fmt(now))
    end
end
if charged > 0 and used > 0 then
    local ratio = tonumber(s[4]) or 1
    ratio = ratio + tonumber(ARGV[14]) * (used / charged - ratio)
    table.insert(fields, 'tratio') table.insert(fields, num(ratio))
end
local tat = tonumber(s[3])
if tat then
    local pace = limit * scale * tonumber(ARGV[8]) / tonumber(ARGV[7])
    tat = tat + (used - tonumber(ARGV[4])) / pace
    table.insert(fields, 'ttat') table.insert(fields, fmt(tat))
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[15])
return num(limit * scale)
"""
)

# KEYS[1] state; ARGV: the header's tokens per minute, state ttl (ms) -> {its lowest}
TOKENS_HEADER = (
    _LUA_COMMON
    + """
local hdr = tonumber(redis.call('HGET', KEYS[1], 'thdr'))
local limit = tonumber(ARGV[1])
if not hdr or limit < hdr then
    redis.call('HSET', KEYS[1], 'thdr', ARGV[1])
    hdr = limit
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return num(hdr)
"""
)
