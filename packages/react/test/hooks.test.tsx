/** @jsxRuntime automatic @jsxImportSource react */
/**
 * The React hooks rendered with React Testing Library (jsdom) against a real server over
 * loopback, StrictMode included. (The pragma above: tsx finds no tsconfig with `jsx` at the
 * repository root, so the file asks for the automatic JSX runtime itself.)
 */
import './support/jsdom.js';
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { StrictMode, useState } from 'react';
import { act, cleanup, fireEvent, render, screen, waitFor } from '@testing-library/react';
import WebSocket from 'ws';
import { PresenceClient, type PresenceClientOptions } from '@presence/client';
import { PresenceProvider, useConnectionStatus, useMyPresence, usePresence, useTyping, useUsers } from '../src/index.js';
import { Observer, presenceEventsAbout } from '../../client/test/support/observer.js';
import { startPresenceServer, type TestServer } from '../../client/test/support/server.js';
import { newTap, tappedWebSocket } from '../../client/test/support/sockets.js';
import { until } from '../../client/test/support/wait.js';

let server: TestServer;
const observers: Observer[] = [];
before(async () => {
  // A long offline delay: a leave that others see soon after an unmount can only be an explicit one.
  server = await startPresenceServer({ offlineDelayMs: 60_000 });
});
afterEach(async () => {
  cleanup();
  // Deferred leaves and closes run one tick after unmount.
  await new Promise((resolve) => setTimeout(resolve, 10));
});
after(async () => {
  for (const observer of observers) await observer.close();
  await server.shutdown();
});

const WAIT = { timeout: 8000 };
// Every assertion polled by waitFor carries a message: without one, node:assert builds it by
// re-parsing the transpiled source, which is slow enough to stall the event loop on each retry.

function options(userId: string, extra: Partial<PresenceClientOptions> = {}): PresenceClientOptions {
  return { url: server.wsUrl, userId, WebSocket, activity: false, reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, ...extra };
}

async function observe(userId: string, channel?: string): Promise<Observer> {
  const observer = await Observer.connect(server.wsUrl, userId);
  observers.push(observer);
  if (channel) await observer.request({ type: 'join', channel });
  return observer;
}

function Members({ channel }: { channel: string }) {
  const { members } = usePresence(channel, { meta: { mode: 'viewing' } });
  return (
    <ul aria-label="members">
      {members.map((m) => (
        <li key={m.userId}>
          {m.userId}:{m.status}
        </li>
      ))}
    </ul>
  );
}

function Status() {
  return <p>status:{useConnectionStatus()}</p>;
}

const memberNames = () => screen.queryAllByRole('listitem').map((li) => li.textContent);

describe('usePresence and useConnectionStatus', () => {
  test('render the members and follow joins, updates and leaves', async () => {
    const bob = await observe('rt-bob', 'room:rt');
    render(
      <PresenceProvider options={options('rt-ada')}>
        <Status />
        <Members channel="room:rt" />
      </PresenceProvider>,
    );
    await waitFor(() => assert.equal(screen.getByText(/^status:/).textContent, 'status:connected'), WAIT);
    await waitFor(() => assert.deepEqual(memberNames().sort(), ['rt-ada:online', 'rt-bob:online']), WAIT);
    await bob.request({ type: 'status', status: 'busy' });
    await waitFor(() => assert.ok(memberNames().includes('rt-bob:busy'), 'rt-bob is shown busy'), WAIT);
    await bob.request({ type: 'leave', channel: 'room:rt' });
    await waitFor(() => assert.deepEqual(memberNames(), ['rt-ada:online']), WAIT);
  });

  test('show reconnecting while the connection is down', async () => {
    render(
      <PresenceProvider options={options('rt-carol')}>
        <Status />
      </PresenceProvider>,
    );
    await waitFor(() => screen.getByText('status:connected'), WAIT);
    const seen: string[] = [];
    const observer = new MutationObserver(() => seen.push(screen.getByText(/^status:/).textContent ?? ''));
    observer.observe(document.body, { subtree: true, characterData: true, childList: true });
    server.cutConnections('rt-carol');
    await waitFor(() => assert.ok(seen.includes('status:reconnecting') && screen.getByText(/^status:/).textContent === 'status:connected', 'reconnecting, then connected'), WAIT);
    observer.disconnect();
  });
});

