/** @jsxRuntime automatic @jsxImportSource react */
/**
 * usePresence with its status, limit and selectors (a render counter shows what re-renders),
 * useOthers, useSelf, usePresenceListener, and the typed hooks of createPresenceHooks, rendered
 * with React Testing Library (jsdom) against a real server over loopback.
 */
import './support/jsdom.js';
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { useState } from 'react';
import { cleanup, fireEvent, render, screen, waitFor } from '@testing-library/react';
import WebSocket from 'ws';
import { PresenceClient, type PresenceClientOptions } from '@presence/client';
import {
  PresenceProvider,
  createPresenceHooks,
  shallow,
  useOthers,
  usePresence,
  usePresenceListener,
  useSelf,
  type ChannelPresence,
  type PresenceEvent,
} from '../src/index.js';
import { Observer } from '../../client/test/support/observer.js';
import { startPresenceServer, type TestServer } from '../../client/test/support/server.js';

let server: TestServer;
const observers: Observer[] = [];
before(async () => {
  server = await startPresenceServer({ offlineDelayMs: 60_000 });
});
afterEach(async () => {
  cleanup();
  await new Promise((resolve) => setTimeout(resolve, 10));
});
after(async () => {
  for (const observer of observers) await observer.close();
  await server.shutdown();
});

const WAIT = { timeout: 8000 };

function options(userId: string): PresenceClientOptions {
  return { url: server.wsUrl, userId, WebSocket, activity: false, reconnectOn: false, reconnect: { initialDelayMs: 20, maxDelayMs: 200 } };
}

async function observe(userId: string, channel?: string): Promise<Observer> {
  const observer = await Observer.connect(server.wsUrl, userId);
  observers.push(observer);
  if (channel) await observer.request({ type: 'join', channel });
  return observer;
}

const text = (prefix: string) => screen.getByText(new RegExp(`^${prefix}:`)).textContent;

/** Everyone in the channel as `id=status`, to know when the client has seen a change. */
function Everyone({ channel }: { channel: string }) {
  const { members } = usePresence(channel);
  return <p>all:{members.map((m) => `${m.userId}=${m.status}`).join(',')}</p>;
}

describe('usePresence', () => {
  test('status goes joining → ready, with the members in a stable order, capped by limit', async () => {
    const seen: ChannelPresence['status'][] = [];
    function Room() {
      const presence = usePresence('room:order', { meta: { mode: 'viewing' } });
      const firstTwo = usePresence('room:order', { limit: 2 });
      seen.push(presence.status);
      return (
        <>
          <p>status:{presence.status}</p>
          <p>order:{presence.members.map((m) => m.userId).join(',')}</p>
          <p>limited:{firstTwo.members.map((m) => m.userId).join(',')}</p>
        </>
      );
    }
    // Joined one after the other: their joinedAt orders them, not their names.
    await observe('or-carol', 'room:order');
    await new Promise((resolve) => setTimeout(resolve, 5));
    await observe('or-bob', 'room:order');
    render(
      <PresenceProvider options={options('or-ada')}>
        <Room />
      </PresenceProvider>,
    );
    await waitFor(() => assert.equal(text('status'), 'status:ready', 'ready once the member list is in'), WAIT);
    assert.equal(seen[0], 'joining', 'joining before the member list');
    assert.equal(text('order'), 'order:or-carol,or-bob,or-ada');
    assert.equal(text('limited'), 'limited:or-carol,or-bob');
  });

  test('a refused join is status error, with the server code', async () => {
    const errors: unknown[] = [];
    function Bad() {
      const { status, error, members } = usePresence('not a channel!');
      return (
        <p>
          bad:{status}/{error?.code ?? '-'}/{members.length}
        </p>
      );
    }
    render(
      <PresenceProvider options={options('err-ada')} onError={(error) => errors.push(error)}>
        <Bad />
      </PresenceProvider>,
    );
    await waitFor(() => assert.equal(text('bad'), 'bad:error/INVALID_CHANNEL/0', 'the join failed with its code'), WAIT);
    assert.equal(errors.length, 1, 'onError hears of it too');
  });

  test('with select, re-renders only when the selected value changes (a render counter)', async () => {
    let renders = 0;
    function BobStatus() {
      renders += 1;
      const status = usePresence('room:rc', { select: ({ members }) => members.find((m) => m.userId === 'rc-bob')?.status ?? 'absent' });
      return <p>bob:{status}</p>;
    }
    const bob = await observe('rc-bob', 'room:rc');
    const carol = await observe('rc-carol', 'room:rc');
    render(
      <PresenceProvider options={options('rc-ada')}>
        <BobStatus />
        <Everyone channel="room:rc" />
      </PresenceProvider>,
    );
    await waitFor(() => assert.equal(text('all'), 'all:rc-bob=online,rc-carol=online,rc-ada=online', 'everyone is in'), WAIT);
    assert.equal(text('bob'), 'bob:online');
    const settled = renders;

    // Others change, join and leave: Bob's status stays, so BobStatus does not render.
    await carol.request({ type: 'status', status: 'busy' });
    await waitFor(() => assert.match(text('all') ?? '', /rc-carol=busy/, 'carol is busy'), WAIT);
    await carol.request({ type: 'meta', meta: { name: 'Carol' } });
    await observe('rc-dave', 'room:rc');
    await waitFor(() => assert.match(text('all') ?? '', /rc-dave=online/, 'dave joined'), WAIT);
    await carol.request({ type: 'leave', channel: 'room:rc' });
    await waitFor(() => assert.doesNotMatch(text('all') ?? '', /rc-carol/, 'carol left'), WAIT);
    assert.equal(renders, settled, 'no render for changes of others');

    // Bob's status changes: one render.
    await bob.request({ type: 'status', status: 'away' });
    await waitFor(() => assert.equal(text('bob'), 'bob:away', 'bob is away'), WAIT);
    assert.equal(renders, settled + 1, 'exactly one render for the change it selects');
    // Bob's meta is not selected: no render.
    await bob.request({ type: 'meta', meta: { name: 'Bob' } });
    await waitFor(() => assert.ok(screen.getByText(/^all:/), 'rendered'), WAIT);
    await bob.barrier();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(renders, settled + 1);
  });

  test('isEqual decides what counts as a change (shallow for derived arrays)', async () => {
    let renders = 0;
    function Ids() {
      renders += 1;
      const ids = usePresence('room:ids', { select: ({ members }) => members.map((m) => m.userId), isEqual: shallow });
      return <p>ids:{ids.join(',')}</p>;
    }
    const bob = await observe('ids-bob', 'room:ids');
    render(
      <PresenceProvider options={options('ids-ada')}>
        <Ids />
        <Everyone channel="room:ids" />
      </PresenceProvider>,
    );
    await waitFor(() => assert.equal(text('all'), 'all:ids-bob=online,ids-ada=online', 'both are in'), WAIT);
    const settled = renders;
    await bob.request({ type: 'status', status: 'busy' });
    await waitFor(() => assert.equal(text('all'), 'all:ids-bob=busy,ids-ada=online', 'bob is busy'), WAIT);
    assert.equal(renders, settled, 'a new array with the same ids is no change');
    await observe('ids-carol', 'room:ids');
    await waitFor(() => assert.equal(text('ids'), 'ids:ids-bob,ids-ada,ids-carol', 'carol is in'), WAIT);
    assert.equal(renders, settled + 1);
  });
});

