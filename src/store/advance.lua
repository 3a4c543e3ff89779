-- advance: move the revocation revision (unix ms) forward: to now, or one past the
-- current value when that is not behind now, so that it never repeats or goes back.
--
-- KEYS[1]  <prefix>revoked:revision
-- ARGV[1]  now (unix ms)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local next = math.max(current + 1, tonumber(ARGV[1]))
redis.call('SET', KEYS[1], next)
return next
