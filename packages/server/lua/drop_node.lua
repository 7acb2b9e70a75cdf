-- Removes a node's lease and stored sessions in one step and tells every node, so a crashed
-- node's sessions are orphaned everywhere at once and none of its keys stay behind.
-- KEYS[1]  registry (sorted set)
-- KEYS[2]  the node's session hash
-- ARGV[1]  node id
-- ARGV[2]  '1': only if its lease has expired (reaping); '0': always (the node leaves)
-- ARGV[3]  bus channel
-- ARGV[4]  the `down` message
-- Returns 1 when the node was dropped, 0 when it renewed its lease meanwhile or was gone.
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if not deadline then return 0 end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if tonumber(deadline) >= now then return 0 end
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