describe('useOthers and useSelf', () => {
  test('others leave this user out; self is this user as a member, with its channel meta', async () => {
    let otherRenders = 0;
    function Others() {
      otherRenders += 1;
      const others = useOthers('room:os', { meta: { mode: 'viewing' } });
      return <p>others:{others.map((m) => `${m.userId}=${m.status}`).join(',')}</p>;
    }
    function Self() {
      const self = useSelf('room:os');
      const mode = useSelf('room:os', { select: (me) => me?.channelMeta.mode ?? 'none' });
      return (
        <p>
          self:{self ? `${self.userId}=${self.status}` : 'none'}/{String(mode)}
        </p>
      );
    }
    const bob = await observe('os-bob', 'room:os');
    const client = new PresenceClient(options('os-ada'));
    try {
      render(
        <PresenceProvider client={client}>
          <Others />
          <Self />
        </PresenceProvider>,
      );
      await waitFor(() => assert.equal(text('others'), 'others:os-bob=online', 'bob only'), WAIT);
      await waitFor(() => assert.equal(text('self'), 'self:os-ada=online/viewing', 'ada with her channel meta'), WAIT);
      const settled = otherRenders;
      // Only this user changes: the others did not, so Others does not render.
      await client.setStatus('busy');
      await waitFor(() => assert.equal(text('self'), 'self:os-ada=busy/viewing', 'ada is busy'), WAIT);
      assert.equal(otherRenders, settled, 'a change of this user alone does not render the others');
      await bob.request({ type: 'status', status: 'away' });
      await waitFor(() => assert.equal(text('others'), 'others:os-bob=away', 'bob is away'), WAIT);
      // Invisible: not a member for anyone, this user included.
      await client.setStatus('invisible');
      await waitFor(() => assert.equal(text('self'), 'self:none/none', 'invisible'), WAIT);
    } finally {
      cleanup();
      client.close();
    }
  });
});

