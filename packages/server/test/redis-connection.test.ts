import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { keySlot, openRedis, publishCommand, type RedisConnection } from '../src/cluster/redis-connection.js';
import type { TopicEvents, TopicSubscriber } from '../src/cluster/topic-subscriber.js';
import { eventually } from './support/cluster-nodes.js';
import { RedisCluster, nodeCommand } from './support/redis-cluster.js';
import { RedisServer } from './support/redis-server.js';

/*
 * redis-connection.ts against real servers: the slot of a key as Redis computes it, and topic
 * subscriptions on one redis-server and on a Redis Cluster through a Redis restart, a slot
 * migration and a failover.
 */

/** A topic subscriber that records everything it reports. */
class Recorder implements TopicEvents {
  readonly messages: string[] = [];
  readonly lostTopics: string[][] = [];
  readonly resubscribedTopics: string[][] = [];
  readonly subscriber: TopicSubscriber;

  constructor(connection: RedisConnection) {
    this.subscriber = connection.topicSubscriber(this);
  }

  message(topic: string, payload: string): void {
    this.messages.push(`${topic}=${payload}`);
  }

  lost(topics: string[]): void {
    this.lostTopics.push(topics);
  }

  resubscribed(topics: string[]): void {
    this.resubscribedTopics.push(topics);
  }
}

/** Keys of every kind: plain, with hash tags (empty, nested, several), non-ASCII. Seeded, so every run checks the same ones. */
function sampleKeys(count: number): string[] {
  let seed = 20240611;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const pieces = ['a', 'presence', 'user', ':', '{', '}', '{}', 'é', '日本', '🙂', '0', 'Z', '-', '_', '{presence}', 'x y'];
  const keys = ['', '{}', '{}a', 'a{}', '{a}', 'a{b}c', 'a{b}c{d}', '{{a}}', '}{a}', '{a', 'a}', '{presence}:bus', 'presence:user:{ann}', 'foo', '123456789'];
  while (keys.length < count) {
    const length = 1 + Math.floor(random() * 8);
    keys.push(Array.from({ length }, () => pieces[Math.floor(random() * pieces.length)]).join(''));
  }
  return keys;
}

describe('redis-connection on a Redis Cluster (3 masters)', { timeout: 120_000 }, () => {
  let cluster: RedisCluster;
  const opened: RedisConnection[] = [];

  before(async () => {
    cluster = await RedisCluster.start();
  });
  after(async () => {
    for (const connection of opened) connection.commands.disconnect();
    await cluster?.stop();
  });

  async function connection(): Promise<RedisConnection> {
    const made = openRedis({ clusterNodes: cluster.seeds });
    opened.push(made);
    await made.commands.connect();
    return made;
  }

  it('keySlot is CLUSTER KEYSLOT for every sampled key', async () => {
    const client = new Redis({ host: '127.0.0.1', port: cluster.nodes[0].port });
    try {
      const keys = sampleKeys(3000);
      const slots = await Promise.all(keys.map((key) => client.call('CLUSTER', 'KEYSLOT', key) as Promise<number>));
      const wrong = keys.filter((key, i) => keySlot(key) !== slots[i]);
      assert.deepEqual(wrong, [], 'keys whose slot differs from Redis');
    } finally {
      client.disconnect();
    }
  });

  it('publishes with SPUBLISH and subscribes each topic on the master of its slot; unsubscribed topics go quiet', async () => {
    const made = await connection();
    assert.equal(made.mode, 'cluster');
    assert.equal(publishCommand(made.mode), 'spublish');
    const recorder = new Recorder(made);
    // Twelve topics in twelve slots: every master holds several, in more than one slot each.
    const topics = Array.from({ length: 12 }, (_, i) => `t:{tag${i}}:bus`);
    const owners = new Set(await Promise.all(topics.map(async (topic) => (await cluster.masterOf(topic)).port)));
    assert.equal(owners.size, 3, 'the topics spread over all three masters');
    await recorder.subscriber.subscribe(topics);
    assert.ok(recorder.subscriber.isLive());
    const publisher = made.commands as Cluster;
    for (const topic of topics) await publisher.spublish(topic, 'one');
    await eventually(() => recorder.messages.length === topics.length, 5000, 'every topic to deliver');
    assert.deepEqual(recorder.messages.sort(), topics.map((topic) => `${topic}=one`).sort());
    await recorder.subscriber.unsubscribe(topics.slice(0, 6));
    for (const topic of topics) await publisher.spublish(topic, 'two');
    await eventually(() => recorder.messages.length === topics.length + 6, 5000, 'the subscribed half to deliver');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(recorder.messages.slice(topics.length).sort(), topics.slice(6).map((topic) => `${topic}=two`).sort());
    assert.deepEqual([recorder.lostTopics, recorder.resubscribedTopics], [[], []]);
    recorder.subscriber.close();
  });

  it('a topic whose slot migrates to another master is reported lost, subscribed there, reported resubscribed, and delivers again', async () => {
    const made = await connection();
    const recorder = new Recorder(made);
    const topic = '{migrating}:bus';
    const slot = keySlot(topic);
    const from = await cluster.masterOf(topic);
    // A topic on the same master in another slot: it stays where it is.
    let stays = '';
    for (let i = 0; !stays; i++) if ((await cluster.masterOf(`{staying${i}}:bus`)) === from) stays = `{staying${i}}:bus`;
    await recorder.subscriber.subscribe([topic, stays]);
    const to = (await cluster.masters()).find((node) => node !== from)!;
    const [fromId, toId] = await Promise.all([nodeCommand<string>(from.port, 'CLUSTER', 'MYID'), nodeCommand<string>(to.port, 'CLUSTER', 'MYID')]);
    // The slot holds no key, so moving it is the ownership change alone (what redis-cli --cluster reshard ends with).
    await nodeCommand(to.port, 'CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', fromId);
    await nodeCommand(from.port, 'CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', toId);
    await nodeCommand(from.port, 'CLUSTER', 'SETSLOT', String(slot), 'NODE', toId);
    await nodeCommand(to.port, 'CLUSTER', 'SETSLOT', String(slot), 'NODE', toId);
    await eventually(() => recorder.resubscribedTopics.length === 1, 10_000, 'the topic to be subscribed again');
    assert.deepEqual(recorder.lostTopics, [[topic]], 'only the moved topic was lost');
    assert.deepEqual(recorder.resubscribedTopics, [[topic]]);
    assert.ok(recorder.subscriber.isLive());
    await nodeCommand(to.port, 'SPUBLISH', topic, 'after the move');
    await (made.commands as Cluster).spublish(stays, 'still here');
    await eventually(() => recorder.messages.length === 2, 5000, 'both topics to deliver');
    assert.deepEqual(recorder.messages.sort(), [`${stays}=still here`, `${topic}=after the move`].sort());
    // The connection to the old owner still works for what it holds.
    const another = `${stays.slice(0, stays.indexOf('}') + 1)}:other`;
    await recorder.subscriber.subscribe([another]);
    await (made.commands as Cluster).spublish(another, 'x');
    await eventually(() => recorder.messages.includes(`${another}=x`), 5000, 'a new topic on the old owner');
    recorder.subscriber.close();
  });
});

