-- revoke: mark a certificate's record revoked, once: a second revocation changes nothing.
--
-- KEYS[1]  <prefix>certs:{<slot tag>}
-- ARGV[1]  the serial (16 bytes), ARGV[2] the time (unix s), ARGV[3] the reason code
--
-- Returns nil for an unknown serial; else {1, record} when this call revoked it and
-- {0, record} when it was revoked already. The revocation is the record's last 5 bytes.
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then
  return nil
end
if struct.unpack('>I4', record, #record - 4) ~= 0 then
  return {0, record}
end
record = string.sub(record, 1, #record - 5)
  .. struct.pack('>I4', tonumber(ARGV[2])) .. string.char(tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], ARGV[1], record)
return {1, record}
