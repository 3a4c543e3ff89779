-- owe: note that a revocation owes the revoked list a listing, scored by Redis's clock,
-- so that every instance judges the debt's age by the same clock.
--
-- KEYS[1]  <prefix>revoked:pending
-- ARGV[1]  the serial (upper-case hex)
local now = redis.call('TIME')
redis.call('ZADD', KEYS[1], now[1], ARGV[1])
return 1
