-- Drops a node from the registry, marks it for reaping (with its last deadline, from which the
-- reapers derive its last renewal) and tells every node, in one step.
-- KEYS[1]  registry (sorted set)
-- KEYS[2]  reaping (sorted set)
-- KEYS[3]  node stats (hash): the node's row goes with its lease
-- ARGV[1]  publish command ('PUBLISH', or 'SPUBLISH' on Redis Cluster)
-- ARGV[2]  registry topic
-- ARGV[3]  node id
-- ARGV[4]  '1': only if its lease has expired (reaping); '0': always (the node leaves)
-- ARGV[5]  the `down` message
-- Returns 1 when the node was dropped, 0 when it renewed its lease meanwhile or was gone.
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not deadline then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] == '1' and tonumber(deadline) >= now then return 0 end
redis.call('ZREM', KEYS[1], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[2], deadline, ARGV[3])
redis.call(ARGV[1], ARGV[2], ARGV[5])
return 1
