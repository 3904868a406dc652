-- sizes.lua: the queue sizes for the gauges, read at one instant.
--
-- Key schema: see claim_due.lua.
--
-- KEYS[1] {P}:due       ZSET avatar_id -> due epoch seconds
-- KEYS[2] {P}:inflight  ZSET avatar_id -> lease expiry epoch seconds
-- KEYS[3] {P}:ready     LIST "<avatar_id>:<planned>:<token>"
-- ARGV[1] grace_seconds  "overdue" means due more than this long before TIME
--
-- Returns {due, overdue, inflight, ready}.

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local overdue = redis.call('ZCOUNT', KEYS[1], '-inf',
  string.format('%.6f', now - tonumber(ARGV[1])))
return {
  redis.call('ZCARD', KEYS[1]),
  overdue,
  redis.call('ZCARD', KEYS[2]),
  redis.call('LLEN', KEYS[3]),
}
