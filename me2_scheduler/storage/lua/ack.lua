-- ack.lua: settle a dispatched claim: end its lease and, when the avatar is still
-- active, put it back in the due set at its next time (as MySQL now says).
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- KEYS[2] {P}:leases    HASH avatar_id -> "<token>:<planned epoch seconds>"
-- KEYS[3] {P}:due       ZSET avatar_id -> due epoch seconds
-- ARGV[1] avatar_id
-- ARGV[2] token      the token of the claim being settled
-- ARGV[3] next_due   due epoch seconds, or "" to only end the lease
--
-- Returns 1 when applied, 0 when the token is stale (the lease was released and
-- maybe claimed again, or the avatar was removed): then nothing changes, so a
-- late worker never undoes a pause or a newer claim.

local lease = redis.call('HGET', KEYS[2], ARGV[1])
if not lease then
  return 0
end
local sep = string.find(lease, ':', 1, true)
if not sep or string.sub(lease, 1, sep - 1) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return 1
