-- swap_rebuild.lua: put a fully streamed rebuild in place of the due set, at once.
--
-- Key schema: see claim_due.lua; plus
--   {P}:due:rebuild:<run>  ZSET one rebuild's due set while it is streamed
--   {P}:meta               HASH version, built_at, rows (absent means "rebuild")
--
-- KEYS[1] {P}:due:rebuild:<run>
-- KEYS[2] {P}:due
-- KEYS[3] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- KEYS[4] {P}:meta
-- ARGV[1] version       index layout version
-- ARGV[2] rows          rows streamed into the rebuild
--
-- Returns the size of the new due set. Avatars in flight are dropped from it,
-- so none is ever in both sets: their workers settle them. A missing rebuild
-- key (zero rows) leaves an empty due set. UNLINK frees the old set off the
-- main thread, so a million-member swap does not stall Redis.

if redis.replicate_commands then
  redis.replicate_commands()
end

local t = redis.call('TIME')
redis.call('UNLINK', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('PERSIST', KEYS[2])
  for _, avatar in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    redis.call('ZREM', KEYS[2], avatar)
  end
end
redis.call('HSET', KEYS[4], 'version', ARGV[1], 'built_at', t[1], 'rows', ARGV[2])
return redis.call('ZCARD', KEYS[2])
