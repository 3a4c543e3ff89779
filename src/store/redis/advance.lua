-- advance: move the revocation revision (unix ms) forward: to now, or one past the
-- current value when that is not behind now, so that it never repeats or goes back,
-- whichever instance revokes. "Now" is the later of Redis's clock and the revoking
-- instance's: CRL numbers are at least the start of the instance's CRL slot, so a
-- revision behind it (a Redis clock running late) would give a new list an old number.
--
-- KEYS[1]  <prefix>revoked:revision
-- ARGV[1]  the revoking instance's clock (unix ms)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
now = math.max(now, tonumber(ARGV[1]) or 0)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local next = math.max(current + 1, now)
redis.call('SET', KEYS[1], next)
return next
