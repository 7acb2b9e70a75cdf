/**
 * PresenceClient<UserMeta, ChannelMeta, State> against a real server: members, watched users, own
 * presence and events carry the application's types (the file compiles without casts, and the
 * `@ts-expect-error` lines prove the types are narrow), and channel.joinError.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { PresenceClient, PresenceError, type Member } from '../src/index.js';
import { Observer } from './support/observer.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { tracker } from './support/tracked.js';
import { nextEvent, until } from './support/wait.js';

type UserMeta = { name: string; avatar?: string };
type ChannelMeta = { mode: 'viewing' | 'editing'; cursor?: { line: number } };
type State = 'in-call';

let server: TestServer;
const { track, closeAll } = tracker();
before(async () => {
  server = await startPresenceServer();
});
after(async () => {
  await closeAll();
  await server.shutdown();
});

function typedClient(userId: string): PresenceClient<UserMeta, ChannelMeta, State> {
  return new PresenceClient<UserMeta, ChannelMeta, State>({ url: server.wsUrl, userId, WebSocket, activity: false, params: { name: userId.toUpperCase() } });
}

describe('typed client', () => {
  test('members, events, watched users and self carry the declared meta and states', async () => {
    const bob = track(await Observer.connect(server.wsUrl, 'tc-bob'));
    await bob.request({ type: 'meta', meta: { name: 'Bob' } });
    await bob.request({ type: 'join', channel: 'doc:typed', meta: { mode: 'editing' } });
    const ada = track(typedClient('tc-ada'));
    const doc = await ada.join('doc:typed', { mode: 'viewing', cursor: { line: 1 } });
    const describeMember = (m: Member<UserMeta, ChannelMeta, State>) => `${m.meta.name.toLowerCase()}:${m.channelMeta.mode}:${m.state ?? '-'}`;
    assert.deepEqual([...doc.members.values()].map(describeMember).sort(), ['bob:editing:-', 'tc-ada:viewing:-']);

    const updated = nextEvent(doc, 'update');
    await bob.request({ type: 'status', state: 'in-call' });
    const [member, previous] = await updated;
    assert.equal(member.state satisfies State | undefined, 'in-call');
    assert.equal(previous.meta.name, 'Bob');

    const merged = await doc.setMeta({ cursor: null });
    assert.deepEqual(merged, { mode: 'viewing' } satisfies ChannelMeta);

    const [watched] = await ada.watch(['tc-bob']);
    assert.equal(watched.meta.name.length, 3);
    const self = await ada.setMeta({ avatar: 'avatars/wave.svg' });
    assert.equal(self.meta.avatar?.endsWith('.svg'), true);
    assert.equal(ada.self?.meta.name, 'TC-ADA');
    await ada.setStatus({ state: 'in-call' });
    assert.equal(ada.self?.state, 'in-call');
  });

  test('joinError keeps why a join failed until the next join', async () => {
    const ada = track(typedClient('je-ada'));
    const bad = ada.channel('not a channel!');
    // Read through a function: assert.equal narrows a property it compared.
    const joinError = () => bad.joinError;
    assert.equal(joinError(), undefined);
    await assert.rejects(bad.join(), (error: unknown) => error instanceof PresenceError && error.code === 'INVALID_CHANNEL');
    assert.equal(bad.state, 'idle');
    assert.equal(joinError()?.code, 'INVALID_CHANNEL');
    const again = bad.join();
    assert.equal(joinError(), undefined, 'cleared when joining again');
    assert.equal(bad.state, 'joining');
    await assert.rejects(again);
    assert.equal(joinError()?.code, 'INVALID_CHANNEL');
    const good = await ada.join('doc:fine');
    assert.equal(good.joinError, undefined);
    await until(() => good.members.has('je-ada'), 'joined');
  });
});

/** Never called: what the compiler accepts and refuses. */
export function typeChecks(client: PresenceClient<UserMeta, ChannelMeta, State>, plain: PresenceClient): void {
  // @ts-expect-error not a configured state
  void client.setStatus({ state: 'lunch' });
  // @ts-expect-error not a mode
  void client.join('doc:x', { mode: 'sleeping' });
  // @ts-expect-error the name is a string
  void client.setMeta({ name: 42 });
  client.on('user', (user) => void user.meta.name.toUpperCase());
  client.on('self', (self) => void self.meta.name.toUpperCase());
  client.channel('doc:x').on('leave', (member) => void member.channelMeta.mode);
  // Without type arguments: any JSON, as before.
  const name = plain.self?.meta.name;
  // @ts-expect-error JSON, not a string
  void (name satisfies string | undefined);
  void plain.setStatus({ state: 'anything' });
  // A typed client fits where an untyped one is expected.
  const untyped: PresenceClient = client;
  void untyped;
}
