-- Takes sessions out of a channel's index, each only if the node that asks still owns it there:
-- a session that moved is listed under its new node, and the old node's late removal must not
-- hide it from the nodes that read the index.
-- KEYS[1]  the channel's index (session id -> user id .. '\n' .. node)
-- ARGV[1]  node id
-- ARGV[2..] session ids
local suffix = '\n' .. ARGV[1]
for i = 2, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value and string.sub(value, -#suffix) == suffix then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 1
