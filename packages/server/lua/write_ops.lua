-- Applies one numbered batch of a node's session operations to its stored state and publishes
-- the batch, in one step: the stored '~seq' always matches what was published.
-- A node that is no longer registered (reaped, or Redis lost its data) writes nothing and gets
-- 0, so it re-registers instead of leaving a partial state that nothing would ever remove.
-- KEYS[1]  registry (sorted set)
-- KEYS[2]  the node's session hash
-- ARGV[1]  node id
-- ARGV[2]  batch number
-- ARGV[3]  bus channel
-- ARGV[4]  the `ops` message
-- ARGV[5]  number of upserted sessions, followed by that many id, snapshot JSON pairs,
--          followed by the ids of removed sessions
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], '~seq', ARGV[2])
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = i, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[j])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