describe('usePresenceListener', () => {
  test('reports joins, updates and leaves (not the first member list) to the latest handler', async () => {
    const early = await observe('li-bob', 'room:li');
    const events: string[] = [];
    const describeEvent = (tag: string) => (event: PresenceEvent) => {
      if (event.type === 'join') events.push(`${tag} join ${event.member.userId}`);
      else if (event.type === 'leave') events.push(`${tag} leave ${event.member.userId} ${event.lastSeen ? 'seen' : 'never'}`);
      else events.push(`${tag} update ${event.member.userId} ${event.previous.status}→${event.member.status}`);
    };
    let renders = 0;
    function Listener() {
      renders += 1;
      const [tag, setTag] = useState('a');
      usePresenceListener('room:li', describeEvent(tag));
      return <button onClick={() => setTag('b')}>tag:{tag}</button>;
    }
    render(
      <PresenceProvider options={options('li-ada')}>
        <Listener />
        <Everyone channel="room:li" />
      </PresenceProvider>,
    );
    await waitFor(() => assert.equal(text('all'), 'all:li-bob=online,li-ada=online', 'in the channel'), WAIT);
    const carol = await observe('li-carol', 'room:li');
    await waitFor(() => assert.deepEqual(events, ['a join li-carol'], 'carol joined'), WAIT);
    fireEvent.click(screen.getByText('tag:a'));
    await early.request({ type: 'status', status: 'busy' });
    await carol.request({ type: 'leave', channel: 'room:li' });
    await waitFor(() => assert.deepEqual(events, ['a join li-carol', 'b update li-bob online→busy', 'b leave li-carol seen'], 'the new handler'), WAIT);
    assert.equal(renders, 2, 'events cause no render (the one extra is the click)');
  });
});

// Types of an application: the hooks below use them without a cast.
type UserMeta = { name: string; avatar?: string };
type ChannelMeta = { mode: 'viewing' | 'editing' };
type State = 'in-call';
const typed = createPresenceHooks<UserMeta, ChannelMeta, State>();

describe('createPresenceHooks', () => {
  test('hooks typed with the client’s meta and states, sharing the untyped hooks’ provider', async () => {
    function Names() {
      const { members } = typed.usePresence('room:typed', { meta: { mode: 'editing' } });
      const { self, setMeta } = typed.useMyPresence();
      const editing = typed.useOthers('room:typed', { select: (others) => others.filter((m) => m.channelMeta.mode === 'editing').map((m) => m.meta.name), isEqual: shallow });
      return (
        <>
          <p>names:{members.map((m) => `${m.meta.name.toUpperCase()}/${m.channelMeta.mode}`).join(',')}</p>
          <p>editing:{editing.join(',')}</p>
          <button onClick={() => void setMeta({ name: 'Ada', avatar: null })}>name:{self?.meta.name ?? ''}</button>
        </>
      );
    }
    const bob = await observe('ty-bob');
    await bob.request({ type: 'meta', meta: { name: 'Bob' } });
    await bob.request({ type: 'join', channel: 'room:typed', meta: { mode: 'editing' } });
    const client = new PresenceClient<UserMeta, ChannelMeta, State>({ ...options('ty-ada'), params: { name: 'ada' } });
    try {
      render(
        <typed.PresenceProvider client={client}>
          <Names />
        </typed.PresenceProvider>,
      );
      await waitFor(() => assert.equal(text('names'), 'names:BOB/editing,ADA/editing', 'typed meta'), WAIT);
      assert.equal(text('editing'), 'editing:Bob');
      fireEvent.click(screen.getByText(/^name:/));
      await waitFor(() => assert.equal(text('name'), 'name:Ada', 'setMeta with the typed patch'), WAIT);
    } finally {
      cleanup();
      client.close();
    }
  });
});

/** Never called: what the compiler accepts and refuses for the typed hooks. */
export function typeChecks(): void {
  const presence = typed.usePresence('room:t');
  const name: string = presence.members[0].meta.name;
  const mode: 'viewing' | 'editing' = presence.members[0].channelMeta.mode;
  const state: State | undefined = presence.members[0].state;
  const count: number = typed.usePresence('room:t', { select: (p) => p.members.length });
  const self = typed.useSelf('room:t');
  typed.usePresenceListener('room:t', (event) => {
    if (event.type === 'update') void (event.previous.meta.name === event.member.meta.name);
  });
  const { setStatus } = typed.useMyPresence();
  void setStatus({ state: 'in-call' });
  // @ts-expect-error not a configured state
  void setStatus({ state: 'lunch' });
  // @ts-expect-error not a mode of ChannelMeta
  typed.usePresence('room:t', { meta: { mode: 'sleeping' } });
  // @ts-expect-error a selector's result type is the hook's result type
  const wrong: string = typed.usePresence('room:t', { select: (p) => p.members.length });
  // The untyped hooks keep the protocol's JSON meta.
  const plain = usePresence('room:p').members[0].meta.name;
  // @ts-expect-error JSON, not a string
  const notString: string = plain;
  void [name, mode, state, count, self, wrong, notString];
}
