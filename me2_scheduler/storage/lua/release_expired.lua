-- release_expired.lua: return avatars whose lease expired (their worker died) to
-- the due set, at their original planned time.
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- KEYS[2] {P}:leases    HASH avatar_id -> "<token>:<planned epoch seconds>"
-- KEYS[3] {P}:due       ZSET avatar_id -> due epoch seconds
-- ARGV[1] limit         the most avatars released by one call (>= 1)
--
-- Returns the released avatar_ids. Keeping the planned time (not TIME) means the
-- re-dispatch carries the same idempotency key "<avatar_id>:<planned ms>", so
-- Action can drop it if the dead worker's call did reach it. A ready-list entry
-- of the old claim stays behind; pickup.lua finds its token stale.

if redis.replicate_commands then
  redis.replicate_commands()
end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now),
  'LIMIT', 0, tonumber(ARGV[1]))
for _, avatar in ipairs(expired) do
  local planned = t[1]
  local lease = redis.call('HGET', KEYS[2], avatar)
  if lease then
    local sep = string.find(lease, ':', 1, true)
    if sep then
      planned = string.sub(lease, sep + 1)
    end
  end
  redis.call('ZADD', KEYS[3], planned, avatar)
  redis.call('ZREM', KEYS[1], avatar)
  redis.call('HDEL', KEYS[2], avatar)
end
return expired
