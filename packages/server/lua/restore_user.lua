-- Writes a whole user record only if Redis has none: after Redis restarted empty, nodes fill in
-- what they hold in memory without overwriting anything another node wrote first.
-- KEYS[1]  the user's record hash
-- ARGV[1..] field, value, ...
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], '~v', 1)
return 1
