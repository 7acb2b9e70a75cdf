/**
 * The page of the unload-beacon tests: one user (`?user=`) in one channel (`?channel=`), over the
 * WebSocket client or, with `?transport=http`, the HTTP transport, in development mode. What the
 * channel reports is kept in `window.presenceLog` for the test to read.
 */
import { PresenceClient } from '../../../client/src/index.js';
import { PresenceHttpClient } from '../../../client/src/http.js';

interface LogEntry {
  event: 'sync' | 'join' | 'leave' | 'update';
  userId: string;
  at: number;
}

const params = new URLSearchParams(location.search);
const userId = params.get('user') ?? 'anonymous';
const channel = params.get('channel') ?? 'room:beacon';
const options = { url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/realtime`, userId, device: 'web' };
const client = params.get('transport') === 'http' ? new PresenceHttpClient(options) : new PresenceClient(options);

const log: LogEntry[] = [];
(window as unknown as { presenceLog: LogEntry[] }).presenceLog = log;
const room = client.channel(channel);
room.on('sync', (members) => {
  for (const id of members.keys()) log.push({ event: 'sync', userId: id, at: Date.now() });
});
room.on('join', (member) => log.push({ event: 'join', userId: member.userId, at: Date.now() }));
room.on('leave', (member) => log.push({ event: 'leave', userId: member.userId, at: Date.now() }));
room.on('update', (member) => log.push({ event: 'update', userId: member.userId, at: Date.now() }));
void room.join().then(() => {
  document.body.dataset.joined = client.sessionId ?? 'yes';
});
