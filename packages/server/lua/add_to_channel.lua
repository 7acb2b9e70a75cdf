-- Lists sessions in a channel's index (session id -> user id .. '\n' .. node) and announces each
-- user newly listed on the channel's topic, so the nodes following the channel follow that user.
-- KEYS[1]  the channel's index
-- ARGV[1]  publish command;  ARGV[2]  the channel's topic;  ARGV[3]  channel name
-- ARGV[4..] session id, user id, node, ...
local announced = {}
for i = 4, #ARGV, 3 do
  local value = ARGV[i + 1] .. '\n' .. ARGV[i + 2]
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= value then
    redis.call('HSET', KEYS[1], ARGV[i], value)
    if not announced[ARGV[i + 1]] then
      announced[ARGV[i + 1]] = true
      redis.call(ARGV[1], ARGV[2], cjson.encode({ kind = 'member', channel = ARGV[3], user = ARGV[i + 1] }))
    end
  end
end
return 1
