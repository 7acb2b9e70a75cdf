import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import type { SharedService } from '../../src/cluster/shared-service.js';
import { ClusterNode, eventually, pause, type RecordingSink } from './cluster-nodes.js';
import * as log from './presence-log.js';

/** A shared service the cluster runs on: a fresh, empty one per test. */
export interface ServiceUnderTest {
  /** A new connection for one node. */
  connect(): SharedService;
  /** Stops answering (Redis killed). */
  goDown(): Promise<void>;
  /** Answers again, with no data (Redis restarted empty). */
  comeBackEmpty(): Promise<void>;
  /** Every key held, for leak checks. */
  keys(): Promise<string[]>;
  close(): Promise<void>;
}

export interface BackendFactory {
  name: string;
  create(): Promise<ServiceUnderTest>;
  /** The whole suite's time limit (a Redis Cluster takes seconds to start for each test). @default 60000 */
  timeoutMs?: number;
}

const TRUSTED = { trusted: true } as const;
const toIsoOrNull = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : new Date(ms).toISOString());
const OFFLINE_DELAY = 400;
const LEASE_TTL = 300;

/** What one recording sink made of a channel's presence messages. */
const events = (sink: RecordingSink, channel: string) => log.presenceEvents(sink.frames, channel);
const joinsAndLeaves = (sink: RecordingSink, channel: string, userId: string) => log.joinsAndLeaves(sink.frames, channel, userId);
const replay = (sink: RecordingSink, channel: string) => log.replay(sink.frames, channel);

/** A channel's members as the HTTP API of this node answers (a node with no member there reads the shared state). */
async function memberIds(node: ClusterNode, channel: string): Promise<string[]> {
  await node.engine.loadChannel(channel);
  return node.engine
    .channelPresence(channel, { limit: 1000 })
    .members.map((m) => m.userId)
    .sort();
}

/** A user's presence as the HTTP API of this node answers (it reads users it does not follow first). */
async function presence(node: ClusterNode, userId: string) {
  await node.engine.loadUsers([userId]);
  return node.engine.userPresence(userId, TRUSTED);
}

async function everyNode(nodes: ClusterNode[], condition: (node: ClusterNode) => Promise<boolean>): Promise<boolean> {
  for (const node of nodes) if (!(await condition(node))) return false;
  return true;
}

/**
 * The cluster's behaviour, written once and run against every shared service: in-process hub and
 * a real redis-server. Each node is a real engine with a real cluster link.
 */
