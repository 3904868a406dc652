-- pickup.lua: a worker confirms the claims it popped from the ready list are still
-- current, and optionally restarts their leases from now.
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- KEYS[2] {P}:leases    HASH avatar_id -> "<token>:<planned epoch seconds>"
-- ARGV[1] lease_seconds  new lease length from Redis TIME, or "" to keep the leases
-- ARGV[2k], ARGV[2k+1]   avatar_id, token of each popped claim (k = 1, 2, ...)
--
-- Returns {TIME, flags}: Redis TIME as {seconds, microseconds} (the worker's clock
-- for what it records, so a host with a skewed clock records server time), and
-- one 1 or 0 per claim, in order: 1 when the claim is current, 0 when it is stale
-- (its lease expired and was released, or the avatar was removed): the worker
-- must not dispatch it. A lease restarts before Action because a claim may have
-- waited in the ready list, or behind the earlier claims of its batch.

if redis.replicate_commands then
  redis.replicate_commands()
end

local t = redis.call('TIME')
local expiry = nil
if ARGV[1] ~= '' then
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  expiry = string.format('%.6f', now + tonumber(ARGV[1]))
end

local current = {}
for i = 2, #ARGV, 2 do
  local avatar, token = ARGV[i], ARGV[i + 1]
  local lease = redis.call('HGET', KEYS[2], avatar)
  local sep = lease and string.find(lease, ':', 1, true)
  if sep and string.sub(lease, 1, sep - 1) == token then
    if expiry then
      redis.call('ZADD', KEYS[1], 'XX', expiry, avatar)
    end
    current[#current + 1] = 1
  else
    current[#current + 1] = 0
  end
end
return {t, current}
