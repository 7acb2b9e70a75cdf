/**
 * The ceiling: a bare `ws` server that fans the bench's messages out with no presence model.
 *
 * A room is a set of sockets. Clients send the frame others should receive (the bench builds the
 * same `presence.update` / `presence.join` / `presence.leave` / `typing` messages Presence would
 * send, member object included), and the server parses it only to learn the type and channel,
 * then relays the received string unchanged to every other socket in the room. A join is answered
 * with `joined` (no member list); a closed socket's rooms get a `presence.leave`; `subscribe`
 * joins a room without telling anyone (used to fill a large room quickly). Nothing is
 * batched, validated, rate-limited or remembered: this is the cost of moving the bytes.
 */
import { createServer } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.env.PORT ?? 0);
const rooms = new Map<string, Set<WebSocket>>();

interface Peer {
  userId: string;
  rooms: Set<string>;
}
const peers = new WeakMap<WebSocket, Peer>();

function relay(room: Set<WebSocket> | undefined, data: string, except: WebSocket): void {
  if (!room) return;
  for (const socket of room) if (socket !== except) socket.send(data);
}

function join(socket: WebSocket, peer: Peer, channel: string): Set<WebSocket> {
  let room = rooms.get(channel);
  if (!room) rooms.set(channel, (room = new Set()));
  room.add(socket);
  peer.rooms.add(channel);
  return room;
}

function leave(socket: WebSocket, peer: Peer, channel: string): void {
  const room = rooms.get(channel);
  peer.rooms.delete(channel);
  if (!room) return;
  room.delete(socket);
  if (room.size === 0) rooms.delete(channel);
}

const http = createServer((_request, response) => response.writeHead(404).end());
const wss = new WebSocketServer({ server: http, path: '/realtime', perMessageDeflate: false, maxPayload: 64 * 1024, clientTracking: false });

wss.on('connection', (socket, request) => {
  const userId = new URL(request.url ?? '/', 'http://x').searchParams.get('userId') ?? 'anonymous';
  const peer: Peer = { userId, rooms: new Set() };
  peers.set(socket, peer);
  socket.send(`{"type":"welcome","userId":${JSON.stringify(userId)}}`);
  socket.on('message', (raw) => {
    const data = raw.toString();
    let message: { type?: string; channel?: string };
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const channel = message.channel;
    if (typeof channel !== 'string') return;
    switch (message.type) {
      case 'presence.join': {
        const room = join(socket, peer, channel);
        socket.send(`{"type":"joined","channel":${JSON.stringify(channel)}}`);
        relay(room, data, socket);
        break;
      }
      case 'subscribe':
        // A listener in a large room (the bench's big channel): no announcement.
        join(socket, peer, channel);
        socket.send(`{"type":"joined","channel":${JSON.stringify(channel)}}`);
        break;
      case 'presence.leave':
        leave(socket, peer, channel);
        relay(rooms.get(channel), data, socket);
        break;
      case 'presence.update':
      case 'typing':
        relay(rooms.get(channel), data, socket);
        break;
    }
  });
  socket.on('close', () => {
    for (const channel of [...peer.rooms]) {
      leave(socket, peer, channel);
      relay(rooms.get(channel), `{"type":"presence.leave","channel":${JSON.stringify(channel)},"userId":${JSON.stringify(peer.userId)}}`, socket);
    }
  });
  socket.on('error', () => socket.terminate());
});

http.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
