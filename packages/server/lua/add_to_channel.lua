-- Lists sessions in a channel's index (session id -> user id .. '\n' .. node) and announces each
-- user newly listed on the channel's topic, so the nodes following the channel follow that user.
-- KEYS[1]  the channel's index
-- ARGV[1]  publish command;  ARGV[2]  the channel's topic;  ARGV[3]  channel name
-- ARGV[4..] session id, user id, node, ...; or ARGV[4] '~first' and those from ARGV[5]: then returns
-- the users whose first entry found no other user's session listed (the channel became occupied
-- with them; an index longer than 256 is not read: a user has fewer sessions than that).
local start = 4
local first = nil
if ARGV[4] == '~first' then
  start = 5
  first = {}
end
local occupied = false
if first and redis.call('HLEN', KEYS[1]) > 256 then occupied = true end
local users = {}
if first and not occupied then
  for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
    users[string.sub(value, 1, string.find(value, '\n', 1, true) - 1)] = true
  end
end
local announced = {}
for i = start, #ARGV, 3 do
  if first and not occupied then
    local others = false
    for user in pairs(users) do
      if user ~= ARGV[i + 1] then others = true end
    end
    if not others and not users[ARGV[i + 1]] then first[#first + 1] = ARGV[i + 1] end
    users[ARGV[i + 1]] = true
  end
  local value = ARGV[i + 1] .. '\n' .. ARGV[i + 2]
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= value then
    redis.call('HSET', KEYS[1], ARGV[i], value)
    if not announced[ARGV[i + 1]] then
      announced[ARGV[i + 1]] = true
      redis.call(ARGV[1], ARGV[2], cjson.encode({ kind = 'member', channel = ARGV[3], user = ARGV[i + 1] }))
    end
  end
end
if first then return first end
return 1
