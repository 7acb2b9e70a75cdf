/** One Pusher message: `data` is always a string (JSON-encoded where it holds JSON). */
export function frame(event: string, channel: string | undefined, data: string, userId?: string): string {
  const message: Record<string, string> = { event };
  if (channel !== undefined) message.channel = channel;
  message.data = data;
  if (userId !== undefined) message.user_id = userId;
  return JSON.stringify(message);
}

/** `pusher:error`: its `data` is an object, as in Pusher's protocol description. */
export function errorFrame(code: number, message: string): string {
  return JSON.stringify({ event: 'pusher:error', data: { code, message } });
}
