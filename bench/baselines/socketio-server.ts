/**
 * What many teams build instead of a presence server: Socket.IO 4 with the Redis adapter, and
 * presence kept in Redis the usual way.
 *
 * - a key per user (`presence:user:<id>`) holding the member JSON, with a TTL refreshed on every
 *   update (and by a periodic sweep for idle users);
 * - a set of online users (`presence:online`) and a hash per room (`presence:room:<channel>`,
 *   user id → member JSON) that answers "who is here" on join;
 * - a PUBLISH on `presence:changes` per change, for other services;
 * - room events through `socket.to(channel).emit(...)`, which the Redis adapter also publishes so
 *   that other nodes deliver to their own sockets.
 *
 * Each write is one pipelined round trip, awaited before the broadcast so that a client that hears
 * about a change can read it back from Redis. Typing is not stored, only broadcast.
 */
import { createServer } from 'node:http';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';

const port = Number(process.env.PORT ?? 0);
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const TTL_SECONDS = 60;
const REFRESH_MS = 30_000;

const redis = new Redis(redisUrl);
const pub = new Redis(redisUrl);
const sub = pub.duplicate();

const http = createServer((_request, response) => response.writeHead(404).end());
const io = new Server(http, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
});
io.adapter(createAdapter(pub, sub));

interface MemberPayload {
  channel: string;
  member: { userId: string; [key: string]: unknown };
}

const userKey = (userId: string) => `presence:user:${userId}`;
const roomKey = (channel: string) => `presence:room:${channel}`;

async function store(userId: string, channel: string, json: string, kind: string): Promise<void> {
  await redis
    .pipeline()
    .set(userKey(userId), json, 'EX', TTL_SECONDS)
    .sadd('presence:online', userId)
    .hset(roomKey(channel), userId, json)
    .publish('presence:changes', `{"kind":"${kind}","channel":${JSON.stringify(channel)},"member":${json}}`)
    .exec();
}

async function remove(userId: string, channel: string): Promise<void> {
  await redis
    .pipeline()
    .del(userKey(userId))
    .srem('presence:online', userId)
    .hdel(roomKey(channel), userId)
    .publish('presence:changes', `{"kind":"leave","channel":${JSON.stringify(channel)},"userId":${JSON.stringify(userId)}}`)
    .exec();
}

io.on('connection', (socket) => {
  const auth = socket.handshake.auth as { userId?: unknown };
  const userId = typeof auth.userId === 'string' ? auth.userId : socket.id;
  const joined = new Set<string>();

  socket.on('join', async (payload: MemberPayload) => {
    const { channel, member } = payload;
    const json = JSON.stringify(member);
    joined.add(channel);
    await socket.join(channel);
    await store(userId, channel, json, 'join');
    const all = await redis.hgetall(roomKey(channel));
    socket.emit('presence.sync', { channel, members: Object.values(all).map((m) => JSON.parse(m)) });
    socket.to(channel).emit('presence.join', { channel, member });
  });

  // A listener in a large room (the bench's big channel): online as usual, in the room for its
  // broadcasts, but not in the room's member list and not announced.
  socket.on('subscribe', async (payload: MemberPayload) => {
    const { channel, member } = payload;
    await socket.join(channel);
    await redis.pipeline().set(userKey(userId), JSON.stringify(member), 'EX', TTL_SECONDS).sadd('presence:online', userId).exec();
    socket.emit('subscribed', { channel });
  });

  socket.on('update', async (payload: MemberPayload) => {
    const { channel, member } = payload;
    await store(userId, channel, JSON.stringify(member), 'update');
    socket.to(channel).emit('presence.update', { channel, member });
  });

  socket.on('typing', (payload: { channel: string; userId: string; typing: boolean }) => {
    socket.to(payload.channel).emit('typing', payload);
  });

  socket.on('leave', async (payload: { channel: string }) => {
    const { channel } = payload;
    joined.delete(channel);
    await socket.leave(channel);
    await remove(userId, channel);
    socket.to(channel).emit('presence.leave', { channel, userId });
  });

  socket.on('disconnect', async () => {
    for (const channel of joined) {
      await remove(userId, channel);
      io.to(channel).emit('presence.leave', { channel, userId });
    }
  });
});

// Idle users have no update to refresh their TTL; the usual fix is a periodic EXPIRE sweep.
setInterval(() => {
  const pipeline = redis.pipeline();
  for (const socket of io.of('/').sockets.values()) {
    const auth = socket.handshake.auth as { userId?: unknown };
    if (typeof auth.userId === 'string') pipeline.expire(userKey(auth.userId), TTL_SECONDS);
  }
  void pipeline.exec();
}, REFRESH_MS).unref();

http.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
