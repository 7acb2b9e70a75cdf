/**
 * Tokens against a real server with HS256 auth: `getToken()` runs before every connect, and a
 * 4001 close (expired or refused token) leads to a new token, not to a dead client.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { PresenceClient, PresenceError, type PresenceClientOptions } from '../src/index.js';
import { Observer, presenceEventsAbout } from './support/observer.js';
import { startPresenceServer, type TestServer } from './support/server.js';
import { nextEvent, record } from './support/wait.js';
import { tracker } from './support/tracked.js';

const SECRET = 'client-auth-test-secret-of-at-least-32-bytes';
const nowSeconds = () => Math.floor(Date.now() / 1000);

function token(sub: string, lifetimeSeconds = 600, secret = SECRET): Promise<string> {
  return new SignJWT({ exp: nowSeconds() + lifetimeSeconds })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .sign(new TextEncoder().encode(secret));
}

let server: TestServer;
const { track, closeAll } = tracker();

function tokenClient(getToken: () => Promise<string>, options: Partial<PresenceClientOptions> = {}): PresenceClient {
  return track(
    new PresenceClient({ url: server.wsUrl, getToken, WebSocket, activity: false, reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, ...options }),
  );
}

before(async () => {
  server = await startPresenceServer({ auth: { jwtSecret: SECRET } });
});
after(async () => {
  await closeAll();
  await server.shutdown();
});

describe('getToken', () => {
  test('an expiring token is replaced on the 4001 close; the session resumes unseen by others', async () => {
    const observer = track(await Observer.connect(server.wsUrl, 'tok-obs', await token('tok-obs')));
    await observer.request({ type: 'join', channel: 'room:tokens' });
    await observer.request({ type: 'watch', users: ['tok-ada'] });
    const issued: number[] = [];
    // The first token lives a second or two; every later one ten minutes.
    const ada = tokenClient(async () => {
      issued.push(Date.now());
      return token('tok-ada', issued.length === 1 ? 2 : 600);
    });
    const errors = record(ada, ['error']);
    const [firstWelcome] = await nextEvent(ada, 'connected');
    await ada.join('room:tokens');
    await observer.waitFor((m) => m.type === 'presence.join' && m.member.userId === 'tok-ada');
    await observer.barrier();
    observer.drain();

    const [secondWelcome] = await nextEvent(ada, 'connected');
    assert.equal(issued.length, 2, 'a fresh token was fetched for the reconnect');
    assert.equal(secondWelcome.resumed, true);
    assert.equal(secondWelcome.sessionId, firstWelcome.sessionId);
    await ada.channel('room:tokens').join();
    await observer.barrier();
    assert.deepEqual(presenceEventsAbout(observer.drain(), 'tok-ada'), []);
    assert.deepEqual(errors.log, [], 'an expired token is routine, not an application error');
  });

  test('a refused token is replaced once; a refused fresh token ends the client with UNAUTHORIZED', async () => {
    let calls = 0;
    const recovers = tokenClient(async () => (++calls === 1 ? token('tok-bob', 600, 'a-wrong-secret-of-at-least-32-bytes!!') : token('tok-bob')));
    await nextEvent(recovers, 'connected');
    assert.equal(calls, 2);

    let badCalls = 0;
    const hopeless = tokenClient(async () => {
      badCalls += 1;
      return token('tok-carol', 600, 'a-wrong-secret-of-at-least-32-bytes!!');
    });
    const [reason] = await nextEvent(hopeless, 'ended');
    assert.ok(reason instanceof PresenceError);
    assert.equal(reason.code, 'UNAUTHORIZED');
    assert.equal(reason.closeCode, 4001);
    assert.equal(badCalls, 2);
    assert.equal(hopeless.status, 'disconnected');
  });

  test('a failing getToken is reported and retried with backoff', async () => {
    let calls = 0;
    const ada = tokenClient(async () => {
      calls += 1;
      if (calls === 1) throw new Error('token service down');
      return token('tok-dan');
    });
    const [error] = await nextEvent(ada, 'error');
    assert.equal(error.code, 'TOKEN_UNAVAILABLE');
    assert.match(error.message, /token service down/);
    await nextEvent(ada, 'connected');
    assert.equal(calls, 2);
  });
});