describe('StrictMode', () => {
  test('a double mount makes one session and one join, and others see no leave/join flicker', async () => {
    const bob = await observe('sm-bob', 'room:strict');
    const { unmount } = render(
      <StrictMode>
        <PresenceProvider options={options('sm-ada')}>
          <Members channel="room:strict" />
          <Members channel="room:strict" />
        </PresenceProvider>
      </StrictMode>,
    );
    await waitFor(() => assert.equal(memberNames().filter((n) => n === 'sm-ada:online').length, 2), WAIT);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await bob.barrier();
    assert.equal(server.upgradesOf('sm-ada'), 1, 'one WebSocket, one session');
    assert.deepEqual(
      presenceEventsAbout(bob.messages, 'sm-ada').map((m) => m.type),
      ['presence.join'],
      'exactly one join, no leave',
    );
    bob.drain();

    unmount();
    // The last holder is gone: the channel is left at once (a real leave), then the client closes.
    await bob.waitFor((m) => m.type === 'presence.leave' && m.userId === 'sm-ada');
    await until(() => server.connectionsOf('sm-ada') === 0, 'the provider closed its client');
  });

  test('a component that remounts (key change back and forth) keeps the membership', async () => {
    const bob = await observe('km-bob', 'room:keys');
    const client = new PresenceClient(options('km-ada'));
    function Toggle() {
      const [flip, setFlip] = useState(false);
      return (
        <>
          <button onClick={() => setFlip((v) => !v)}>flip</button>
          <Members key={flip ? 'a' : 'b'} channel="room:keys" />
        </>
      );
    }
    try {
      render(
        <StrictMode>
          <PresenceProvider client={client}>
            <Toggle />
          </PresenceProvider>
        </StrictMode>,
      );
      await waitFor(() => assert.ok(memberNames().includes('km-ada:online'), 'km-ada is shown'), WAIT);
      await bob.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'km-ada');
      bob.drain();
      for (let i = 0; i < 3; i += 1) fireEvent.click(screen.getByText('flip'));
      await new Promise((resolve) => setTimeout(resolve, 50));
      await bob.barrier();
      assert.deepEqual(presenceEventsAbout(bob.drain(), 'km-ada'), []);
      assert.equal(client.channel('room:keys').state, 'joined');
    } finally {
      cleanup();
      client.close();
    }
  });
});

describe('useTyping', () => {
  function Composer() {
    const { typing, onInput, stop } = useTyping('room:type');
    const [text, setText] = useState('');
    return (
      <form
        onSubmit={(event) => {
          event.preventDefault();
          stop();
          setText('');
        }}
      >
        <input
          aria-label="message"
          value={text}
          onChange={(event) => {
            setText(event.target.value);
            onInput();
          }}
          onBlur={stop}
        />
        <p>typing:{typing.join(',')}</p>
      </form>
    );
  }

  test('reports own typing from input events and shows who else types', async () => {
    const bob = await observe('ty-bob', 'room:type');
    render(
      <PresenceProvider options={options('ty-ada')}>
        <Composer />
        <Members channel="room:type" />
      </PresenceProvider>,
    );
    await waitFor(() => assert.ok(memberNames().includes('ty-bob:online'), 'ty-bob is shown'), WAIT);
    fireEvent.change(screen.getByLabelText('message'), { target: { value: 'h' } });
    fireEvent.change(screen.getByLabelText('message'), { target: { value: 'hi' } });
    await bob.waitFor((m) => m.type === 'typing' && m.userId === 'ty-ada' && m.typing);
    fireEvent.submit(screen.getByLabelText('message').closest('form')!);
    await bob.waitFor((m) => m.type === 'typing' && m.userId === 'ty-ada' && !m.typing);

    await bob.request({ type: 'typing', channel: 'room:type', typing: true });
    await waitFor(() => screen.getByText('typing:ty-bob'), WAIT);
    await bob.request({ type: 'typing', channel: 'room:type', typing: false });
    await waitFor(() => screen.getByText('typing:'), WAIT);
  });
});

describe('useMyPresence and useUsers', () => {
  function Me() {
    const { self, setStatus } = useMyPresence();
    return (
      <div>
        <p>me:{self ? `${self.status}/${self.message ?? ''}` : 'none'}</p>
        <button onClick={() => void setStatus({ status: 'busy', message: 'Focus' })}>busy</button>
      </div>
    );
  }

  function Contacts({ ids }: { ids: string[] }) {
    const users = useUsers(ids);
    return <p>contacts:{users.map((u) => `${u.userId}=${u.status}`).join(',')}</p>;
  }

  test('own status is shown and set; contacts are watched once and followed', async () => {
    const watcherOfAda = await observe('me-obs');
    await watcherOfAda.request({ type: 'watch', users: ['me-ada'] });
    const tap = newTap();
    function App() {
      const [, rerender] = useState(0);
      return (
        <>
          <button onClick={() => rerender((n) => n + 1)}>rerender</button>
          <Me />
          {/* A new array on every render, with the same ids. */}
          <Contacts ids={['me-bob', 'me-carol']} />
        </>
      );
    }
    render(
      <StrictMode>
        <PresenceProvider options={options('me-ada', { WebSocket: tappedWebSocket(tap) })}>
          <App />
        </PresenceProvider>
      </StrictMode>,
    );
    await waitFor(() => screen.getByText('me:online/'), WAIT);
    await waitFor(() => screen.getByText('contacts:me-bob=offline,me-carol=offline'), WAIT);
    fireEvent.click(screen.getByText('busy'));
    await waitFor(() => screen.getByText('me:busy/Focus'), WAIT);
    await watcherOfAda.waitFor((m) => m.type === 'user.update' && m.user.userId === 'me-ada' && m.user.status === 'busy');

    await observe('me-bob');
    await waitFor(() => screen.getByText('contacts:me-bob=online,me-carol=offline'), WAIT);
    fireEvent.click(screen.getByText('rerender'));
    fireEvent.click(screen.getByText('rerender'));
    await act(() => new Promise((resolve) => setTimeout(resolve, 20)));
    assert.equal(tap.sent.filter((m) => m.type === 'watch').length, 1, 'one watch despite StrictMode and re-renders');
    assert.equal(tap.sent.filter((m) => m.type === 'unwatch').length, 0);
  });

  test('hooks outside a provider fail with a clear message', () => {
    const original = console.error;
    console.error = () => {};
    try {
      assert.throws(() => render(<Status />), /useConnectionStatus\(\) must be used inside <PresenceProvider>/);
    } finally {
      console.error = original;
    }
  });
});
