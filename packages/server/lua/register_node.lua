-- (Re)writes a node's whole session state, renews its lease and announces it, in one step, so
-- another node reading the state after the `hello` always sees all of it.
-- KEYS[1]  registry (sorted set)
-- KEYS[2]  the node's session hash: '~seq' -> last batch number, session id -> snapshot JSON
-- ARGV[1]  node id
-- ARGV[2]  lease lifetime, ms
-- ARGV[3]  batch number the state corresponds to
-- ARGV[4]  bus channel
-- ARGV[5]  the `hello` message
-- ARGV[6..] session id, snapshot JSON, ...
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], '~seq', ARGV[3])
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
