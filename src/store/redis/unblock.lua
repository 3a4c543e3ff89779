-- unblock: lift a device's block and leave a note of when, so that replaying the blocks
-- kept beside the CA (after Redis lost writes) does not bring back one lifted since.
--
-- KEYS[1]  <prefix>blocked:{<device>}
-- KEYS[2]  <prefix>unblocked:{<device>}
-- ARGV[1]  unix s of the unblock
-- ARGV[2]  how long the note is kept, in seconds
local removed = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return removed
