-- renew: record the certificate that renews a device's previous one, if the device is
-- not blocked, the previous certificate is recorded for this device and not revoked, and
-- the proof was not used; with ARGV[6], revoke the previous certificate (superseded) in
-- the same step.
--
-- KEYS[1]  <prefix>blocked:{<id>}
-- KEYS[2]  <prefix>certs:{<slot tag>}    the device's slot: both certificates' records
-- KEYS[3]  <prefix>proof:{<id>}:<proof>  the proof's single use (absent for mutual TLS)
-- ARGV[1]  the new serial, ARGV[2] its packed record, ARGV[3] its keep-until (unix s)
-- ARGV[4]  the previous serial, ARGV[5] the proof's
--          remaining life (s), ARGV[6] the revocation time ('' to keep the previous one),
-- ARGV[7]  the revocation reason code
--
-- ARGV[8]  the device id: the previous record must be this device's
--
-- Returns {1, previous record revoked now or ''}, {2, ''} blocked, {3, ''} the previous
-- certificate is revoked, {4, ''} the proof was used, {5, ''} the previous certificate is
-- not recorded for this device.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {2, ''}
end
local previous = redis.call('HGET', KEYS[2], ARGV[4])
-- A record: u8 id length, id, ...
if not previous or string.sub(previous, 2, 1 + string.byte(previous, 1)) ~= ARGV[8] then
  return {5, ''}
end
if struct.unpack('>I4', previous, #previous - 4) ~= 0 then
  return {3, ''}
end
if KEYS[3] and not redis.call('SET', KEYS[3], 1, 'NX', 'EX', ARGV[5]) then
  return {4, ''}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local keep = tonumber(ARGV[3])
if redis.call('EXPIRETIME', KEYS[2]) < keep then
  redis.call('EXPIREAT', KEYS[2], keep + 86400)
end
if ARGV[6] ~= '' then
  previous = string.sub(previous, 1, #previous - 5)
    .. struct.pack('>I4', tonumber(ARGV[6])) .. string.char(tonumber(ARGV[7]))
  redis.call('HSET', KEYS[2], ARGV[4], previous)
  return {1, previous}
end
return {1, ''}
