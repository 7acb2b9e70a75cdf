-- Marks a dead node's sessions in one user's shard as orphaned (with the time, on Redis's clock):
-- they stay for the offline delay, so a client can still resume its session on any node, and are
-- removed by expire_orphans after it. If one of them was attached, the user was online until the
-- dead node's last lease renewal: the stored lastSeen moves up to it (never back, not while
-- invisible). Publishes `reaped` with the record when anything was newly marked. Safe to run again,
-- and by several reapers at once.
-- KEYS[1]  the user's record hash;  KEYS[2]  the user's sessions (see write_ops.lua)
-- ARGV[1]  publish command;  ARGV[2]  the user's topic;  ARGV[3]  dead node id;  ARGV[4]  user id
-- ARGV[5]  the dead node's last renewal, ms
-- Returns the number of sessions newly marked.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local flat = redis.call('HGETALL', KEYS[2])
local prefix = ARGV[3] .. '\n'
local marked = 0
local attached = false
for i = 1, #flat, 2 do
  local value = flat[i + 1]
  if string.sub(value, 1, #prefix) == prefix then
    local a = string.find(value, '\n', #prefix + 1, true)
    local b = string.find(value, '\n', a + 1, true)
    if b == a + 1 then
      local json = string.sub(value, b + 1)
      redis.call('HSET', KEYS[2], flat[i], string.sub(value, 1, a) .. now .. '\n' .. json)
      marked = marked + 1
      if string.find(json, '"attached":true', 1, true) then attached = true end
    end
  end
end
if marked == 0 then return 0 end
if attached then
  local invisible = false
  local manual = redis.call('HGET', KEYS[1], 'manual')
  if manual then
    local ok, decoded = pcall(cjson.decode, manual)
    invisible = ok and type(decoded) == 'table' and decoded.status == 'invisible'
  end
  local at = tonumber(ARGV[5])
  local stored = tonumber(redis.call('HGET', KEYS[1], 'lastSeenAt') or '')
  if not invisible and at > 0 and (stored == nil or stored < at) then
    redis.call('HSET', KEYS[1], 'lastSeenAt', tostring(at))
  end
end
local seq = redis.call('HINCRBY', KEYS[1], '~v', 1)
local all = redis.call('HGETALL', KEYS[1])
local fields = {}
for i = 1, #all, 2 do
  if all[i] ~= '~v' then fields[all[i]] = all[i + 1] end
end
redis.call(ARGV[1], ARGV[2], cjson.encode({ kind = 'reaped', user = ARGV[4], node = ARGV[3], seq = seq, fields = fields }))
return marked
