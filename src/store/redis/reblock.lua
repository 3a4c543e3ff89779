-- reblock: put back a block that Redis lost, unless the device is blocked already or was
-- unblocked at or after the block's time. Answers 0 (unblocked since: nothing done),
-- 1 (put back) or 2 (blocked already).
--
-- KEYS[1]  <prefix>blocked:{<device>}
-- KEYS[2]  <prefix>unblocked:{<device>}
-- ARGV[1]  the block, packed: <unix s>:<reason code>
-- ARGV[2]  the block's unix s
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 2
end
local lifted = redis.call('GET', KEYS[2])
if lifted and tonumber(lifted) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
