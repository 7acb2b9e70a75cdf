-- Writes some fields of a user record. An announced write also moves the user shard's sequence
-- and publishes the whole record on the user's topic in the same step, so every node following
-- the user applies writes in the order Redis ran them; writers of different fields never undo
-- each other.
-- KEYS[1]  the user's record hash: field -> value, '~v' -> the shard's sequence
-- ARGV[1]  publish command;  ARGV[2]  the user's topic;  ARGV[3]  writing node id;  ARGV[4]  user id
-- ARGV[5]  '1': announce (activity timestamps are written quietly with '0')
-- ARGV[6..] field, value, ...; and last, optionally, 'w' and the webhook events of this write (see
--          lib_webhooks.lua, prepended): with `c` set in them, queued only if the write changed a
--          field other than the activity timestamps (several nodes clearing the same expired
--          status report it once). Returns { seq, dropped } then.
-- The activity timestamps only move forward: a node that comes back from an outage with an older
-- one (or a late batch of activity) does not undo a newer one another node wrote.
local webhooks = nil
local changed = false
local last = #ARGV
if last >= 7 and ARGV[last - 1] == 'w' and (last - 5) % 2 == 0 then
  webhooks = cjson.decode(ARGV[last])
  last = last - 2
end
for i = 6, last, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local stored = nil
  if field == 'lastSeenAt' or field == 'lastActiveAt' then
    stored = tonumber(redis.call('HGET', KEYS[1], field) or '')
  end
  if stored == nil or (tonumber(value) or 0) > stored then
    if webhooks and not changed and field ~= 'lastSeenAt' and field ~= 'lastActiveAt' and field ~= '~cause' then
      changed = redis.call('HGET', KEYS[1], field) ~= value
    end
    redis.call('HSET', KEYS[1], field, value)
  end
end
local dropped = 0
if webhooks then dropped = queue_webhooks(webhooks, function() return changed or webhooks.c ~= 1 end) end
if ARGV[5] ~= '1' then
  if webhooks then return { 0, dropped } end
  return 0
end
local seq = redis.call('HINCRBY', KEYS[1], '~v', 1)
local flat = redis.call('HGETALL', KEYS[1])
local fields = {}
for i = 1, #flat, 2 do
  if flat[i] ~= '~v' then fields[flat[i]] = flat[i + 1] end
end
redis.call(ARGV[1], ARGV[2], cjson.encode({ kind = 'record', user = ARGV[4], node = ARGV[3], seq = seq, fields = fields }))
if webhooks then return { seq, dropped } end
return seq
