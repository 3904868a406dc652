-- ack.lua: settle dispatched claims: end each lease and, when the avatar is still
-- active, put it back in the due set at its next time (as MySQL now says).
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- KEYS[2] {P}:leases    HASH avatar_id -> "<token>:<planned epoch seconds>"
-- KEYS[3] {P}:due       ZSET avatar_id -> due epoch seconds
-- ARGV[3k-2], ARGV[3k-1], ARGV[3k]  for each claim (k = 1, 2, ...):
--   avatar_id, the token of the claim being settled,
--   next_due (due epoch seconds, or "" to only end the lease)
--
-- Returns one 1 or 0 per claim, in order: 1 when applied, 0 when the token is
-- stale (the lease was released and maybe claimed again, or the avatar was
-- removed): then nothing changes for it, so a late worker never undoes a pause
-- or a newer claim.

local applied = {}
for i = 1, #ARGV, 3 do
  local avatar, token, next_due = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local lease = redis.call('HGET', KEYS[2], avatar)
  local sep = lease and string.find(lease, ':', 1, true)
  if sep and string.sub(lease, 1, sep - 1) == token then
    redis.call('ZREM', KEYS[1], avatar)
    redis.call('HDEL', KEYS[2], avatar)
    if next_due ~= '' then
      redis.call('ZADD', KEYS[3], next_due, avatar)
    end
    applied[#applied + 1] = 1
  else
    applied[#applied + 1] = 0
  end
end
return applied