export function describeClusterConformance(factory: BackendFactory): void {
  describe(`cluster conformance: ${factory.name}`, { timeout: factory.timeoutMs ?? 60_000 }, () => {
    let service: ServiceUnderTest | undefined;
    let nodes: ClusterNode[] = [];

    async function cluster(count: number, options: { clockSkewMs?: number[]; offlineDelayMs?: number; leaseTtlMs?: number; nodeIds?: string[] } = {}): Promise<ClusterNode[]> {
      service ??= await factory.create();
      const started: ClusterNode[] = [];
      for (let i = 0; i < count; i++) {
        started.push(
          await ClusterNode.start({
            service: service.connect(),
            nodeId: options.nodeIds?.[i],
            leaseTtlMs: options.leaseTtlMs ?? LEASE_TTL,
            clockSkewMs: options.clockSkewMs?.[i],
            config: { offlineDelayMs: options.offlineDelayMs ?? OFFLINE_DELAY },
          }),
        );
      }
      nodes.push(...started);
      await eventually(() => started.every((n) => n.link.nodes().length >= count), 5000, 'nodes to see each other');
      return started;
    }

    afterEach(async () => {
      for (const node of nodes) await node.stop().catch(() => {});
      nodes = [];
      await service?.close();
      service = undefined;
    });
    after(async () => service?.close());

    it('members on different nodes see each other join and leave, with gap-free seq and equal member lists everywhere', async () => {
      const [a, b, c] = await cluster(3);
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      const bob = await b.connect('bob');
      await b.send(bob, { type: 'join', channel: 'room' });
      await eventually(async () => joinsAndLeaves(ann, 'room', 'bob').length === 1, 5000, 'ann to see bob');
      const cat = await c.connect('cat');
      await c.send(cat, { type: 'join', channel: 'room' });
      await eventually(async () => await everyNode([a, b, c], async (n) => (await memberIds(n, 'room')).join() === 'ann,bob,cat'), 5000, 'all nodes to list three');
      await b.send(bob, { type: 'leave', channel: 'room' });
      await eventually(async () => joinsAndLeaves(cat, 'room', 'bob').includes('leave'), 5000, 'cat to see bob leave');
      await eventually(async () => joinsAndLeaves(ann, 'room', 'bob').includes('leave'), 5000, 'ann to see bob leave');
      assert.deepEqual(replay(ann, 'room'), ['ann:online', 'cat:online']);
      assert.deepEqual(replay(cat, 'room'), ['ann:online', 'cat:online']);
      for (const node of [a, b, c]) assert.deepEqual((await memberIds(node, 'room')), ['ann', 'cat']);
      assert.deepEqual(joinsAndLeaves(ann, 'room', 'bob'), ['join', 'leave']);
    });

    it('a user joined from two nodes is one member: one join, and a leave only after the last session leaves', async () => {
      const [a, b, c] = await cluster(3);
      const watcher = await c.connect('wes');
      await c.send(watcher, { type: 'join', channel: 'doc' });
      const tab1 = await a.connect('ann', { device: 'web' });
      const tab2 = await b.connect('ann', { device: 'ios' });
      await a.send(tab1, { type: 'join', channel: 'doc' });
      await b.send(tab2, { type: 'join', channel: 'doc' });
      await eventually(async () => (await presence(c, 'ann')).devices.length === 2, 5000, 'both devices merged');
      // Once both sessions are known everywhere, nothing changes, so nothing is published: applying
      // the other node's session must not send ours again (the two nodes answered each other forever).
      await pause(100);
      let published = 0;
      for (const node of [a, b]) {
        const publish = node.link.publish.bind(node.link);
        node.link.publish = (op) => {
          published += 1;
          publish(op);
        };
      }
      await pause(300);
      assert.equal(published, 0, 'ops published while nothing changed');
      await a.send(tab1, { type: 'leave', channel: 'doc' });
      await pause(200);
      assert.deepEqual(joinsAndLeaves(watcher, 'doc', 'ann'), ['join']);
      await b.send(tab2, { type: 'leave', channel: 'doc' });
      await eventually(async () => joinsAndLeaves(watcher, 'doc', 'ann').length === 2, 5000, 'the last leave');
      assert.deepEqual(joinsAndLeaves(watcher, 'doc', 'ann'), ['join', 'leave']);
    });

    it('status, meta, channel meta and typing from one node reach the others, in order', async () => {
      const [a, b] = await cluster(2);
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      const bob = await b.connect('bob');
      await b.send(bob, { type: 'join', channel: 'room' });
      await eventually(async () => replay(bob, 'room').length === 2, 5000, 'bob to see ann');
      await a.send(ann, { type: 'status', status: 'busy', message: 'In a call' });
      await a.send(ann, { type: 'meta', meta: { name: 'Ann' } });
      await a.send(ann, { type: 'channel.meta', channel: 'room', meta: { cursor: 7 } });
      await a.send(ann, { type: 'typing', channel: 'room', typing: true });
      await eventually(async () => bob.of('typing').length === 1, 5000, 'typing to arrive');
      const updates = events(bob, 'room').filter((e) => e.type === 'presence.update');
      const last = updates.at(-1);
      assert.ok(last && last.type === 'presence.update');
      assert.equal(last.member.status, 'busy');
      assert.equal(last.member.message, 'In a call');
      assert.deepEqual(last.member.meta, { name: 'Ann' });
      assert.deepEqual(last.member.channelMeta, { cursor: 7 });
      await a.send(ann, { type: 'typing', channel: 'room', typing: false });
      await eventually(async () => bob.of('typing').length === 2, 5000, 'typing to stop');
      assert.deepEqual(bob.of('typing').map((t) => t.typing), [true, false]);
      assert.deepEqual(ann.of('typing'), [], 'nobody echoes typing to the typist');
      const seen = (await presence(b, 'ann'));
      assert.equal(seen.status, 'busy');
      assert.equal(seen.message, 'In a call');
      replay(bob, 'room');
    });

    it('watchers on another node get user updates, also for changes made over the API of a third node', async () => {
      const [a, b, c] = await cluster(3);
      const wes = await b.connect('wes');
      await b.send(wes, { type: 'watch', users: ['ann'] });
      assert.equal(wes.of('user.sync')[0].users[0].status, 'offline');
      const ann = await a.connect('ann');
      await eventually(async () => wes.of('user.update').some((u) => u.user.status === 'online'), 5000, 'ann online');
      await c.engine.loadUsers(['ann']);
      c.engine.updateUser('ann', { status: 'away', message: 'Lunch' });
      await eventually(async () => wes.of('user.update').some((u) => u.user.status === 'away' && u.user.message === 'Lunch'), 5000, 'ann away');
      await eventually(async () => ann.frames.length > 0 && (await presence(a, 'ann')).status === 'away', 5000, 'ann own node agrees');
    });

    it('a disconnect becomes a leave everywhere after the offline delay; resuming on another node inside it changes nothing', async () => {
      const [a, b, c] = await cluster(3);
      const obs = await c.connect('obs');
      await c.send(obs, { type: 'join', channel: 'room' });
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      await eventually(async () => joinsAndLeaves(obs, 'room', 'ann').length === 1, 5000, 'ann joined');
      a.engine.disconnect(ann.attachment!);
      await pause(OFFLINE_DELAY / 4);
      const resumed = await b.connect('ann', { sessionId: ann.sessionId });
      assert.equal(resumed.of('welcome')[0].resumed, true, 'the session moved with its channels');
      assert.deepEqual(
        resumed.of('presence.sync').map((s) => s.channel),
        ['room'],
      );
      await pause(OFFLINE_DELAY * 2);
      assert.deepEqual(joinsAndLeaves(obs, 'room', 'ann'), ['join'], 'no leave, no second join');
      for (const node of [a, b, c]) assert.deepEqual((await memberIds(node, 'room')), ['ann', 'obs']);
      b.engine.disconnect(resumed.attachment!);
      await eventually(async () => joinsAndLeaves(obs, 'room', 'ann').length === 2, 5000, 'leave after the delay');
      const leave = events(obs, 'room').at(-1);
      assert.ok(leave?.type === 'presence.leave' && leave.lastSeen !== null);
      for (const node of [a, b, c]) assert.deepEqual((await memberIds(node, 'room')), ['obs']);
    });

    it('a crashed node: its users leave after detection plus the offline delay, its keys are gone, and a user who resumes elsewhere never leaves', async () => {
      const [a, b, c] = await cluster(3);
      const obs = await c.connect('obs');
      await c.send(obs, { type: 'join', channel: 'room' });
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      const ben = await a.connect('ben');
      await a.send(ben, { type: 'join', channel: 'room' });
      await eventually(async () => (await memberIds(c, 'room')).length === 3, 5000, 'three members');
      const crashedAt = Date.now();
      await a.crash();
      nodes = nodes.filter((n) => n !== a);
      // ben's client reconnects to b at once with its session id; ann never comes back.
      const benAgain = await b.connect('ben', { sessionId: ben.sessionId });
      assert.equal(benAgain.of('welcome')[0].resumed, true);
      await eventually(async () => joinsAndLeaves(obs, 'room', 'ann').includes('leave'), 10_000, 'ann to leave');
      const took = Date.now() - crashedAt;
      assert.ok(took >= OFFLINE_DELAY, `the leave waited for the offline delay (${took} ms)`);
      assert.deepEqual(joinsAndLeaves(obs, 'room', 'ben'), ['join'], 'ben moved without a leave');
      for (const node of [b, c]) assert.deepEqual((await memberIds(node, 'room')), ['ben', 'obs']);
      await eventually(async () => b.link.nodes().length === 2, 5000, 'the dead node out of the registry');
      // Its index of users goes when the reap is over: an offline delay after its sessions were orphaned.
      await eventually(async () => (await service!.keys()).every((k) => !k.includes(a.link.nodeId)), OFFLINE_DELAY * 3, 'no keys of the dead node left');
    });

    it('a crashed node restarted at once under the same node id: users who resume (there or elsewhere) never flap, the others leave after the offline delay', async () => {
      // A lease far longer than the restart: the old run is still registered when the new one starts.
      const leaseTtlMs = 5000;
      const [a, b, c] = await cluster(3, { leaseTtlMs, nodeIds: ['same-id'] });
      const obs = await c.connect('obs');
      await c.send(obs, { type: 'join', channel: 'room' });
      const [ann, ben, cal] = [await a.connect('ann'), await a.connect('ben'), await a.connect('cal')];
      for (const sink of [ann, ben, cal]) await a.send(sink, { type: 'join', channel: 'room' });
      await eventually(async () => await everyNode([b, c], async (n) => (await memberIds(n, 'room')).length === 4), 5000, 'four members everywhere');
      const crashedAt = Date.now();
      await a.crash();
      nodes = nodes.filter((n) => n !== a);
      const [again] = await cluster(1, { leaseTtlMs, nodeIds: ['same-id'] });
      // ann resumes on the restarted node, ben on another one; cal never comes back.
      const annAgain = await again.connect('ann', { sessionId: ann.sessionId });
      const benAgain = await b.connect('ben', { sessionId: ben.sessionId });
      await eventually(async () => joinsAndLeaves(obs, 'room', 'cal').includes('leave'), 10_000, 'cal to leave');
      const took = Date.now() - crashedAt;
      assert.ok(took >= OFFLINE_DELAY, `the leave waited for the offline delay (${took} ms)`);
      // Its lease, last renewed at most a third of it before the crash, ran out 2/3 of it after at the earliest.
      assert.ok(took < (leaseTtlMs * 2) / 3, `the old run was ended at the restart, not when its lease ran out (${took} ms)`);
      await pause(OFFLINE_DELAY);
      for (const userId of ['ann', 'ben']) assert.deepEqual(joinsAndLeaves(obs, 'room', userId), ['join'], `${userId} never left`);
      assert.equal(annAgain.of('welcome')[0].resumed, true, 'resumed on the restarted node');
      assert.equal(benAgain.of('welcome')[0].resumed, true, 'resumed on another node');
      for (const node of [again, b, c]) assert.deepEqual((await memberIds(node, 'room')), ['ann', 'ben', 'obs']);
      assert.notEqual(again.link.nodeId, a.link.nodeId, 'a new incarnation');
      assert.deepEqual(
        (await service!.keys()).filter((k) => k.includes(a.link.nodeId)),
        [],
        'no key of the old incarnation left',
      );
    });

    it("a crashed node's users get one lastSeen on every node, and a node started later reads it: the later of the stored one and the node's last lease renewal; an invisible user's stays frozen", async () => {
      // The node that dies runs 30 s ahead and another 30 s behind: lastSeen is on the service's clock.
      const [a, b, c] = await cluster(3, { clockSkewMs: [30_000, -30_000, 0] });
      const obs = await b.connect('obs');
      await b.send(obs, { type: 'join', channel: 'room' });
      await b.send(obs, { type: 'watch', users: ['ann'] });
      const oli = await c.connect('oli');
      await c.send(oli, { type: 'join', channel: 'room' });
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      const ivy = await a.connect('ivy');
      await a.send(ivy, { type: 'join', channel: 'room' });
      await a.send(ivy, { type: 'status', status: 'invisible' });
      await eventually(async () => await everyNode([b, c], async (n) => (await memberIds(n, 'room')).join() === 'ann,obs,oli'), 5000, 'ann listed, ivy hidden');
      await eventually(async () => await everyNode([b, c], async (n) => (await presence(n, 'ivy')).lastSeen !== null), 5000, "ivy's frozen lastSeen known");
      const ivyFrozen = (await presence(b, 'ivy')).lastSeen;
      // ann keeps busy for several lease lifetimes; activity is never announced to the other nodes.
      const busyUntil = Date.now() + LEASE_TTL * 4;
      while (Date.now() < busyUntil) {
        await a.send(ann, { type: 'activity' });
        await a.send(ivy, { type: 'activity' });
        await pause(20);
      }
      const crashedAt = Date.now();
      await a.crash();
      nodes = nodes.filter((n) => n !== a);
      const leaveOf = (sink: RecordingSink) => events(sink, 'room').find((e) => e.type === 'presence.leave' && e.userId === 'ann');
      await eventually(async () => leaveOf(obs) !== undefined && leaveOf(oli) !== undefined, 10_000, 'ann to leave on b and c');
      const lastSeen = [obs, oli].map((sink) => {
        const leave = leaveOf(sink);
        assert.ok(leave?.type === 'presence.leave');
        return leave.lastSeen;
      });
      assert.equal(lastSeen[0], lastSeen[1], 'one lastSeen in the leave on every node');
      const seenAt = Date.parse(lastSeen[0] ?? '');
      // A lease is renewed every third of it; a little room for timers on a busy machine.
      assert.ok(seenAt >= crashedAt - LEASE_TTL / 3 - 100, `lastSeen ${crashedAt - seenAt} ms before the crash: no earlier than its last lease renewal`);
      assert.ok(seenAt <= crashedAt + 50, `lastSeen ${seenAt - crashedAt} ms after the crash`);
      const update = obs.of('user.update').at(-1);
      assert.equal(update?.user.status, 'offline');
      assert.equal(update?.user.lastSeen, lastSeen[0], 'the watcher is told the same lastSeen');
      for (const node of [b, c]) {
        assert.equal((await presence(node, 'ann')).lastSeen, lastSeen[0], `lastSeen of ann on ${node.link.nodeId}`);
        assert.equal((await presence(node, 'ivy')).lastSeen, ivyFrozen, 'an invisible user keeps the lastSeen frozen when she went invisible');
      }
      const [d] = await cluster(1);
      await d.engine.loadUsers(['ann', 'ivy']);
      assert.equal((await presence(d, 'ann')).lastSeen, lastSeen[0], 'a node started later reads the same lastSeen');
      assert.equal((await presence(d, 'ivy')).lastSeen, ivyFrozen);
    });

    it("a crashed node's last activity write, later than its last lease renewal, is the lastSeen every node reports", async () => {
      const [a, b] = await cluster(2);
      const obs = await b.connect('obs');
      await b.send(obs, { type: 'join', channel: 'room' });
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      await eventually(async () => (await memberIds(b, 'room')).length === 2, 5000, 'ann listed on b');
      await a.crash();
      nodes = nodes.filter((n) => n !== a);
      // What the dead node's quiet activity write would hold had it landed just before the kill:
      // later than any renewal of its lease, and never told to the other nodes.
      const lastActivity = Date.now();
      const writer = service!.connect();
      await writer.connect({ message() {}, reconnected() {}, disconnected() {} });
      await writer.writeUser(a.link.nodeId, 'ann', { lastSeenAt: String(lastActivity), lastActiveAt: String(lastActivity) }, false);
      await writer.close();
      await eventually(async () => joinsAndLeaves(obs, 'room', 'ann').includes('leave'), 10_000, 'ann to leave');
      const leave = events(obs, 'room').at(-1);
      assert.ok(leave?.type === 'presence.leave');
      assert.equal(leave.lastSeen, new Date(lastActivity).toISOString(), 'the stored lastSeen, not the older renewal');
      assert.equal((await presence(b, 'ann')).lastSeen, leave.lastSeen);
      const [c] = await cluster(1);
      await c.engine.loadUsers(['ann']);
      assert.equal((await presence(c, 'ann')).lastSeen, leave.lastSeen);
    });

    it('a record restored after the service lost its data fills in every field a quiet activity write left missing, and overwrites none', async () => {
      service ??= await factory.create();
      const writer = service.connect();
      await writer.connect({ message() {}, reconnected() {}, disconnected() {} });
      try {
        // The service came back empty and one node's quiet activity write of ann landed before
        // another node (or the same one) restored her record from memory.
        await writer.writeUser('n1', 'ann', { lastSeenAt: '2000', lastActiveAt: '2000' }, false);
        const held = { manual: JSON.stringify({ status: 'busy', message: 'In a call' }), meta: JSON.stringify({ name: 'Ann' }), visibility: 'everyone', contacts: '[]', lastSeenAt: '1000', lastActiveAt: '1000' };
        await writer.restoreUser('ann', held);
        const expected = { ...held, lastSeenAt: '2000', lastActiveAt: '2000' };
        assert.deepEqual((await writer.readUsers(['ann'])).get('ann')?.fields, expected, 'every field filled in, the later timestamps kept');
        // A restore of a record the service holds whole changes nothing.
        await writer.restoreUser('ann', { ...held, manual: JSON.stringify({ status: 'away' }), meta: '{}' });
        assert.deepEqual((await writer.readUsers(['ann'])).get('ann')?.fields, expected);
      } finally {
        await writer.close();
      }
    });

    it('logout on one node ends the user everywhere at once', async () => {
      // A long offline delay: any leave seen within the wait below cannot be the delay running out.
      const [a, b] = await cluster(2, { offlineDelayMs: 60_000 });
      const obs = await b.connect('obs');
      await b.send(obs, { type: 'join', channel: 'room' });
      const tabA = await a.connect('ann');
      const tabB = await b.connect('ann');
      await a.send(tabA, { type: 'join', channel: 'room' });
      await b.send(tabB, { type: 'join', channel: 'room' });
      await eventually(async () => (await memberIds(a, 'room')).length === 2, 5000, 'ann on a');
      await a.send(tabA, { type: 'logout' });
      await eventually(async () => tabB.closedWith?.code === 1000, 5000, 'the other tab closed');
      await eventually(async () => joinsAndLeaves(obs, 'room', 'ann').length === 2, 10_000, 'leave without the offline delay');
      for (const node of [a, b]) assert.deepEqual((await memberIds(node, 'room')), ['obs']);
    });

    it("a node's quiet activity write never overwrites a status another node set meanwhile (model-cluster.test.ts)", async () => {
      const [a, b] = await cluster(2);
      // Bob is new to a: his first activity there is queued as a quiet write of his timestamps.
      const onA = await a.connect('bob');
      const onB = await b.connect('bob', { device: 'ios' });
      await b.send(onB, { type: 'status', status: 'busy', state: 'in-call' });
      await eventually(async () => (await presence(a, 'bob')).status === 'busy', 5000, 'a to hear of the status');
      // Past a's activity flush (100 ms here), then a node that reads bob from the shared service.
      await pause(400);
      const [c] = await cluster(1);
      await c.engine.loadUsers(['bob']);
      const stored = c.link.get('bob');
      assert.equal(stored?.manual.status, 'busy', `the stored record keeps b's status: ${JSON.stringify(stored)}`);
      assert.equal(stored?.manual.state, 'in-call');
      assert.ok(onA.sessionId !== undefined);
    });

    it("a node's session ops count as unwritten until the shared service holds them; a node started after that reads them (model-cluster.test.ts)", async () => {
      const [a] = await cluster(1);
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      const sessionId = ann.sessionId;
      await a.send(ann, { type: 'logout' });
      // Published at the end of the event-loop turn: the service does not hold the logout yet.
      assert.ok(a.link.inspect().unwrittenOps > 0, 'the ops of this turn are not written yet');
      await eventually(async () => a.link.inspect().unwrittenOps === 0, 5000, 'the ops to be written');
      const [b] = await cluster(1);
      await eventually(async () => b.link.isReady() && b.link.inspect().knownNodes === 1, 5000, "b to read a's state");
      // The logged-out session is gone from a's stored state: asking for it on b starts a new session, under a new id.
      const again = await b.connect('ann', { sessionId });
      assert.equal(again.of('welcome')[0].resumed, false);
      assert.notEqual(again.of('welcome')[0].sessionId, sessionId);
      await eventually(async () => (await memberIds(a, 'room')).length === 0 && (await presence(a, 'ann')).status === 'online', 5000, 'a to see ann on b');
      await pause(200);
      assert.equal(again.closedWith, undefined, 'the logout before it does not end the new session');
      assert.equal((await presence(b, 'ann')).status, 'online');
    });

    it('invisible is offline on every node: leave, no typing, not listed', async () => {
      const [a, b] = await cluster(2);
      const obs = await b.connect('obs');
      await b.send(obs, { type: 'join', channel: 'room' });
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      await eventually(async () => (await memberIds(b, 'room')).length === 2, 5000, 'ann listed');
      await a.send(ann, { type: 'status', status: 'invisible' });
      await eventually(async () => joinsAndLeaves(obs, 'room', 'ann').length === 2, 5000, 'ann left');
      await a.send(ann, { type: 'typing', channel: 'room', typing: true });
      await pause(200);
      assert.deepEqual(obs.of('typing'), []);
      assert.deepEqual((await memberIds(b, 'room')), ['obs']);
      assert.equal((await presence(b, 'ann')).status, 'offline');
      assert.equal(await b.engine.onlineCount(), 1);
    });

    it("a user's channels and the online list are the same on every node (GET /realtime/users/:id/channels, GET /realtime/presence/online); invisible users are in neither", async () => {
      const [a, b] = await cluster(2);
      const ann = await a.connect('ann');
      const annTab = await b.connect('ann');
      await a.send(ann, { type: 'join', channel: 'doc', meta: { mode: 'editing' } });
      await b.send(annTab, { type: 'join', channel: 'room' });
      const bob = await b.connect('bob');
      await b.send(bob, { type: 'join', channel: 'room' });
      // As the HTTP API answers: a user's channels and the online list read through the shared state.
      const userChannels = async (node: ClusterNode, userId: string) => {
        await node.engine.loadUserChannels(userId);
        return node.engine.userChannels(userId);
      };
      const channelsOf = async (node: ClusterNode, userId: string) => (await userChannels(node, userId)).map((c) => [c.channel, c.channelMeta]);
      const onlineUsers = (node: ClusterNode, limit: number) => node.engine.onlineUsers({ limit });
      const online = async (node: ClusterNode) => (await onlineUsers(node, 1)).count;
      const expected = [['doc', { mode: 'editing' }], ['room', {}]];
      await eventually(async () => await everyNode([a, b], async (node) => JSON.stringify(await channelsOf(node, 'ann')) === JSON.stringify(expected)), 5000, "ann's channels on both nodes");
      await eventually(async () => await everyNode([a, b], async (node) => (await online(node)) === 2), 5000, 'two users online on both nodes');
      assert.deepEqual(await userChannels(a, 'ann'), await userChannels(b, 'ann'), 'the same joinedAt everywhere');
      // lastSeen and lastActive ride along with announced changes, so they may differ between nodes by moments.
      const listed = async (node: ClusterNode) => (await onlineUsers(node, 10)).users.map((u) => [u.userId, u.status, u.devices]);
      assert.deepEqual(await listed(a), [['ann', 'online', ['unknown']], ['bob', 'online', ['unknown']]]);
      assert.deepEqual(await listed(b), await listed(a));
      assert.deepEqual((await onlineUsers(a, 1)).nextCursor, 'ann');

      await a.send(ann, { type: 'status', status: 'invisible' });
      await eventually(async () => await everyNode([a, b], async (node) => (await online(node)) === 1), 5000, 'ann off the online list on both nodes');
      for (const node of [a, b]) {
        assert.deepEqual(await userChannels(node, 'ann'), []);
        assert.deepEqual((await onlineUsers(node, 10)).users.map((u) => u.userId), ['bob']);
      }
    });

    it('records (lastSeen, manual status, state, message, meta) survive a restart of every node', async () => {
      const [a] = await cluster(1);
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'status', state: 'in-call', message: 'Standup' });
      await a.send(ann, { type: 'meta', meta: { name: 'Ann', avatar: 'a.png' } });
      a.engine.disconnect(ann.attachment!);
      await pause(300);
      await a.stop();
      nodes = [];
      // A node that leaves orphans its sessions in the shards for the offline delay (a client may
      // resume them anywhere meanwhile): a node started after it reads them as gone.
      await pause(OFFLINE_DELAY);
      const [fresh] = await cluster(1);
      await fresh.engine.loadUsers(['ann']);
      const seen = (await presence(fresh, 'ann'));
      assert.equal(seen.status, 'offline');
      assert.notEqual(seen.lastSeen, null);
      assert.deepEqual(seen.meta, { name: 'Ann', avatar: 'a.png' });
      const back = await fresh.connect('ann');
      const self = back.of('welcome')[0].self;
      assert.equal(self.state, 'in-call');
      assert.equal(self.message, 'Standup');
      assert.equal(self.status, 'busy');
    });

    it('after the shared service comes back empty, nodes re-register and converge without reconnects or flapping', async () => {
      const [a, b] = await cluster(2);
      const obs = await b.connect('obs');
      await b.send(obs, { type: 'join', channel: 'room' });
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      await a.send(ann, { type: 'status', status: 'busy' });
      await eventually(async () => (await memberIds(b, 'room')).length === 2, 5000, 'ann listed');
      await service!.goDown();
      await eventually(async () => !a.link.isReady() && !b.link.isReady(), 5000, 'both not ready');
      // Local clients keep working while the service is away.
      const cal = await b.connect('cal');
      await b.send(cal, { type: 'join', channel: 'room' });
      assert.deepEqual((await memberIds(b, 'room')), ['ann', 'cal', 'obs']);
      await service!.comeBackEmpty();
      await eventually(async () => a.link.isReady() && b.link.isReady(), 10_000, 'both ready again');
      await eventually(async () => (await memberIds(a, 'room')).join() === 'ann,cal,obs', 5000, 'a learns of cal');
      await pause(OFFLINE_DELAY * 2);
      assert.deepEqual(joinsAndLeaves(obs, 'room', 'ann'), ['join'], 'no flap for ann');
      assert.equal((await presence(b, 'ann')).status, 'busy');
      for (const node of [a, b]) assert.deepEqual((await memberIds(node, 'room')), ['ann', 'cal', 'obs']);
      const keys = await service!.keys();
      assert.ok(keys.some((k) => k.includes(a.link.nodeId)) && keys.some((k) => k.includes(b.link.nodeId)), 'both nodes wrote their state again');
    });

    it('a status set while the service is down reaches every node once it is back, also when its node is back first (invisible: offline everywhere)', async () => {
      const [a, b, c] = await cluster(3);
      const obs = await b.connect('obs');
      await b.send(obs, { type: 'join', channel: 'room' });
      // Nothing about ann was ever announced: b and c know her only from her session.
      const ann = await a.connect('ann');
      await a.send(ann, { type: 'join', channel: 'room' });
      await eventually(async () => await everyNode([a, b, c], async (n) => (await memberIds(n, 'room')).join() === 'ann,obs'), 5000, 'both listed everywhere');
      await service!.goDown();
      await eventually(async () => ![a, b, c].some((n) => n.link.isReady()), 5000, 'no node ready');
      await a.send(ann, { type: 'status', status: 'invisible' });
      // a comes back first (the hub returns nodes in the order they connected; Redis clients on
      // their own schedules), rewrites ann's record and announces it before b and c listen again.
      await service!.comeBackEmpty();
      await eventually(async () => await everyNode([a, b, c], async (n) => n.link.isReady()), 10_000, 'every node ready again');
      const hidden = async () => await everyNode([a, b, c], async (n) => (await memberIds(n, 'room')).join() === 'obs' && (await presence(n, 'ann')).status === 'offline');
      await eventually(hidden, 5000, 'ann offline on every node');
      await pause(OFFLINE_DELAY * 2);
      assert.ok(await hidden(), 'and she stays so');
      assert.deepEqual(joinsAndLeaves(obs, 'room', 'ann'), ['join', 'leave'], 'obs saw her join, then leave once');
    });

    it('changes made on two nodes while the service is down both survive its return: a status over an expiry cleared elsewhere, a status over a lastSeen', async () => {
      const [a, b] = await cluster(2);
      const obs = await b.connect('obs');
      await b.send(obs, { type: 'join', channel: 'room' });
      const annA = await a.connect('ann');
      await a.send(annA, { type: 'join', channel: 'room' });
      await a.send(annA, { type: 'status', status: 'busy', expiresAt: new Date(Date.now() + 600).toISOString() });
      const bobA = await a.connect('bob');
      const bobB = await b.connect('bob', { device: 'ios' });
      await b.send(bobB, { type: 'join', channel: 'room' });
      await eventually(async () => (await memberIds(b, 'room')).join() === 'ann,bob,obs' && (await presence(b, 'ann')).status === 'busy', 5000, 'everyone on b');
      await service!.goDown();
      await eventually(async () => !a.link.isReady() && !b.link.isReady(), 5000, 'no node ready');
      // Ann's busy runs out on both nodes; then she sets away on a. Bob's tab on b closes (a new
      // lastSeen there) and he sets a message on a.
      await eventually(async () => await everyNode([a, b], async (n) => (await presence(n, 'ann')).status === 'online'), 5000, 'the expiry on both nodes');
      await a.send(annA, { type: 'status', status: 'away' });
      b.engine.disconnect(bobB.attachment!);
      await a.send(bobA, { type: 'status', message: 'Back at 3' });
      // a comes back first over the hub (Redis: either): b's changes are written after a's.
      await service!.comeBackEmpty();
      await eventually(async () => a.link.isReady() && b.link.isReady(), 10_000, 'both ready again');
      const right = async () =>
        await everyNode([a, b], async (n) => (await presence(n, 'ann')).status === 'away' && (await presence(n, 'bob')).message === 'Back at 3');
      await eventually(right, 5000, "ann away and bob's message on both nodes");
      await pause(OFFLINE_DELAY * 2);
      assert.ok(await right(), 'and so it stays');
      // The shared service holds both of bob's changes: a node started now reads them.
      const [c] = await cluster(1);
      await c.engine.loadUsers(['bob']);
      const stored = c.link.get('bob');
      assert.equal(stored?.manual.message, 'Back at 3');
      assert.equal(toIsoOrNull(stored?.lastSeenAt), (await presence(b, 'bob')).lastSeen, "the lastSeen of bob's tab closed on b");
    });

    it('a node with a skewed wall clock stamps cluster time: no early expiry, no lost update', async () => {
      const [a, b] = await cluster(2, { clockSkewMs: [30_000, -30_000] });
      const ann = await a.connect('ann');
      const bob = await b.connect('bob');
      await b.send(bob, { type: 'watch', users: ['ann'] });
      const expiresAt = new Date(Date.now() + 1500).toISOString();
      await b.engine.loadUsers(['ann']);
      b.engine.updateUser('ann', { status: 'busy', expiresAt });
      await eventually(async () => (await presence(a, 'ann')).status === 'busy', 5000, 'busy on a');
      await pause(600);
      assert.equal((await presence(a, 'ann')).status, 'busy', 'a node 30 s ahead does not expire it early');
      await eventually(async () => (await presence(a, 'ann')).status === 'online', 5000, 'expired on time');
      await a.send(ann, { type: 'meta', meta: { step: 1 } });
      await eventually(async () => (await presence(b, 'ann')).meta.step === 1, 5000, 'first update');
      b.engine.updateUser('ann', { meta: { step: 2 } });
      await eventually(async () => (await presence(a, 'ann')).meta.step === 2, 5000, 'an update from the node 30 s behind is not lost');
      const lastSeen = Date.parse((await presence(b, 'ann')).lastSeen!);
      assert.ok(Math.abs(lastSeen - Date.now()) < 5000, 'lastSeen is on the cluster clock, not 30 s off');
    });
  });
}
