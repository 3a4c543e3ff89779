-- consume: use up a pending token and, in the same step, record the certificate issued
-- for it. Of any number of concurrent calls with one token, on any number of instances,
-- exactly one gets 1; a certificate is recorded exactly when its token is consumed, and
-- never for a blocked device (whichever instance issued the token, and whenever).
--
-- KEYS[1]  <prefix>device:{<id>}         -> jti of the pending token
-- KEYS[2]  <prefix>token:{<id>}:<jti>    -> that token's record
-- KEYS[3]  <prefix>blocked:{<id>}        -> set while the device is blocked
-- KEYS[4]  <prefix>certs:{<slot tag>}    -> certificate records of the slot's devices
--          (the tag falls in the device's slot, so this is one slot still)
--          KEYS[3] and KEYS[4] come together, when a certificate is to be recorded; without
--          them the token is only taken away (an admin revoking it)
-- ARGV[1]  the jti presented
-- with KEYS[4]:
-- ARGV[2]  the serial (16 bytes), ARGV[3] the packed record, ARGV[4] keep-until (unix s)
-- ARGV[5]  '1' to also drop the bucket's records past their keep-until, ARGV[6] now
--          (unix s), ARGV[7] the retention after expiry (s)
--
-- Returns 1 when this call consumed the token; 0 when it was not pending (never issued,
-- already used, replaced, revoked or expired: Redis dropped it at its TTL); 2 when the
-- device is blocked (the token stays, unused).
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then
  return 2
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
if KEYS[4] then
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
  -- The bucket outlives its newest record by up to a day, so that most certificates
  -- (issued within a day of the one before in the bucket) need no second write here.
  local keep = tonumber(ARGV[4])
  if redis.call('EXPIRETIME', KEYS[4]) < keep then
    redis.call('EXPIREAT', KEYS[4], keep + 86400)
  end
  if ARGV[5] == '1' then
    -- A record: u8 id length, id, u32 issued_at, u32 not_after, ...
    local now, retention = tonumber(ARGV[6]), tonumber(ARGV[7])
    local all = redis.call('HGETALL', KEYS[4])
    for i = 1, #all, 2 do
      local record = all[i + 1]
      local not_after = struct.unpack('>I4', record, 2 + string.byte(record, 1) + 4)
      if not_after + retention < now then
        redis.call('HDEL', KEYS[4], all[i])
      end
    end
  end
end
return 1
