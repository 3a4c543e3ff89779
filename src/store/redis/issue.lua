-- issue: make ARGV[1] the one pending token of a device, replacing the one the caller saw,
-- unless the device is blocked.
--
-- KEYS[1]  <prefix>device:{<id>}         -> jti of the pending token
-- KEYS[2]  <prefix>token:{<id>}:<jti>    -> the new token's record
-- KEYS[3]  <prefix>blocked:{<id>}        -> the device's block, when it is blocked
-- KEYS[4]  <prefix>token:{<id>}:<seen>   -> the record being replaced (only when ARGV[4] ~= '')
-- ARGV[1] jti, ARGV[2] TTL in seconds, ARGV[3] record JSON, ARGV[4] jti the caller saw pending
--
-- Invariant: a device has at most one pending token; its device key and the token record
-- it names are written and deleted together, with one TTL. Every key is declared (the
-- braces put them in one cluster slot). When the pending token is not the one the caller
-- saw, nothing is written: the script answers the jti really pending, and the caller
-- retries with that token's key declared. A blocked device gets {2, ''} and no token.
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {2, ''}
end
local pending = redis.call('GET', KEYS[1]) or ''
if pending ~= ARGV[4] then
  return {0, pending}
end
if pending ~= '' then
  redis.call('DEL', KEYS[4])
end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {1, ''}
