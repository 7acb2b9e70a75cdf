-- Moves a user's lastSeenAt up to a time the user is known to have been online: for the users of
-- a crashed node, its last lease renewal. Never moves it back, and leaves an invisible user's alone
-- (their lastSeen stays frozen at the moment they went invisible). Announced like an announced
-- write_user (version bumped, whole record published) even when the stored value was later: that
-- one came from quiet activity writes, which no other node was told of. Running it again changes
-- no field, so nodes reaping the same node at once agree (each publishes the same record).
-- KEYS[1]  the user's record hash
-- ARGV[1]  bus channel
-- ARGV[2]  user id
-- ARGV[3]  the time, ms since the epoch on the Redis server's clock
-- Returns the new version, or 0 for an invisible user (nothing written or published).
local manual = redis.call('HGET', KEYS[1], 'manual')
if manual then
  local ok, decoded = pcall(cjson.decode, manual)
  if ok and type(decoded) == 'table' and decoded.status == 'invisible' then return 0 end
end
local stored = tonumber(redis.call('HGET', KEYS[1], 'lastSeenAt') or '')
if not stored or stored < tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], 'lastSeenAt', ARGV[3]) end
local version = redis.call('HINCRBY', KEYS[1], '~v', 1)
local flat = redis.call('HGETALL', KEYS[1])
local fields = {}
for i = 1, #flat, 2 do
  if flat[i] ~= '~v' then fields[flat[i]] = flat[i + 1] end
end
-- Written for no live node: an empty writer, so no node takes it for the echo of its own write.
redis.call('PUBLISH', ARGV[1], cjson.encode({ kind = 'user', node = '', userId = ARGV[2], version = version, fields = fields }))
return version
