/**
 * Webhooks, unit level: the retry schedule as pure functions under an injected clock and random
 * source, the signature (with a fixed test vector), the mapping of presence events to webhook
 * events on a real model (invisible ≡ offline, occupied/vacated against the state), the delivery
 * queue's order, backlog and dead letters on a manual clock, and the outbox file.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { WEBHOOK_EVENT_TYPES, type WebhookEvent, type WebhookEventType } from '@presence/protocol';
import * as S from '@presence/protocol/schema';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { resolveConfig, type WebhookConfig } from '../src/config/config.js';
import { silentLogger, type LogFields, type Logger } from '../src/log.js';
import { ManualClock } from '../src/presence/clock.js';
import type { Attachment } from '../src/presence/engine.js';
import type { SessionSink } from '../src/presence/state.js';
import { PresenceNode } from '../src/presence-node.js';
import { DeliveryQueue, type QueuedEvent } from '../src/webhooks/delivery-queue.js';
import { WebhookEventMapper, derivedId, orderingKey } from '../src/webhooks/event-mapper.js';
import { failureLabel } from '../src/webhooks/http-sender.js';
import { OUTBOX_FILE, WebhookOutbox } from '../src/webhooks/outbox-file.js';
import { DEFAULT_RETRY_POLICY, backoffDelay, classifyResponse, nextRetry, parseRetryAfter, type AttemptOutcome, type RetryPolicy } from '../src/webhooks/retry-schedule.js';
import { parseSignatureHeader, signWebhook, verifyWebhookSignature, webhookHmac } from '../src/webhooks/signature.js';
import { targetId } from '../src/webhooks/target-id.js';
import { Webhooks } from '../src/webhooks/webhooks.js';

const HOUR = 3_600_000;

/** A small deterministic PRNG (mulberry32): schedules and scenarios repeat exactly. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// The retry schedule
// ---------------------------------------------------------------------------------------------

describe('webhook retry schedule (pure, injected clock)', () => {
  const now = Date.UTC(2026, 0, 1);

  it('classifies answers: 2xx delivered; 5xx, 408 and 429 retried; other 4xx and redirects refused for good', () => {
    for (const status of [200, 201, 202, 204, 299]) assert.equal(classifyResponse(status, null, now).kind, 'delivered', String(status));
    for (const status of [500, 502, 503, 504, 599, 408, 429]) assert.equal(classifyResponse(status, null, now).kind, 'retry', String(status));
    for (const status of [400, 401, 403, 404, 405, 409, 410, 413, 422, 301, 302, 307, 100]) {
      assert.deepEqual(classifyResponse(status, null, now), { kind: 'reject', reason: `http ${status}`, status }, String(status));
    }
    assert.deepEqual(classifyResponse(429, '7', now), { kind: 'retry', reason: 'http 429', status: 429, retryAfterMs: 7000 });
    assert.deepEqual(classifyResponse(503, '2', now), { kind: 'retry', reason: 'http 503', status: 503, retryAfterMs: 2000 });
    // A refusal's Retry-After does not make it retryable.
    assert.equal(classifyResponse(400, '1', now).kind, 'reject');
  });

  it('reads Retry-After as seconds or an HTTP date, ignores anything else', () => {
    assert.equal(parseRetryAfter('120', now), 120_000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter(new Date(now + 90_000).toUTCString(), now), 90_000);
    assert.equal(parseRetryAfter(new Date(now - 90_000).toUTCString(), now), 0, 'a date in the past: no wait');
    for (const junk of [undefined, null, '', 'soon', '-5', '1.5', '1e3']) assert.equal(parseRetryAfter(junk, now), undefined, String(junk));
  });

  it('backs off exponentially with jitter in the upper half, capped', () => {
    const policy: RetryPolicy = { baseDelayMs: 1000, maxDelayMs: 300_000, giveUpAfterMs: HOUR };
    assert.deepEqual([1, 2, 3, 4].map((n) => backoffDelay(policy, n, () => 0)), [500, 1000, 2000, 4000]);
    assert.deepEqual([1, 2, 3, 4].map((n) => backoffDelay(policy, n, () => 1)), [1000, 2000, 4000, 8000]);
    assert.equal(backoffDelay(policy, 30, () => 1), 300_000, 'capped');
    assert.equal(backoffDelay(policy, 1000, () => 0.5), 225_000, 'no overflow for huge attempt numbers');
    const random = seeded(7);
    for (let n = 1; n <= 20; n += 1) {
      const ceiling = Math.min(300_000, 1000 * 2 ** (n - 1));
      const delay = backoffDelay(policy, n, random);
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `retry ${n}: ${delay} within [${ceiling / 2}, ${ceiling}]`);
    }
  });

  it('a receiver that always fails: the event is retried for at least the give-up age, then given up on soon after', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const random = seeded(seed);
      const queuedAt = now;
      let clock = now;
      const attempts: number[] = [];
      for (;;) {
        attempts.push(clock);
        const decision = nextRetry(DEFAULT_RETRY_POLICY, { attempts: attempts.length, queuedAt, now: clock }, random);
        if ('giveUp' in decision) break;
        assert.ok(decision.retryAt > clock, 'always later');
        clock = decision.retryAt;
      }
      const last = attempts[attempts.length - 1];
      assert.ok(last - queuedAt >= HOUR, `seed ${seed}: the last attempt ${last - queuedAt} ms after queueing is at or past an hour`);
      assert.ok(last - queuedAt < HOUR + DEFAULT_RETRY_POLICY.maxDelayMs, `seed ${seed}: given up within a backoff of the hour`);
      assert.ok(attempts.length >= 15 && attempts.length <= 30, `seed ${seed}: ${attempts.length} attempts in the hour`);
    }
  });

  it('the give-up age is configuration: 0 gives up after the first failure', () => {
    const policy = { ...DEFAULT_RETRY_POLICY, giveUpAfterMs: 0 };
    assert.deepEqual(nextRetry(policy, { attempts: 1, queuedAt: now, now }, () => 0.5), { giveUp: true });
    const short = { ...DEFAULT_RETRY_POLICY, giveUpAfterMs: 2000 };
    assert.ok('retryAt' in nextRetry(short, { attempts: 1, queuedAt: now, now: now + 1999 }, () => 0.5));
    assert.deepEqual(nextRetry(short, { attempts: 5, queuedAt: now, now: now + 2000 }, () => 0.5), { giveUp: true });
  });

  it('honours Retry-After when longer than the backoff, never past the give-up age; never retries sooner than the backoff', () => {
    const policy = DEFAULT_RETRY_POLICY;
    assert.deepEqual(nextRetry(policy, { attempts: 1, queuedAt: now, now, retryAfterMs: 120_000 }, () => 0), { retryAt: now + 120_000 });
    assert.deepEqual(nextRetry(policy, { attempts: 1, queuedAt: now, now, retryAfterMs: 100 }, () => 1), { retryAt: now + 1000 }, 'backoff wins');
    assert.deepEqual(nextRetry(policy, { attempts: 1, queuedAt: now, now, retryAfterMs: 0 }, () => 0), { retryAt: now + 500 });
    const late = now + HOUR - 60_000;
    assert.deepEqual(
      nextRetry(policy, { attempts: 10, queuedAt: now, now: late, retryAfterMs: 24 * HOUR }, () => 0),
      { retryAt: Math.max(late + backoffDelay(policy, 10, () => 0), now + HOUR) },
      'a day-long Retry-After: the last try comes at the give-up age',
    );
  });

  it('labels failures for metrics with a bounded set', () => {
    const cases: [string, string][] = [
      ['timeout', 'timeout'],
      ['network ECONNREFUSED', 'network'],
      ['network error', 'network'],
      ['http 503', 'http_5xx'],
      ['http 500', 'http_5xx'],
      ['http 429', 'http_429'],
      ['http 408', 'http_408'],
      ['http 404', 'http_4xx'],
      ['http 302', 'http_3xx'],
      ['aborted', 'other'],
      ['error boom', 'other'],
    ];
    for (const [reason, label] of cases) assert.equal(failureLabel(reason), label, reason);
  });
});

// ---------------------------------------------------------------------------------------------
// The signature
// ---------------------------------------------------------------------------------------------

describe('webhook signature', () => {
  const secretA = 'whsec-test-0123456789abcdefghijklmnopqrstuvwxyz';
  const secretB = 'whsec-next-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const body = '{"id":"a1b2c3d4.1/user.online//ada","type":"user.online"}';
  const at = Date.UTC(2026, 0, 1, 12, 0, 0, 750);

  it('is t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>, one v1 per secret in order', () => {
    const header = signWebhook([secretA, secretB], body, at);
    const t = Math.floor(at / 1000);
    const expect = (secret: string) => createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
    assert.equal(header, `t=${t},v1=${expect(secretA)},v1=${expect(secretB)}`);
    assert.match(header, /^t=\d+(,v1=[0-9a-f]{64})+$/);
  });

  it('matches a fixed test vector (also in docs/webhooks.md, computed there with openssl)', () => {
    assert.equal(
      signWebhook(['0123456789abcdef0123456789abcdef'], '{"id":"x","type":"user.online"}', 1_767_225_600_000),
      't=1767225600,v1=0176c91992baa08aa1e4e15fe32f469ad0f5f6c1d68896f5e6fc5a63c6aafbd0',
    );
    assert.equal(webhookHmac('0123456789abcdef0123456789abcdef', 1_767_225_600, Buffer.from('{"id":"x","type":"user.online"}')), '0176c91992baa08aa1e4e15fe32f469ad0f5f6c1d68896f5e6fc5a63c6aafbd0');
  });

  it('verifies with either secret during a rotation; refuses a changed body, another secret, an old or future t', () => {
    const header = signWebhook([secretA, secretB], body, at);
    assert.ok(verifyWebhookSignature([secretA], header, body, { nowMs: at }));
    assert.ok(verifyWebhookSignature([secretB], header, body, { nowMs: at + 60_000 }));
    assert.ok(!verifyWebhookSignature([secretA], header, `${body} `, { nowMs: at }), 'one byte more');
    assert.ok(!verifyWebhookSignature(['whsec-other-0123456789abcdefghijklmnopqrstu'], header, body, { nowMs: at }));
    assert.ok(!verifyWebhookSignature([secretA], header, body, { nowMs: at + 301_000 }), 'replayed after the tolerance');
    assert.ok(!verifyWebhookSignature([secretA], header, body, { nowMs: at - 301_000 }));
    assert.ok(!verifyWebhookSignature([secretA], header.replace(/^t=\d+/, `t=${Math.floor(at / 1000) + 1}`), body, { nowMs: at }), 't is signed');
    assert.equal(parseSignatureHeader('v1=abc'), undefined);
    assert.deepEqual(parseSignatureHeader(`t=5,v0=zz,v1=${'a'.repeat(64)}`), { timestamp: 5, signatures: ['a'.repeat(64)] }, 'unknown schemes are skipped');
  });
});

// ---------------------------------------------------------------------------------------------
// Mapping presence events to webhook events, on a real model
// ---------------------------------------------------------------------------------------------

class Sink implements SessionSink {
  attachment?: Attachment;
  send(): void {}
  close(): void {}
}

interface World {
  node: PresenceNode;
  clock: ManualClock;
  events: WebhookEvent[];
  open(userId: string): Sink;
  send(tab: Sink, command: Record<string, unknown>): Promise<unknown>;
}

function world(wanted: readonly WebhookEventType[] = WEBHOOK_EVENT_TYPES, config: Parameters<typeof resolveConfig>[0] = {}): World {
  const clock = new ManualClock();
  const node = new PresenceNode({ config: resolveConfig({ offlineDelayMs: 5_000, typingTimeoutMs: 3_000, ...config }), clock });
  const mapper = new WebhookEventMapper(wanted, node.engine.reader, () => clock.now());
  const events: WebhookEvent[] = [];
  node.subscribe((event) => events.push(...mapper.map(event)));
  return {
    node,
    clock,
    events,
    open(userId) {
      const tab = new Sink();
      tab.attachment = node.connect({ identity: { userId, meta: {} } }, tab);
      return tab;
    },
    send: async (tab, command) => node.handle(tab.attachment!, command as never),
  };
}

const brief = (event: WebhookEvent): string => {
  const data = event.data as { userId?: string; channel?: string; user?: { status: string }; member?: { status: string }; change?: string };
  return [event.type, data.channel, data.userId, data.user?.status ?? data.member?.status, data.change].filter((x) => x !== undefined).join(' ');
};

describe('webhook events from presence events', () => {
  it('maps each change to its webhook events, every one matching the WebhookEvent schema', async () => {
    const defs = new Map();
    const schema = S.toJsonSchema(S.WebhookEvent, '#/$defs/', defs, true) as Record<string, unknown>;
    const check = new Ajv2020({ strict: false, allErrors: true, validateFormats: false }).compile({ ...schema, $defs: Object.fromEntries(defs) });
    const w = world();
    const ada = w.open('ada');
    await w.send(ada, { type: 'join', channel: 'room' });
    const bob = w.open('bob');
    await w.send(bob, { type: 'join', channel: 'room', meta: { mode: 'viewing' } });
    await w.send(bob, { type: 'status', status: 'busy', message: 'In a call' });
    await w.send(bob, { type: 'meta', meta: { name: 'Bob' } });
    await w.send(ada, { type: 'channel.meta', channel: 'room', meta: { cursor: 3 } });
    await w.send(ada, { type: 'status', visibility: 'contacts' });
    await w.send(ada, { type: 'typing', channel: 'room', typing: true });
    w.clock.advance(3_500);
    await w.send(bob, { type: 'leave', channel: 'room' });
    await w.send(ada, { type: 'leave', channel: 'room' });
    await w.send(bob, { type: 'logout' });

    assert.deepEqual(w.events.map(brief), [
      'user.online ada online',
      'channel.member_joined room ada online',
      'channel.occupied room',
      'user.online bob online',
      'channel.member_joined room bob online',
      'channel.member_updated room bob busy presence',
      'user.status bob busy',
      'channel.member_updated room bob busy presence',
      'user.meta bob busy',
      'channel.member_updated room ada online channel_meta',
      // visibility: nothing (user.privacy is not a webhook event)
      'typing.started room ada',
      'typing.stopped room ada',
      'channel.member_left room bob',
      'channel.member_left room ada',
      'channel.vacated room',
      'user.offline bob offline',
    ]);
    for (const event of w.events) assert.ok(check(event), `${event.type}: ${JSON.stringify(check.errors)}`);
    assert.equal(new Set(w.events.map((e) => e.id)).size, w.events.length, 'ids are unique');
    const occupied = w.events.find((e) => e.type === 'channel.occupied')!;
    const joined = w.events.find((e) => e.type === 'channel.member_joined')!;
    assert.equal(occupied.id, derivedId(joined.id, 'channel.occupied', 'room', 'ada'), 'derived from the same cause');
    assert.equal(occupied.id.split('/')[0], joined.id.split('/')[0]);
    const offline = w.events.find((e) => e.type === 'user.offline')!;
    assert.equal(offline.type === 'user.offline' && offline.data.lastSeen, new Date(w.clock.now()).toISOString());
    assert.equal(w.events[0].createdAt, new Date(Date.UTC(2026, 0, 1)).toISOString());
    assert.deepEqual([...new Set(w.events.map(orderingKey))].sort(), ['channel:room', 'user:ada', 'user:bob']);
  });

  it('sends only the wanted types: the default leaves out typing and member updates', async () => {
    const w = world(['user.online', 'channel.occupied', 'channel.vacated']);
    const ada = w.open('ada');
    await w.send(ada, { type: 'join', channel: 'room' });
    await w.send(ada, { type: 'typing', channel: 'room', typing: true });
    await w.send(ada, { type: 'status', status: 'busy' });
    await w.send(ada, { type: 'leave', channel: 'room' });
    assert.deepEqual(w.events.map(brief), ['user.online ada online', 'channel.occupied room', 'channel.vacated room']);
  });

  it('an invisible user produces exactly what going offline produces', async () => {
    const run = async (goAway: (w: World, tab: Sink) => Promise<unknown> | void): Promise<WebhookEvent[]> => {
      const w = world(WEBHOOK_EVENT_TYPES, { offlineDelayMs: 0 });
      const watcher = w.open('obs');
      await w.send(watcher, { type: 'join', channel: 'room' });
      const ada = w.open('ada');
      await w.send(ada, { type: 'join', channel: 'room' });
      await w.send(ada, { type: 'join', channel: 'doc' });
      await w.send(ada, { type: 'status', status: 'busy', message: 'Reviewing' });
      await w.send(ada, { type: 'typing', channel: 'room', typing: true });
      w.clock.advance(1_000);
      w.events.length = 0;
      await goAway(w, ada);
      w.clock.advance(10_000);
      // Ids name the change (a different cause each run): everything else must be equal.
      return w.events.map((event) => ({ ...event, id: event.id.replace(/^[^/]*/, '<cause>') }));
    };
    const invisible = await run((w, tab) => w.send(tab, { type: 'status', status: 'invisible' }));
    const loggedOut = await run((w, tab) => w.send(tab, { type: 'logout' }));
    const disconnected = await run((w, tab) => w.node.disconnect(tab.attachment!));
    assert.deepEqual(invisible, loggedOut);
    assert.deepEqual(invisible, disconnected);
    assert.deepEqual(invisible.map(brief), [
      'typing.stopped room ada',
      'channel.member_left room ada',
      'channel.member_left doc ada',
      'channel.vacated doc',
      'user.offline ada offline',
    ]);
    const offline = invisible.at(-1)!;
    assert.ok(offline.type === 'user.offline');
    assert.deepEqual(offline.data.user.devices, []);
    assert.equal(offline.data.user.message, undefined, 'nothing of the hidden status shows');
  });

  it('occupied and vacated follow the visible members of every channel, over random joins, leaves, invisibility and disconnects', async () => {
    for (const seed of [11, 12, 13]) {
      const random = seeded(seed);
      const w = world(['channel.occupied', 'channel.vacated'], { offlineDelayMs: 1_000 });
      const occupied = new Set<string>();
      const users = ['u1', 'u2', 'u3', 'u4'];
      const channels = ['a', 'b', 'c'];
      const tabs = new Map<string, Sink[]>();
      let seen = 0;
      for (let step = 0; step < 400; step += 1) {
        const user = users[Math.floor(random() * users.length)];
        const channel = channels[Math.floor(random() * channels.length)];
        const own = tabs.get(user) ?? [];
        const roll = random();
        if (own.length === 0 || roll < 0.15) {
          own.push(w.open(user));
          tabs.set(user, own);
        } else {
          const tab = own[Math.floor(random() * own.length)];
          if (roll < 0.45) await w.send(tab, { type: 'join', channel });
          else if (roll < 0.6) await w.send(tab, { type: 'leave', channel }).catch(() => {});
          else if (roll < 0.7) await w.send(tab, { type: 'status', status: random() < 0.5 ? 'invisible' : 'online' });
          else if (roll < 0.8) {
            w.node.disconnect(tab.attachment!);
            own.splice(own.indexOf(tab), 1);
          } else if (roll < 0.85) {
            await w.send(tab, { type: 'logout' });
            tabs.set(user, []);
          } else w.clock.advance(Math.floor(random() * 1_500));
        }
        for (const event of w.events.slice(seen)) {
          const name = (event.data as { channel: string }).channel;
          if (event.type === 'channel.occupied') {
            assert.ok(!occupied.has(name), `seed ${seed} step ${step}: ${name} occupied twice`);
            occupied.add(name);
          } else {
            assert.ok(occupied.delete(name), `seed ${seed} step ${step}: ${name} vacated while not occupied`);
          }
        }
        seen = w.events.length;
        const truth = channels.filter((name) => w.node.channelPresence(name, { limit: 1 }).count > 0);
        assert.deepEqual([...occupied].sort(), truth, `seed ${seed} step ${step}: occupied channels`);
      }
      assert.ok(w.events.length > 20, `seed ${seed}: the scenario occupied and vacated channels (${w.events.length} events)`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The delivery queue, on a manual clock with a scripted receiver
// ---------------------------------------------------------------------------------------------

/** A receiver the test answers by hand: each attempt waits until the test settles it. */
class ScriptedReceiver {
  readonly attempts: { id: string; attempt: number; at: number; answer(outcome: AttemptOutcome): void }[] = [];
  constructor(private readonly clock: ManualClock) {}
  send = (entry: QueuedEvent, attempt: number): Promise<AttemptOutcome> =>
    new Promise((resolve) => this.attempts.push({ id: entry.event.id, attempt, at: this.clock.now(), answer: resolve }));
  /** Attempts not answered yet. */
  open(): ScriptedReceiver['attempts'] {
    return this.attempts.filter((a) => !(a as { done?: boolean }).done);
  }
  answer(id: string, outcome: AttemptOutcome): void {
    const attempt = this.open().find((a) => a.id === id);
    assert.ok(attempt, `an open attempt for ${id} (open: ${this.open().map((a) => a.id).join(', ')})`);
    (attempt as { done?: boolean }).done = true;
    attempt.answer(outcome);
  }
}

const flush = async () => {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

function userEvent(id: string, userId: string): QueuedEvent {
  const event: WebhookEvent = {
    id,
    type: 'user.status',
    createdAt: '2026-01-01T00:00:00.000Z',
    data: { userId, user: { userId, status: 'online', meta: {}, lastSeen: null, devices: [] } },
  };
  return { event, body: JSON.stringify(event), key: orderingKey(event), queuedAt: Date.UTC(2026, 0, 1), attempts: 0 };
}

class RecordingLog implements Logger {
  readonly lines: { level: string; msg: string; fields?: LogFields }[] = [];
  debug(msg: string, fields?: LogFields) {
    this.lines.push({ level: 'debug', msg, fields });
  }
  info(msg: string, fields?: LogFields) {
    this.lines.push({ level: 'info', msg, fields });
  }
  warn(msg: string, fields?: LogFields) {
    this.lines.push({ level: 'warn', msg, fields });
  }
  error(msg: string, fields?: LogFields) {
    this.lines.push({ level: 'error', msg, fields });
  }
  child(): Logger {
    return this;
  }
}

describe('webhook delivery queue (manual clock)', () => {
  const policy: RetryPolicy = { baseDelayMs: 1000, maxDelayMs: 60_000, giveUpAfterMs: HOUR };
  const setup = (options: { maxBacklog?: number; concurrency?: number; giveUpAfterMs?: number } = {}) => {
    const clock = new ManualClock();
    const receiver = new ScriptedReceiver(clock);
    const settled: string[] = [];
    const log = new RecordingLog();
    const queue = new DeliveryQueue({
      label: 'http://receiver/hook',
      clock,
      send: receiver.send,
      policy: { ...policy, giveUpAfterMs: options.giveUpAfterMs ?? policy.giveUpAfterMs },
      maxBacklog: options.maxBacklog ?? 100,
      concurrency: options.concurrency ?? 8,
      random: () => 0.5,
      log,
      settled: (entry, how) => settled.push(`${how} ${entry.event.id}`),
    });
    return { clock, receiver, settled, queue, log };
  };
  const ok: AttemptOutcome = { kind: 'delivered', status: 200 };
  const busy: AttemptOutcome = { kind: 'retry', reason: 'http 503', status: 503 };

  it('keeps order per key: later events of a user wait while the head is retried; other users go on', async () => {
    const { clock, receiver, settled, queue } = setup();
    queue.enqueue(userEvent('a1', 'ann'));
    queue.enqueue(userEvent('a2', 'ann'));
    queue.enqueue(userEvent('b1', 'bob'));
    queue.enqueue(userEvent('a3', 'ann'));
    await flush();
    assert.deepEqual(receiver.open().map((a) => a.id), ['a1', 'b1'], 'one at a time per key, keys side by side');
    receiver.answer('a1', busy);
    receiver.answer('b1', ok);
    await flush();
    assert.deepEqual(receiver.open().map((a) => a.id), [], 'a2 waits behind a1, which waits for its retry');
    clock.advance(749);
    await flush();
    assert.deepEqual(receiver.open().map((a) => a.id), []);
    clock.advance(1);
    await flush();
    assert.deepEqual(receiver.open().map((a) => `${a.id}#${a.attempt}`), ['a1#2'], 'retried after the jittered backoff (0.75 s)');
    receiver.answer('a1', { kind: 'retry', reason: 'timeout' });
    await flush();
    clock.advance(1_500);
    await flush();
    receiver.answer('a1', ok);
    await flush();
    receiver.answer('a2', ok);
    await flush();
    receiver.answer('a3', ok);
    await flush();
    assert.deepEqual(settled, ['delivered b1', 'delivered a1', 'delivered a2', 'delivered a3']);
    assert.deepEqual(queue.counts, { delivered: 4, failedAttempts: 2, retries: 2, deadLetters: 0, dropped: 0 });
    assert.equal(queue.backlog, 0);
  });

  it('sends at most `concurrency` requests at once, fairly across keys', async () => {
    const { receiver, queue } = setup({ concurrency: 2 });
    for (const user of ['u1', 'u2', 'u3', 'u4']) queue.enqueue(userEvent(`${user}-1`, user));
    await flush();
    assert.deepEqual(receiver.open().map((a) => a.id), ['u1-1', 'u2-1']);
    receiver.answer('u2-1', ok);
    await flush();
    assert.deepEqual(receiver.open().map((a) => a.id), ['u1-1', 'u3-1']);
  });

  it('a refusal (4xx) dead-letters at once and the next event of the key goes; retries end at the give-up age', async () => {
    const { clock, receiver, settled, queue, log } = setup({ giveUpAfterMs: 10_000 });
    queue.enqueue(userEvent('a1', 'ann'));
    queue.enqueue(userEvent('a2', 'ann'));
    await flush();
    receiver.answer('a1', { kind: 'reject', reason: 'http 400', status: 400 });
    await flush();
    assert.equal(receiver.attempts.filter((a) => a.id === 'a1').length, 1, 'not retried');
    assert.deepEqual(queue.deadLetters.map((d) => [d.event.id, d.reason, d.attempts]), [['a1', 'http 400', 1]]);
    // a2 now fails until it is 10 s old.
    for (let i = 0; i < 40 && queue.backlog > 0; i += 1) {
      if (receiver.open().length > 0) receiver.answer('a2', busy);
      await flush();
      clock.advance(1_000);
      await flush();
    }
    assert.equal(queue.backlog, 0);
    const a2 = receiver.attempts.filter((a) => a.id === 'a2');
    assert.ok(a2.at(-1)!.at - Date.UTC(2026, 0, 1) >= 10_000, 'the last attempt is at or past the give-up age');
    assert.deepEqual(settled, ['dead a1', 'dead a2']);
    assert.equal(queue.deadLetters[1].reason, 'http 503');
    assert.equal(queue.counts.deadLetters, 2);
    const warned = log.lines.filter((l) => l.level === 'warn').map((l) => l.msg);
    assert.ok(warned.includes('webhook delivery failing; retrying with backoff'));
    assert.ok(warned.includes('webhook events dead-lettered'));
  });

  it('bounds the backlog: the oldest event not in flight is dropped, counted and logged once per burst', async () => {
    const { receiver, settled, queue, log, clock } = setup({ maxBacklog: 3, concurrency: 1 });
    queue.enqueue(userEvent('a1', 'ann'));
    await flush(); // a1 is in flight
    queue.enqueue(userEvent('a2', 'ann'));
    queue.enqueue(userEvent('b1', 'bob'));
    queue.enqueue(userEvent('b2', 'bob')); // a2 dropped: the oldest not in flight
    queue.enqueue(userEvent('c1', 'cy')); // b1 dropped
    await flush();
    assert.equal(queue.backlog, 3);
    assert.deepEqual(settled, ['dropped a2', 'dropped b1']);
    assert.equal(queue.counts.dropped, 2);
    const drops = log.lines.filter((l) => l.msg === 'webhook backlog full: dropping the oldest waiting events');
    assert.equal(drops.length, 1, 'one line for the burst so far');
    clock.advance(10_000);
    assert.equal(log.lines.filter((l) => l.msg === 'webhook backlog full: dropping the oldest waiting events').length, 2, 'then a summary');
    receiver.answer('a1', ok);
    await flush();
    receiver.answer('b2', ok);
    await flush();
    receiver.answer('c1', ok);
    await flush();
    assert.deepEqual(settled.slice(2), ['delivered a1', 'delivered b2', 'delivered c1']);
  });

  it('logs the first failure and the recovery, not every attempt', async () => {
    const { clock, receiver, queue, log } = setup();
    queue.enqueue(userEvent('a1', 'ann'));
    for (let i = 0; i < 5; i += 1) {
      await flush();
      receiver.answer('a1', busy);
      await flush();
      clock.advance(60_000);
    }
    await flush();
    receiver.answer('a1', ok);
    await flush();
    assert.deepEqual(
      log.lines.map((l) => `${l.level} ${l.msg}`),
      ['warn webhook delivery failing; retrying with backoff', 'info webhook deliveries succeed again'],
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The outbox file
// ---------------------------------------------------------------------------------------------

describe('webhook outbox (data directory)', () => {
  const dirs: string[] = [];
  after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
  const dir = () => {
    const path = mkdtempSync(join(tmpdir(), 'presence-outbox-'));
    dirs.push(path);
    return path;
  };
  const entry = (e: WebhookEvent, queuedAt: number) => ({ event: e, body: JSON.stringify(e), queuedAt });
  const event = (id: string, type: WebhookEventType = 'user.status', userId = 'ann'): WebhookEvent =>
    type === 'channel.member_joined'
      ? { id, type, createdAt: '2026-01-01T00:00:00.000Z', data: { channel: 'room', userId, member: { userId, status: 'online', meta: {}, lastSeen: null, devices: [], channelMeta: {}, joinedAt: '2026-01-01T00:00:00.000Z' } } }
      : ({ id, type, createdAt: '2026-01-01T00:00:00.000Z', data: { userId, user: { userId, status: 'online', meta: {}, lastSeen: null, devices: [] } } } as WebhookEvent);

  it('reads back what some URL still owes, in order, per URL; forgets URLs no longer configured', async () => {
    const path = dir();
    const { outbox } = WebhookOutbox.open({ dir: path, log: silentLogger, targets: ['t1', 't2'] });
    outbox.append([entry(event('e1'), 1), entry(event('e2'), 2)], ['t1', 't2']);
    outbox.append([entry(event('e3'), 3)], ['t1', 't2']);
    outbox.settled('t1', 'e1', 'delivered');
    outbox.settled('t2', 'e1', 'dropped');
    outbox.settled('t1', 'e2', 'dead', { event: event('e2'), reason: 'http 400', attempts: 1, queuedAt: 2, at: 5 });
    // Settlements are written within the turn; no close: as after kill -9.
    await new Promise((resolve) => setImmediate(resolve));
    const { recovery, outbox: again } = WebhookOutbox.open({ dir: path, log: silentLogger, targets: ['t1', 't2'] });
    assert.deepEqual(
      recovery.pending.map((p) => [p.event.id, p.queuedAt, p.targets]),
      [
        ['e2', 2, ['t2']],
        ['e3', 3, ['t1', 't2']],
      ],
    );
    assert.deepEqual(recovery.deadLetters.get('t1')?.map((d) => d.event.id), ['e2']);
    again.close();
    const { recovery: onlyT2, outbox: third } = WebhookOutbox.open({ dir: path, log: silentLogger, targets: ['t2'] });
    assert.deepEqual(onlyT2.pending.map((p) => [p.event.id, p.targets]), [['e2', ['t2']], ['e3', ['t2']]]);
    assert.equal(onlyT2.deadLetters.size, 0);
    third.close();
    outbox.close();
  });

  it('skips a line cut short by a crash and damaged lines; refuses a file that is not an outbox', () => {
    const path = dir();
    const { outbox } = WebhookOutbox.open({ dir: path, log: silentLogger, targets: ['t1'] });
    outbox.append([entry(event('e1'), 1)], ['t1']);
    outbox.close();
    appendFileSync(join(path, OUTBOX_FILE), 'not json\n{"event":{"id":"e2"');
    const log = new RecordingLog();
    const { recovery, outbox: again } = WebhookOutbox.open({ dir: path, log, targets: ['t1'] });
    assert.deepEqual(recovery.pending.map((p) => p.event.id), ['e1']);
    assert.equal(recovery.invalidLines, 1);
    assert.equal(recovery.tornTail, true);
    assert.ok(log.lines.some((l) => l.msg === 'webhook outbox had damaged lines; they were skipped'));
    again.close();
    const other = dir();
    writeFileSync(join(other, OUTBOX_FILE), '{"format":"something-else"}\n');
    assert.throws(() => WebhookOutbox.open({ dir: other, log: silentLogger, targets: [] }), /not a version 1 webhook outbox/);
  });

  it('a settlement lost to a crash means a second delivery, never a lost event', () => {
    const path = dir();
    const { outbox } = WebhookOutbox.open({ dir: path, log: silentLogger, targets: ['t1'] });
    outbox.append([entry(event('e1'), 1)], ['t1']);
    outbox.settled('t1', 'e1', 'delivered');
    // Killed in the same turn: the `done` line never reached the file.
    const { recovery, outbox: again } = WebhookOutbox.open({ dir: path, log: silentLogger, targets: ['t1'] });
    assert.deepEqual(recovery.pending.map((p) => p.event.id), ['e1']);
    again.close();
  });

  it('remembers what receivers were shown across compactions, without counting carried events twice', async () => {
    const path = dir();
    const { outbox } = WebhookOutbox.open({ dir: path, log: silentLogger, targets: ['t1'] });
    outbox.append([entry(event('on', 'user.online', 'ann'), 1), entry(event('j', 'channel.member_joined', 'ann'), 1)], ['t1']);
    outbox.append([entry(event('on2', 'user.online', 'bob'), 2)], ['t1']);
    outbox.settled('t1', 'on2', 'delivered');
    await new Promise((resolve) => setImmediate(resolve));
    outbox.append([entry({ id: 'off', type: 'user.offline', createdAt: '2026-01-01T00:00:00.000Z', data: { userId: 'bob', user: { userId: 'bob', status: 'offline', meta: {}, lastSeen: null, devices: [] }, lastSeen: null } }, 3)], ['t1']);
    const first = WebhookOutbox.open({ dir: path, log: silentLogger, targets: ['t1'] });
    assert.deepEqual([...first.recovery.shown.users], ['ann']);
    assert.deepEqual([...first.recovery.shown.channels.get('room')!], ['ann']);
    // The reopen compacted the file: the carried events must not be applied on top of the snapshot again.
    first.outbox.settled('t1', 'on', 'delivered');
    await new Promise((resolve) => setImmediate(resolve));
    const second = WebhookOutbox.open({ dir: path, log: silentLogger, targets: ['t1'] });
    assert.deepEqual([...second.recovery.shown.users], ['ann']);
    assert.deepEqual(second.recovery.pending.map((p) => p.event.id), ['j', 'off']);
    const text = readFileSync(join(path, OUTBOX_FILE), 'utf8');
    assert.match(text.split('\n')[0], /"format":"presence-webhooks"/);
    assert.ok(!text.includes('"on2"'), 'settled events are gone after compaction');
    second.outbox.close();
    first.outbox.close();
    outbox.close();
  });
});

describe('Webhooks (listener, queues and outbox together)', () => {
  const config: WebhookConfig = {
    urls: ['http://127.0.0.1:9/a?token=secret-token', 'http://127.0.0.1:9/b'],
    secrets: ['s'.repeat(32)],
    events: [...WEBHOOK_EVENT_TYPES],
    maxBacklog: 100,
    timeoutMs: 1000,
    giveUpMs: HOUR,
  };

  it('queues every event for every URL in the same step as the change, with one body per event', async () => {
    const clock = new ManualClock();
    const node = new PresenceNode({ config: resolveConfig({ offlineDelayMs: 0 }), clock });
    const sent = new Map<string, string[]>();
    const webhooks = new Webhooks({
      config,
      clock,
      log: silentLogger,
      occupancy: node.engine.reader,
      userView: (userId) => node.engine.reader.viewOf(userId, undefined),
      sender: (url) => async (entry) => {
        sent.set(url, [...(sent.get(url) ?? []), entry.body]);
        return { kind: 'delivered', status: 200 };
      },
    });
    node.subscribe(webhooks.onEvent);
    let backlogDuringChange = -1;
    node.subscribe((event) => {
      if (event.type === 'user.online') backlogDuringChange = webhooks.targets[0].queue.backlog;
    });
    const tab = new Sink();
    tab.attachment = node.connect({ identity: { userId: 'ada', meta: {} } }, tab);
    assert.equal(backlogDuringChange, 1, 'queued synchronously, before the next listener ran');
    await node.handle(tab.attachment, { type: 'join', channel: 'room' });
    await flush();
    const [a, b] = config.urls.map((url) => sent.get(url)!);
    assert.deepEqual(a, b, 'every event to every URL');
    assert.deepEqual(a.map((body) => (JSON.parse(body) as WebhookEvent).type), ['user.online', 'channel.member_joined', 'channel.occupied']);
    const stats = webhooks.stats();
    assert.deepEqual(stats.map((s) => s.url), ['http://127.0.0.1:9/a', 'http://127.0.0.1:9/b'], 'no query string (it may hold a token)');
    assert.deepEqual(stats.map((s) => s.delivered), [3, 3]);
    webhooks.close();
  });

  it('with a data directory, resumes what was owed and tells receivers the previous run\'s users and channels are gone', async () => {
    const path = mkdtempSync(join(tmpdir(), 'presence-webhooks-'));
    after(() => rmSync(path, { recursive: true, force: true }));
    const run = (sender: (url: string) => (entry: QueuedEvent) => Promise<AttemptOutcome>) => {
      const clock = new ManualClock();
      const node = new PresenceNode({ config: resolveConfig({ offlineDelayMs: 0 }), clock });
      const webhooks = new Webhooks({
        config: { ...config, urls: [config.urls[0]] },
        clock,
        log: silentLogger,
        occupancy: node.engine.reader,
        userView: (userId) => node.engine.reader.viewOf(userId, undefined),
        dataDir: path,
        sender,
      });
      node.subscribe(webhooks.onEvent);
      return { node, webhooks };
    };
    // First run: the receiver never answers; ada joins a room.
    const first = run(() => () => new Promise<AttemptOutcome>(() => {}));
    const tab = new Sink();
    tab.attachment = first.node.connect({ identity: { userId: 'ada', meta: {} } }, tab);
    await first.node.handle(tab.attachment, { type: 'join', channel: 'room' });
    const owed = first.webhooks.targets[0].queue.backlog;
    assert.equal(owed, 3);
    // "kill -9": nothing is closed. The second run reads the same file.
    const received: WebhookEvent[] = [];
    const second = run(() => async (entry) => {
      received.push(entry.event as WebhookEvent);
      return { kind: 'delivered', status: 200 };
    });
    await flush();
    // Keys go side by side; within a key, in order: what was owed, then the reap.
    const byKey = (key: string) => received.filter((e) => orderingKey(e) === key).map(brief);
    assert.deepEqual(byKey('user:ada'), ['user.online ada online', 'user.offline ada offline']);
    assert.deepEqual(byKey('channel:room'), ['channel.member_joined room ada online', 'channel.occupied room', 'channel.member_left room ada', 'channel.vacated room']);
    assert.equal(received.length, 6);
    assert.equal(second.webhooks.inspectOutbox()?.pending, 0);
    assert.equal(second.webhooks.inspectOutbox()?.shownUsers, 0);
    second.webhooks.close();
    // A third start owes nothing and reaps nothing.
    const more: WebhookEvent[] = [];
    const third = run(() => async (entry) => {
      more.push(entry.event as WebhookEvent);
      return { kind: 'delivered', status: 200 };
    });
    await flush();
    assert.deepEqual(more, []);
    third.webhooks.close();
    assert.equal(targetId(config.urls[0]).length, 16);
  });
});
