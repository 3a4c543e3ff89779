-- record: write a certificate record issued while Redis was away (the consume script
-- writes all the others).
--
-- KEYS[1]  <prefix>certs:{<slot tag>}
-- ARGV[1]  the serial (16 bytes), ARGV[2] the packed record, ARGV[3] keep-until (unix s)
--
-- A record already there is kept: it may carry a revocation.
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local keep = tonumber(ARGV[3])
if redis.call('EXPIRETIME', KEYS[1]) < keep then
  redis.call('EXPIREAT', KEYS[1], keep)
end
return 1
