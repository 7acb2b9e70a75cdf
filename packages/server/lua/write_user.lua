-- Writes some fields of a user record. An announced write also bumps the record's version and
-- publishes the whole record in the same step, so every node applies writes in the order Redis
-- ran them; writers of different fields never undo each other.
-- KEYS[1]  the user's record hash: field -> value, '~v' -> version
-- ARGV[1]  bus channel
-- ARGV[2]  writing node id
-- ARGV[3]  user id
-- ARGV[4]  '1': announce (activity timestamps are written quietly with '0')
-- ARGV[5..] field, value, ...
-- The activity timestamps only move forward: a node that comes back from an outage with an older
-- one (or a late batch of activity) does not undo a newer one another node wrote.
for i = 5, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local stored = nil
  if field == 'lastSeenAt' or field == 'lastActiveAt' then
    stored = tonumber(redis.call('HGET', KEYS[1], field) or '')
  end
  if stored == nil or (tonumber(value) or 0) > stored then
    redis.call('HSET', KEYS[1], field, value)
  end
end
if ARGV[4] ~= '1' then return 0 end
local version = redis.call('HINCRBY', KEYS[1], '~v', 1)
local flat = redis.call('HGETALL', KEYS[1])
local fields = {}
for i = 1, #flat, 2 do
  if flat[i] ~= '~v' then fields[flat[i]] = flat[i + 1] end
end
redis.call('PUBLISH', ARGV[1], cjson.encode({ kind = 'user', node = ARGV[2], userId = ARGV[3], version = version, fields = fields }))
return version
