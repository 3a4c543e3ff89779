-- advance: move the revocation revision (unix ms, Redis's clock) forward: to now, or one
-- past the current value when that is not behind now, so that it never repeats or goes
-- back, whichever instance revokes.
--
-- KEYS[1]  <prefix>revoked:revision
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local next = math.max(current + 1, now)
redis.call('SET', KEYS[1], next)
return next
