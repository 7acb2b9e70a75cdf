-- Takes or renews the lease of one webhook URL's queues: one node at a time delivers them.
-- KEYS[1]  the lease (string: node id, with an expiry)
-- ARGV[1]  node id;  ARGV[2]  lifetime, ms;  ARGV[3]  '1': take or renew; '0': let go (if ours)
-- Returns 1 when this node holds the lease now.
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == '0' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
