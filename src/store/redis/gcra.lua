-- gcra: one request against a rate limit shared by every instance (the generic cell rate
-- algorithm, as redis-cell does it): `burst` requests at once, then one every
-- `emission` microseconds.
--
-- KEYS[1]  <prefix>rl:{<device>} or <prefix>rl:ip:{<address>}  -> the theoretical arrival
--          time (µs) of the next request; it expires when the limit has fully recovered
-- ARGV[1]  emission interval in µs, ARGV[2] burst
--
-- Returns {1, 0} when the request is allowed (and counted); {0, µs} when it is not, with
-- the wait until it would be. Redis's own clock is the clock, so instances agree.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local next_tat = tat + emission
local allowed_at = next_tat - burst * emission
if allowed_at > now then
  return {0, allowed_at - now}
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000))
return {1, 0}
