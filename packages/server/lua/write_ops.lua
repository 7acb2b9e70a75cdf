-- Applies one node's ops on one user's sessions to the user's shard and publishes them, in one
-- step: the shard's sequence always matches what was published on the user's topic.
-- KEYS[1]  the user's record hash ('~v': the shard's sequence)
-- KEYS[2]  the user's sessions: session id -> node .. '\n' .. moves .. '\n' .. orphaned at ('' while
--          its node lives) .. '\n' .. snapshot JSON
-- ARGV[1]  publish command;  ARGV[2]  the user's topic;  ARGV[3]  node id
-- ARGV[4]  the message without its end: '{...,"seq":' (the sequence and '}' are added here)
-- ARGV[5..] per op: 's', session id, moves, snapshot JSON  or  'e', session id
-- A snapshot replaces the stored one unless that one moved more often (a late op from a node the
-- session has left); only the owner on record ends a session. Snapshots are stored as sent.
local i = 5
while i <= #ARGV do
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
return seq
