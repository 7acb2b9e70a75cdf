/*
 * Redis memory per online user in multi-node mode: one node, N users each with a session, a
 * name and avatar, joined to K channels (default 1) of S members (default: users / 100, i.e. 100
 * channels) with channel meta. Prints used_memory before and after, and the key count. Then the
 * rate of the reap's first pass (marking a dead node's sessions orphaned, user by user, as many at
 * once as the reaper runs): the node's shards are reaped as if it had died.
 * Run: node --import tsx bench/scaling/redis-memory.ts [users] [channels per user] [channel size]
 * (the chat workload of docs/scaling.md's sizing: 2000 20 10).
 */
import WebSocket from 'ws';
import { Redis } from 'ioredis';
import { resolveConfig } from '../../packages/server/src/config/config.js';
import { silentLogger } from '../../packages/server/src/log.js';
import { startServer } from '../../packages/server/src/server.js';
import { RedisService } from '../../packages/server/src/cluster/redis-service.js';
import { RedisServer } from '../../packages/server/test/support/redis-server.js';

const users = Number(process.argv[2] ?? 2000);
const channelsPerUser = Number(process.argv[3] ?? 1);
const channelSize = Number(process.argv[4] ?? Math.max(1, Math.round(users / 100)));
// Channel c holds users c*S/K … : user i's j-th channel is (i*K + j) / S, so each has S members.
const channelsOf = (i: number) => Array.from({ length: channelsPerUser }, (_, j) => `room:${Math.floor((i * channelsPerUser + j) / channelSize)}`);
const redis = await RedisServer.start();
const client = new Redis(redis.url);
const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]);
const server = await startServer(resolveConfig({ port: 0, host: '127.0.0.1', redisUrl: redis.url, limits: { maxConnections: users + 10, maxChannelsPerSession: Math.max(50, channelsPerUser) } }), { log: silentLogger });
await new Promise((resolve) => setTimeout(resolve, 300));
const before = await usedMemory();
const sockets: WebSocket[] = [];
for (let i = 0; i < users; i++) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/realtime?userId=user-${i}&name=User%20${i}&avatar=https://example.com/a/${i}.png`);
  await new Promise((resolve) => ws.once('message', resolve));
  for (const channel of channelsPerUser === 1 && process.argv[4] === undefined ? [`room:${i % 100}`] : channelsOf(i)) ws.send(JSON.stringify({ type: 'join', channel, meta: { mode: 'viewing' } }));
  sockets.push(ws);
}
await new Promise((resolve) => setTimeout(resolve, 2000));
const after = await usedMemory();
const keys = await client.dbsize();
const perUser = Math.round((after - before) / users);
// The reap's first pass over this node's users, 64 shards at a time as ClusterLink runs it.
const reaper = new RedisService({ url: redis.url });
await reaper.connect({ message() {}, reconnected() {}, disconnected() {} });
const nodeId = server.cluster!.nodeId;
const indexed = await reaper.indexedUsers(nodeId);
const reapStarted = performance.now();
for (let i = 0; i < indexed.length; i += 64) await Promise.all(indexed.slice(i, i + 64).map((userId) => reaper.reapUser(nodeId, userId, Date.now())));
const reapSeconds = (performance.now() - reapStarted) / 1000;
await reaper.close();
console.log(JSON.stringify({ users, channelsPerUser, channelSize, usedMemoryBefore: before, usedMemoryAfter: after, bytesPerOnlineUser: perUser, keys, reapedUsers: indexed.length, reapSeconds: Number(reapSeconds.toFixed(3)), usersReapedPerSecond: Math.round(indexed.length / reapSeconds) }, null, 2));
for (const ws of sockets) ws.terminate();
await server.shutdown();
client.disconnect();
await redis.stop();
