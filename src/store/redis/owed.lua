-- owed: the debts older than ARGV[1] seconds by Redis's clock, oldest first, at most
-- ARGV[2] of them.
--
-- KEYS[1]  <prefix>revoked:pending
local now = tonumber(redis.call('TIME')[1])
return redis.call('ZRANGE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'BYSCORE',
  'LIMIT', 0, tonumber(ARGV[2]))
