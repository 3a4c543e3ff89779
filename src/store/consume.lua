-- consume: use up a pending token. Of any number of concurrent calls with one token,
-- on any number of instances, exactly one gets 1.
--
-- KEYS[1]  <prefix>device:{<id>}         -> jti of the pending token
-- KEYS[2]  <prefix>token:{<id>}:<jti>    -> that token's record
-- ARGV[1]  the jti presented
--
-- Returns 1 when this call consumed the token; 0 when it was not pending (never issued,
-- already used, replaced, revoked or expired: Redis dropped it at its TTL).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
