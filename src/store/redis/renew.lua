-- renew: record the certificate that renews a device's previous one, if the device is
-- not blocked, the proof was not used, and the previous certificate is recorded for this
-- device, not renewed before and not revoked; the previous certificate then names its
-- successor, and what was handed out is kept for a retry (with a new proof: a proof
-- still gets one answer). With ARGV[6], revoke the previous certificate (superseded) in
-- the same step.
--
-- KEYS[1]  <prefix>blocked:{<id>}
-- KEYS[2]  <prefix>certs:{<slot tag>}    the device's slot: both certificates' records
-- KEYS[3]  <prefix>renewed:{<id>}        previous serial -> its successor's serial
-- KEYS[4]  <prefix>handover:{<id>}:<previous serial hex>   what the renewal handed out
-- KEYS[5]  <prefix>proof:{<id>}:<proof>  the proof's single use (absent for mutual TLS)
-- ARGV[1]  the new serial, ARGV[2] its packed record, ARGV[3] its keep-until (unix s)
-- ARGV[4]  the previous serial, ARGV[5] the proof's remaining life (s), ARGV[6] the
--          revocation time ('' to keep the previous one), ARGV[7] the revocation reason
--          code, ARGV[8] the device id: the previous record must be this device's
-- ARGV[9]  the handover (`<serial> <not_after> <csr_key>` line, then the PEM), ARGV[10]
--          the new key's csr_key, ARGV[11] how long the handover is kept (s)
--
-- Returns {1, previous record revoked now or ''}, {2, ''} blocked, {3, ''} the previous
-- certificate is revoked, {4, ''} the proof was used, {5, ''} the previous certificate is
-- not recorded for this device, {6, handover} renewed moments ago for this key: the
-- same answer again, {7, ''} renewed before.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {2, ''}
end
local previous = redis.call('HGET', KEYS[2], ARGV[4])
-- A record: u8 id length, id, ..., u32 revoked at, u8 reason code.
if not previous or string.sub(previous, 2, 1 + string.byte(previous, 1)) ~= ARGV[8] then
  return {5, ''}
end
if KEYS[5] and redis.call('EXISTS', KEYS[5]) == 1 then
  return {4, ''}
end
local revoked = struct.unpack('>I4', previous, #previous - 4) ~= 0
local superseded = string.byte(previous, #previous) == 4
if redis.call('HEXISTS', KEYS[3], ARGV[4]) == 1 and (not revoked or superseded) then
  local given = redis.call('GET', KEYS[4])
  if given then
    local head = string.sub(given, 1, string.find(given, '\n', 1, true) - 1)
    if string.sub(head, -#ARGV[10] - 1) == ' ' .. ARGV[10] then
      if KEYS[5] then
        redis.call('SET', KEYS[5], 1, 'EX', ARGV[5])
      end
      return {6, given}
    end
  end
  return {7, ''}
end
if revoked then
  return {3, ''}
end
if KEYS[5] then
  redis.call('SET', KEYS[5], 1, 'EX', ARGV[5])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local keep = tonumber(ARGV[3])
if redis.call('EXPIRETIME', KEYS[2]) < keep then
  redis.call('EXPIREAT', KEYS[2], keep + 86400)
end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
if redis.call('EXPIRETIME', KEYS[3]) < keep then
  redis.call('EXPIREAT', KEYS[3], keep + 86400)
end
redis.call('SET', KEYS[4], ARGV[9], 'EX', ARGV[11])
if ARGV[6] ~= '' then
  previous = string.sub(previous, 1, #previous - 5)
    .. struct.pack('>I4', tonumber(ARGV[6])) .. string.char(tonumber(ARGV[7]))
  redis.call('HSET', KEYS[2], ARGV[4], previous)
  return {1, previous}
end
return {1, ''}
