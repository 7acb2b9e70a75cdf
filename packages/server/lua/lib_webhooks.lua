-- Not a script of its own: prepended to the scripts that queue webhook events (write_ops,
-- write_user, expire_orphans, webhook_enqueue), so an event is queued in the same step as the change
-- that causes it (docs/webhooks.md#clusters).
-- spec (JSON): { m = max events per queue (0: no bound), e = { { g = guard, k = { list keys }, v = entry }, ... } }
-- `ok(guard)` decides each event from the script's own state. Every key is in the script's slot.
-- A queue past its bound loses its second element (the head may be in flight): returns how many.
local function queue_webhooks(spec, ok)
  local dropped = 0
  for _, item in ipairs(spec.e) do
    if ok(item.g) then
      for _, key in ipairs(item.k) do
        local length = redis.call('RPUSH', key, item.v)
        if spec.m > 0 and length > spec.m then
          redis.call('LSET', key, 1, '\0dropped')
          redis.call('LREM', key, 1, '\0dropped')
          dropped = dropped + 1
        end
      end
    end
  end
  return dropped
end
