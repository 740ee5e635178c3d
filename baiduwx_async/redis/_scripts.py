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
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "CONFIRM", "CUT", "GIVE_BACK", "HEADER", "RECOVER", "RELEASE_LOCK"]

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
