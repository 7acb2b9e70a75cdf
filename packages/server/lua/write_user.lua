-- Writes some fields of a user record. An announced write also moves the user shard's sequence
-- and publishes the whole record on the user's topic in the same step, so every node following
-- the user applies writes in the order Redis ran them; writers of different fields never undo
-- each other.
-- KEYS[1]  the user's record hash: field -> value, '~v' -> the shard's sequence
-- ARGV[1]  publish command;  ARGV[2]  the user's topic;  ARGV[3]  writing node id;  ARGV[4]  user id
-- ARGV[5]  '1': announce (activity timestamps are written quietly with '0')
-- ARGV[6..] field, value, ...
-- The activity timestamps only move forward: a node that comes back from an outage with an older
-- one (or a late batch of activity) does not undo a newer one another node wrote.
for i = 6, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local stored = nil
  if field == 'lastSeenAt' or field == 'lastActiveAt' then
    stored = tonumber(redis.call('HGET', KEYS[1], field) or '')
  end
  if stored == nil or (tonumber(value) or 0) > stored then
    redis.call('HSET', KEYS[1], field, value)
  end
end
if ARGV[5] ~= '1' then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], '~v', 1)
local flat = redis.call('HGETALL', KEYS[1])
local fields = {}
for i = 1, #flat, 2 do
  if flat[i] ~= '~v' then fields[flat[i]] = flat[i + 1] end
end
redis.call(ARGV[1], ARGV[2], cjson.encode({ kind = 'record', user = ARGV[4], node = ARGV[3], seq = seq, fields = fields }))
return seq
