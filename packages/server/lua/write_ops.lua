-- Applies one node's ops on one user's sessions to the user's shard and publishes them, in one
-- step: the shard's sequence always matches what was published on the user's topic.
-- KEYS[1]  the user's record hash ('~v': the shard's sequence)
-- KEYS[2]  the user's sessions: session id -> node .. '\n' .. moves .. '\n' .. orphaned at ('' while
--          its node lives) .. '\n' .. snapshot JSON
-- ARGV[1]  publish command;  ARGV[2]  the user's topic;  ARGV[3]  node id
-- ARGV[4]  the message without its end: '{...,"seq":' (the sequence and '}' are added here)
-- ARGV[5..] per op: 's', session id, moves, snapshot JSON  or  'e', session id; and last, optionally,
--          'w' and the webhook events of these ops (see lib_webhooks.lua, prepended), with guards:
--          'a' always; 'f' only if the user had no session but those these ops write (user.online);
--          'e' only if no session of the user is left after them (user.offline)
-- A snapshot replaces the stored one unless that one moved more often (a late op from a node the
-- session has left); only the owner on record ends a session. Snapshots are stored as sent.
local webhooks = nil
local others = 0
local last = #ARGV
if ARGV[last - 1] == 'w' then
  webhooks = cjson.decode(ARGV[last])
  last = last - 2
  local written = {}
  for j = 5, last do
    if ARGV[j] == 's' then written[ARGV[j + 1]] = true end
  end
  local ids = redis.call('HKEYS', KEYS[2])
  for _, id in ipairs(ids) do
    if not written[id] then others = others + 1 end
  end
end
local i = 5
while i <= last do
  local kind, id = ARGV[i], ARGV[i + 1]
  local stored = redis.call('HGET', KEYS[2], id)
  if kind == 's' then
    local moves = tonumber(ARGV[i + 2])
    local storedMoves = -1
    if stored then
      local a = string.find(stored, '\n', 1, true)
      local b = string.find(stored, '\n', a + 1, true)
      storedMoves = tonumber(string.sub(stored, a + 1, b - 1))
    end
    if moves >= storedMoves then
      redis.call('HSET', KEYS[2], id, ARGV[3] .. '\n' .. ARGV[i + 2] .. '\n\n' .. ARGV[i + 3])
    end
    i = i + 4
  else
    if stored and string.sub(stored, 1, #ARGV[3] + 1) == ARGV[3] .. '\n' then
      redis.call('HDEL', KEYS[2], id)
    end
    i = i + 2
  end
end
local seq = redis.call('HINCRBY', KEYS[1], '~v', 1)
redis.call(ARGV[1], ARGV[2], ARGV[4] .. seq .. '}')
if webhooks then
  local left = redis.call('HLEN', KEYS[2])
  local dropped = queue_webhooks(webhooks, function(guard)
    if guard == 'f' then return others == 0 end
    if guard == 'e' then return left == 0 end
    return true
  end)
  return { seq, dropped }
end
return seq
