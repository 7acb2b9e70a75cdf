-- Takes a delivered (or given up) event off the head of its queue, only if it is still the head:
-- the node that delivered it may have lost its lease meanwhile, and the new holder sent it again.
-- KEYS[1]  the queue;  ARGV[1]  the entry as read
-- Returns 1 when it was taken off, 0 when the head was another one.
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  redis.call('LPOP', KEYS[1])
  return 1
end
return 0
