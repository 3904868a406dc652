-- put_due.lua: add avatars to the due set, or move their due times.
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:due       ZSET avatar_id -> due epoch seconds
-- KEYS[2] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- ARGV[1] only_if_absent  "1": never move a member already in due (the sweep's
--                         MySQL read may be older than that score); "" to move
-- ARGV[2..] pairs: avatar_id, due_epoch, avatar_id, due_epoch, ...
--
-- Returns how many avatars were written to the due set. An avatar in flight is
-- skipped: its worker settles it (ack.lua) from MySQL, so it is never in both
-- sets.

local written = 0
for i = 2, #ARGV, 2 do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    if ARGV[1] == '' then
      redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
      written = written + 1
    else
      written = written + redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 1], ARGV[i])
    end
  end
end
return written
