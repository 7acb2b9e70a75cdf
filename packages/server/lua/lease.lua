-- Renews one node's lease and reports the registry, all on the Redis server's clock, so no
-- node's wall clock decides who is alive. The registry is the only key every node touches, and
-- only here (every third of a lease), when a node is dropped, and when a reap is over.
-- KEYS[1]  registry: sorted set, node id -> lease deadline (ms since the epoch)
-- KEYS[2]  reaping: sorted set, dropped node id -> its last lease deadline
-- KEYS[3]  node stats: hash, node id -> its counts as JSON (the admin stats' rows)
-- ARGV[1]  node id
-- ARGV[2]  lease lifetime, ms
-- ARGV[3]  this node's counts as JSON
-- Returns { now, was registered (0/1), expired node ids, all node ids, reaping (id, deadline, ...) }
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local registered = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local nodes = redis.call('ZRANGE', KEYS[1], 0, -1)
local reaping = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
return { tostring(now), registered and 1 or 0, expired, nodes, reaping }
