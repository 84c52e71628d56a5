"""The Lua scripts that make each Redis operation one atomic step. Redis runs a script alone, so a
read and the write that depends on it cannot interleave with another replica's.

Each script takes `now` as an argument; an empty string means the server's clock (TIME), so
replicas whose clocks disagree still agree on every bucket. What decides is the moment a key stores
(a TAT, a window's start, an expiry); Redis drops the key half a second after that moment has
passed on its own clock (GRACE_MS), so a `now` injected or skewed by less than that reads the same.

The GCRA sums are those of `airlock.store.embedded.limits.gcra_take` and `gcra_correct`, in whole
microseconds, in the same order, so both backends give the same answers. Numbers go back to Python
as strings where they are not whole (Redis truncates a Lua number to an integer reply).
"""

from __future__ import annotations

GRACE_MS = 500

# KEYS[1] the bucket. ARGV: emission interval (us), burst, cost or delta, now (us) or '', '1' to correct,
# GRACE_MS.
# Returns {allowed 0|1, remaining tokens, wait (us), ahead (us)}. The key holds the TAT and expires
# when it is reached: an absent key is a full bucket.
BUCKET = """
local grace = tonumber(ARGV[6])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[4])
end
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local tau = burst * emission
local allowed, wait, new_tat
local write = false
if ARGV[5] == '1' then
  new_tat = math.max(tat + math.floor(amount * emission + 0.5), now)
  local next_at = new_tat + emission - tau
  allowed = next_at <= now
  wait = next_at - now
  write = true
else
  local candidate = tat + math.floor(amount * emission + 0.5)
  local allow_at = candidate - tau
  if allow_at <= now then
    allowed, wait, new_tat = true, 0, candidate
    write = candidate ~= tat
  else
    allowed, wait, new_tat = false, allow_at - now, tat
  end
end
if write then
  if new_tat > now then
    redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + grace)
  else
    redis.call('DEL', KEYS[1])
  end
end
local ahead = math.max(new_tat - now, 0)
local remaining = math.max(math.floor((tau - ahead) / emission), 0)
if allowed then wait = 0 end
return {allowed and 1 or 0, remaining, math.max(wait, 0), ahead}
"""

# KEYS[1] the counter of one key and window length. ARGV: amount, limit or '' (no limit), window (s),
# now (s) or '', '1' to only read, GRACE_MS. The key holds the start of the window it counts and its
# total, and expires when that window ends. Returns {allowed 0|1, total, seconds to the window's end}.
BUDGET = """
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[4])
end
local window = tonumber(ARGV[3])
local start = math.floor(now / window) * window
local reset = start + window - now
local total = 0
local held = redis.call('HMGET', KEYS[1], 'start', 'total')
if held[1] and tonumber(held[1]) == start then total = tonumber(held[2]) end
if ARGV[5] == '1' then
  return {1, string.format('%.17g', total), string.format('%.17g', reset)}
end
local amount = tonumber(ARGV[1])
local allowed = ARGV[2] == '' or amount <= 0 or total + amount <= tonumber(ARGV[2])
if allowed then
  total = total + amount
  redis.call('HSET', KEYS[1], 'start', string.format('%.17g', start), 'total', string.format('%.17g', total))
  redis.call('PEXPIRE', KEYS[1], math.ceil(reset * 1000) + tonumber(ARGV[6]))
end
return {allowed and 1 or 0, string.format('%.17g', total), string.format('%.17g', reset)}
"""

# KEYS[1] the key. ARGV: request digest, ttl (s), now (s) or '', GRACE_MS.
# Returns {state} or {'completed', response}.
# The hash holds the digest, the state, the moment it expires and, once completed, the response; Redis
# expires it then too (the stored moment decides, so that an injected `now` is honoured).
CLAIM = """
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[3])
end
local held = redis.call('HMGET', KEYS[1], 'sha', 'state', 'expires', 'response')
if held[1] and tonumber(held[3]) > now then
  if held[1] ~= ARGV[1] then return {'mismatch'} end
  if held[2] == 'completed' then return {'completed', held[4]} end
  return {'in_progress'}
end
local ttl = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'sha', ARGV[1], 'state', 'in_progress', 'expires', string.format('%.17g', now + ttl))
redis.call('PEXPIRE', KEYS[1], math.max(math.ceil(ttl * 1000), 0) + tonumber(ARGV[4]))
return {'new'}
"""

# KEYS[1] the key. ARGV: response, now (s) or ''. Returns 1 when it was in progress and is now completed.
COMPLETE = """
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[2])
end
local held = redis.call('HMGET', KEYS[1], 'state', 'expires')
if held[1] == 'in_progress' and tonumber(held[2]) > now then
  redis.call('HSET', KEYS[1], 'state', 'completed', 'response', ARGV[1])
  return 1
end
return 0
"""

# KEYS[1] the key. Deletes it when in progress. Returns 1 when it did.
RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'in_progress' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
