-- Removes a dead node's orphaned sessions from one user's shard once the offline delay has run
-- since they were orphaned (every node following the user ended them then on its own clock).
-- KEYS[1]  the user's sessions (see write_ops.lua)
-- ARGV[1]  dead node id;  ARGV[2]  offline delay, ms
-- ARGV[3]  optional: the webhook events this reap causes (see lib_webhooks.lua, prepended), with
--          guards 'r' (only if a session was removed) and 'e' (and none of the user's is left)
-- Returns the removed sessions' snapshot JSON (their channels' index entries go next); with ARGV[3],
-- { that list, events dropped by the bound }.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local flat = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[1] .. '\n'
local removed = {}
for i = 1, #flat, 2 do
  local value = flat[i + 1]
  if string.sub(value, 1, #prefix) == prefix then
    local a = string.find(value, '\n', #prefix + 1, true)
    local b = string.find(value, '\n', a + 1, true)
    local orphanedAt = tonumber(string.sub(value, a + 1, b - 1))
    if orphanedAt and orphanedAt + tonumber(ARGV[2]) <= now then
      redis.call('HDEL', KEYS[1], flat[i])
      removed[#removed + 1] = string.sub(value, b + 1)
    end
  end
end
if ARGV[3] then
  local left = redis.call('HLEN', KEYS[1])
  local dropped = queue_webhooks(cjson.decode(ARGV[3]), function(guard)
    if #removed == 0 then return false end
    if guard == 'e' then return left == 0 end
    return true
  end)
  return { removed, dropped }
end
return removed
