-- absent.lua: which of the given avatars are in neither the due nor the
-- in-flight set (for the safety-net sweep).
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:due       ZSET avatar_id -> due epoch seconds
-- KEYS[2] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- ARGV[1..n] avatar_ids
--
-- Returns the absent avatar_ids. One script, so an avatar moving between the
-- two sets (claimed, released, acked) is never seen in neither.

local absent = {}
for _, avatar in ipairs(ARGV) do
  if not redis.call('ZSCORE', KEYS[1], avatar) and not redis.call('ZSCORE', KEYS[2], avatar) then
    absent[#absent + 1] = avatar
  end
end
return absent
