-- remove.lua: take an avatar out of the index (paused or disabled).
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:due       ZSET avatar_id -> due epoch seconds
-- KEYS[2] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- KEYS[3] {P}:leases    HASH avatar_id -> "<token>:<planned epoch seconds>"
-- ARGV[1] avatar_id
--
-- Returns the number of sets (due, inflight) the avatar was removed from. The
-- pause wins over a dispatch in flight: with the lease gone, that worker's
-- later ack finds its token stale and changes nothing.

local removed = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return removed
