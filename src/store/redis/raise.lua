-- raise: record a loss of writes as a new epoch. The epoch only ever goes up, whichever
-- instance writes last, and `at` (unix seconds) is the latest moment a loss was seen.
--
-- KEYS[1]  <prefix>lost-writes  (hash: epoch, at)
-- ARGV[1]  the new epoch, ARGV[2] the moment (0 when unknown)
--
-- Returns {epoch, at} as recorded after this call.
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if tonumber(ARGV[1]) > epoch then
  epoch = tonumber(ARGV[1])
end
if tonumber(ARGV[2]) > at then
  at = tonumber(ARGV[2])
end
redis.call('HSET', KEYS[1], 'epoch', epoch, 'at', at)
return {epoch, at}