describe('redis-connection on a Redis Cluster with replicas (3 masters + 3 replicas)', { timeout: 120_000 }, () => {
  let cluster: RedisCluster | undefined;
  after(async () => cluster?.stop());

  it('a topic survives a failover: the master killed, its replica promoted, the topic subscribed there and reported resubscribed', async () => {
    cluster = await RedisCluster.start({ replicasPerMaster: 1 });
    const made = openRedis({ clusterNodes: cluster.seeds });
    await made.commands.connect();
    const recorder = new Recorder(made);
    const topic = '{presence}:bus';
    await recorder.subscriber.subscribe([topic]);
    const master = await cluster.masterOf(topic);
    await cluster.kill(master);
    await eventually(() => recorder.lostTopics.length === 1, 5000, 'the loss to be reported');
    assert.equal(recorder.subscriber.isLive(), false);
    await eventually(() => recorder.resubscribedTopics.length === 1, 30_000, 'the topic to be subscribed on the promoted replica');
    assert.deepEqual(recorder.resubscribedTopics, [[topic]]);
    assert.ok(recorder.subscriber.isLive());
    const promoted = await cluster.masterOf(topic);
    assert.notEqual(promoted.port, master.port);
    await (made.commands as Cluster).spublish(topic, 'after the failover');
    await eventually(() => recorder.messages.length === 1, 5000, 'the message');
    assert.deepEqual(recorder.messages, [`${topic}=after the failover`]);
    recorder.subscriber.close();
    made.commands.disconnect();
  });
});

describe('redis-connection on one redis-server', { timeout: 60_000 }, () => {
  it('publishes with PUBLISH, authenticates with the URL password, and a topic survives a Redis restart (lost, then resubscribed)', async () => {
    const redis = await RedisServer.start(undefined, ['--requirepass', 's3cret']);
    const url = `redis://:s3cret@127.0.0.1:${redis.port}`;
    const made = openRedis({ url });
    try {
      assert.equal(made.mode, 'single');
      assert.equal(publishCommand(made.mode), 'publish');
      await made.commands.connect();
      const recorder = new Recorder(made);
      await recorder.subscriber.subscribe(['a', 'b']);
      await (made.commands as Redis).publish('a', '1');
      await eventually(() => recorder.messages.length === 1, 5000, 'the first message');
      await redis.restart();
      await eventually(() => recorder.lostTopics.length === 1, 5000, 'the loss to be reported');
      assert.deepEqual(recorder.lostTopics, [['a', 'b']]);
      await eventually(() => recorder.resubscribedTopics.length === 1, 10_000, 'both topics subscribed again');
      assert.deepEqual(recorder.resubscribedTopics.map((topics) => topics.sort()), [['a', 'b']]);
      await eventually(() => made.commands.status === 'ready', 5000, 'the command client back');
      await (made.commands as Redis).publish('b', '2');
      await eventually(() => recorder.messages.length === 2, 5000, 'a message after the restart');
      assert.deepEqual(recorder.messages, ['a=1', 'b=2']);
      recorder.subscriber.close();
    } finally {
      made.commands.disconnect();
      await redis.stop();
    }
  });

  it('a subscription the server refuses (wrong password) rejects, and nothing is reported live', async () => {
    const redis = await RedisServer.start(undefined, ['--requirepass', 's3cret']);
    const made = openRedis({ url: `redis://:wrong@127.0.0.1:${redis.port}` });
    try {
      const recorder = new Recorder(made);
      await assert.rejects(recorder.subscriber.subscribe(['a']));
      assert.equal(recorder.subscriber.isLive(), false);
      recorder.subscriber.close();
    } finally {
      made.commands.disconnect();
      await redis.stop();
    }
  });
});
