-- claim_due.lua: move the due avatars to the ready list, each under an in-flight lease.
--
-- Key schema (all keys share the hash tag {P}, see storage/keys.py):
--   {P}:due       ZSET avatar_id -> due epoch seconds
--   {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
--   {P}:leases    HASH avatar_id -> "<token>:<planned epoch seconds>"
--   {P}:ready     LIST "<avatar_id>:<planned>:<token>"
--
-- KEYS[1] {P}:due
-- KEYS[2] {P}:inflight
-- KEYS[3] {P}:leases
-- KEYS[4] {P}:ready
-- ARGV[1] batch          the most avatars claimed by one call (>= 1)
-- ARGV[2] lease_seconds  lease length, counted from Redis TIME
-- ARGV[3] token_prefix   unique per call; claim n gets token "<prefix>-<n>"
-- ARGV[4] max_ready      high-water mark of {P}:ready (0 = none): claims stop
--                        when the list is that long, so no claim waits in it
--                        for longer than workers need to drain it
--
-- Returns the number of avatars claimed. "Due" means score <= Redis TIME, the
-- one clock of the index, so a host with a fast clock never dispatches early.
-- The planned time is the due score, kept in the lease so that a re-dispatch
-- after an expired lease carries the same idempotency key.

if redis.replicate_commands then
  redis.replicate_commands()
end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expiry = string.format('%.6f', now + tonumber(ARGV[2]))
local batch = tonumber(ARGV[1])
local max_ready = tonumber(ARGV[4] or '0')
if max_ready > 0 then
  batch = math.min(batch, max_ready - redis.call('LLEN', KEYS[4]))
  if batch <= 0 then
    return 0
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now),
  'WITHSCORES', 'LIMIT', 0, batch)

local claimed = 0
for i = 1, #due, 2 do
  local avatar = due[i]
  local score = tonumber(due[i + 1])
  -- Whole seconds for an auto slot; a trigger's released claim keeps its
  -- milliseconds (see claim_one.lua), so its re-dispatch has the same key.
  local planned = string.format('%d', math.floor(score))
  if score ~= math.floor(score) then
    planned = string.format('%.3f', score)
  end
  claimed = claimed + 1
  local token = ARGV[3] .. '-' .. claimed
  redis.call('ZREM', KEYS[1], avatar)
  redis.call('ZADD', KEYS[2], expiry, avatar)
  redis.call('HSET', KEYS[3], avatar, token .. ':' .. planned)
  redis.call('RPUSH', KEYS[4], avatar .. ':' .. planned .. ':' .. token)
end
return claimed
