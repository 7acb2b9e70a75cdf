-- Queues webhook events in one slot: channel events forwarded from a user's shard, and events of a
-- change that wrote nothing in the same slot. Prepended with lib_webhooks.lua.
-- ARGV[1]  spec (see lib_webhooks.lua); every guard is 'a'
-- Returns the number of events dropped by the bound.
return queue_webhooks(cjson.decode(ARGV[1]), function() return true end)
