-- Moves channel webhook events (forwarded from one user's shard) into the channel's queues, after
-- taking that user's ended sessions out of the channel's index (as remove_from_channel does), in
-- one step of the channel's slot: whether the channel is occupied or vacated is decided here, by
-- the index, so two nodes changing the channel at once report it exactly once between them.
-- Prepended with lib_webhooks.lua.
-- KEYS[1]  the channel's index (session id -> user id .. '\n' .. node)
-- ARGV[1]  node id (whose entries may be removed);  ARGV[2]  the user;  ARGV[3]  spec (lib_webhooks.lua)
-- ARGV[4..] session ids to take out
-- Guards: 'a' always; 'o' (occupied) and 'v' (vacated): only if no session of another user is
-- listed (after the removals); 'l' (left): only if no session of the user is listed any more;
-- 'x' (emptied): only if no session at all is listed. An index longer than MANY holds another user's session: a user
-- has fewer sessions than that (PRESENCE_MAX_SESSIONS_PER_USER), so a long index is not read.
local MANY = 256
local suffix = '\n' .. ARGV[1]
for i = 4, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value and string.sub(value, -#suffix) == suffix then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
local alone = nil
local function nobody_else()
  if alone ~= nil then return alone end
  if redis.call('HLEN', KEYS[1]) > MANY then
    alone = false
    return alone
  end
  alone = true
  local prefix = ARGV[2] .. '\n'
  for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
    if string.sub(value, 1, #prefix) ~= prefix then
      alone = false
      break
    end
  end
  return alone
end
local function user_gone()
  local prefix = ARGV[2] .. '\n'
  for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
    if string.sub(value, 1, #prefix) == prefix then return false end
  end
  return true
end
return queue_webhooks(cjson.decode(ARGV[3]), function(guard)
  if guard == 'o' or guard == 'v' then return nobody_else() end
  if guard == 'l' then return user_gone() end
  if guard == 'x' then return redis.call('HLEN', KEYS[1]) == 0 end
  return true
end)
