/**
 * verifyWebhook: the signature format the server sends, `Presence-Signature: t=<unix seconds>,
 * v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=…]`, computed here independently with
 * node:crypto, so the SDK's WebCrypto code is checked against the format and not against itself.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, test } from 'node:test';
import { DEFAULT_WEBHOOK_TOLERANCE_SEC, WebhookVerificationError, signWebhook, verifyWebhook, type WebhookVerificationErrorCode } from '../src/index.js';

const OLD = 'whsec_old_0123456789abcdef';
const NEW = 'whsec_new_fedcba9876543210';
const NOW = Date.parse('2026-03-01T12:00:00.000Z');
const T = Math.floor(NOW / 1000);

const event = { id: 'evt_1.42/user.online//alice', type: 'user.online', createdAt: '2026-03-01T11:59:59.000Z', data: { userId: 'alice', user: { userId: 'alice', status: 'online' } } };
const body = JSON.stringify(event);

/** The header as the server builds it: one `v1` per secret, in order. */
function header(rawBody: string | Buffer, secrets: string[], t = T): string {
  return [`t=${t}`, ...secrets.map((secret) => `v1=${createHmac('sha256', secret).update(`${t}.`).update(rawBody).digest('hex')}`)].join(',');
}

async function refused(promise: Promise<unknown>, code: WebhookVerificationErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof WebhookVerificationError, String(error));
    assert.equal(error.code, code, error.message);
    return true;
  });
}

describe('verifyWebhook', () => {
  test('a valid webhook returns its events, with their ids', async () => {
    assert.deepEqual(await verifyWebhook(body, header(body, [NEW]), NEW, { now: NOW }), [event]);
    assert.deepEqual(await verifyWebhook(Buffer.from(body), header(body, [NEW]), [NEW], { now: new Date(NOW) }), [event], 'a Buffer body');
    const bytes = new TextEncoder().encode(body);
    assert.deepEqual(await verifyWebhook(bytes.buffer, header(body, [NEW]), NEW, { now: NOW }), [event], 'an ArrayBuffer body');
    // Node gives a repeated header as one string or an array; upper-case hex is the same digest.
    assert.deepEqual(await verifyWebhook(body, [header(body, [NEW])], NEW, { now: NOW }), [event]);
    assert.deepEqual(await verifyWebhook(body, header(body, [NEW]).toUpperCase().replace('T=', 't=').replace('V1=', 'v1='), NEW, { now: NOW }), [event]);
  });

  test('a batch (an array, or {"events": [...]}) returns every event', async () => {
    const second = { ...event, id: 'evt_2', type: 'user.offline' };
    for (const batch of [JSON.stringify([event, second]), JSON.stringify({ events: [event, second] })]) {
      const events = await verifyWebhook(batch, header(batch, [NEW]), NEW, { now: NOW });
      assert.deepEqual(events.map((e) => e.id), ['evt_1.42/user.online//alice', 'evt_2']);
    }
  });

  test('a tampered body, timestamp or signature is SIGNATURE_MISMATCH', async () => {
    const signed = header(body, [NEW]);
    await refused(verifyWebhook(body.replace('"online"', '"offline"'), signed, NEW, { now: NOW }), 'SIGNATURE_MISMATCH');
    await refused(verifyWebhook(`${body} `, signed, NEW, { now: NOW }), 'SIGNATURE_MISMATCH');
    await refused(verifyWebhook(JSON.stringify(JSON.parse(body), null, 2), signed, NEW, { now: NOW }), 'SIGNATURE_MISMATCH');
    await refused(verifyWebhook(body, signed.replace(`t=${T}`, `t=${T + 1}`), NEW, { now: NOW }), 'SIGNATURE_MISMATCH');
    const flipped = signed.slice(0, -1) + (signed.endsWith('0') ? '1' : '0');
    await refused(verifyWebhook(body, flipped, NEW, { now: NOW }), 'SIGNATURE_MISMATCH');
  });

  test('a wrong secret is SIGNATURE_MISMATCH', async () => {
    await refused(verifyWebhook(body, header(body, [NEW]), 'whsec_someone_else', { now: NOW }), 'SIGNATURE_MISMATCH');
    await refused(verifyWebhook(body, header(body, [NEW]), [OLD, 'whsec_other'], { now: NOW }), 'SIGNATURE_MISMATCH');
  });

  test('rotation: a header with two v1 (old and new secret) is accepted by a receiver holding either, or both', async () => {
    const rotating = header(body, [OLD, NEW]);
    assert.equal(rotating.split(',').filter((part) => part.startsWith('v1=')).length, 2);
    for (const secrets of [[OLD], [NEW], [OLD, NEW], [NEW, OLD], ['whsec_unrelated', NEW]]) {
      assert.deepEqual(await verifyWebhook(body, rotating, secrets, { now: NOW }), [event], secrets.join(' + '));
    }
    // The receiver rotated first: it holds both while the server still signs with the old one only.
    assert.deepEqual(await verifyWebhook(body, header(body, [OLD]), [NEW, OLD], { now: NOW }), [event]);
    await refused(verifyWebhook(body, header(body, [OLD]), [NEW], { now: NOW }), 'SIGNATURE_MISMATCH');
  });

  test('outside the 5-minute tolerance is TIMESTAMP_OUT_OF_TOLERANCE, either way; the edge is inside', async () => {
    assert.equal(DEFAULT_WEBHOOK_TOLERANCE_SEC, 300);
    for (const [age, ok] of [
      [300, true],
      [-300, true],
      [301, false],
      [-301, false],
      [3600, false],
    ] as const) {
      const signed = header(body, [NEW], T - age);
      const check = verifyWebhook(body, signed, NEW, { now: NOW });
      if (ok) assert.deepEqual(await check, [event], `${age} s old`);
      else await refused(check, 'TIMESTAMP_OUT_OF_TOLERANCE');
    }
    const old = header(body, [NEW], T - 600);
    assert.deepEqual(await verifyWebhook(body, old, NEW, { now: NOW, toleranceSec: 900 }), [event], 'a wider tolerance');
    await refused(verifyWebhook(body, header(body, [NEW], T - 20), NEW, { now: NOW, toleranceSec: 10 }), 'TIMESTAMP_OUT_OF_TOLERANCE');
    // Without `now`: the real clock.
    const fresh = header(body, [NEW], Math.floor(Date.now() / 1000));
    assert.deepEqual(await verifyWebhook(body, fresh, NEW), [event]);
  });

  test('a missing or malformed header, no secrets, a body that is not events', async () => {
    await refused(verifyWebhook(body, undefined, NEW, { now: NOW }), 'MISSING_SIGNATURE');
    await refused(verifyWebhook(body, '', NEW, { now: NOW }), 'MISSING_SIGNATURE');
    for (const bad of [
      `v1=${'a'.repeat(64)}`,
      `t=${T}`,
      `t=${T},v1=xyz`,
      `t=${T},v1=${'a'.repeat(63)}`,
      `t=abc,v1=${'a'.repeat(64)}`,
      `t=${T},t=${T},v1=${'a'.repeat(64)}`,
      'sha256=deadbeef',
    ]) {
      await refused(verifyWebhook(body, bad, NEW, { now: NOW }), 'MALFORMED_SIGNATURE');
    }
    // Unknown schemes beside a valid v1 are skipped.
    assert.deepEqual(await verifyWebhook(body, `${header(body, [NEW])},v2=whatever`, NEW, { now: NOW }), [event]);
    await refused(verifyWebhook(body, header(body, [NEW]), [], { now: NOW }), 'NO_SECRETS');
    await refused(verifyWebhook(body, header(body, [NEW]), '', { now: NOW }), 'NO_SECRETS');
    for (const payload of ['not json', '42', '[1]', '{"type":"user.online"}', '{"id":"x"}', '{"events":[{"id":1,"type":"x"}]}']) {
      await refused(verifyWebhook(payload, header(payload, [NEW]), NEW, { now: NOW }), 'INVALID_PAYLOAD');
    }
    const latin1 = Buffer.from([0x7b, 0xe9, 0x7d]);
    await refused(verifyWebhook(latin1, header(latin1, [NEW]), NEW, { now: NOW }), 'INVALID_PAYLOAD');
    await assert.rejects(verifyWebhook(event as unknown as string, header(body, [NEW]), NEW, { now: NOW }), /raw body/, 'a parsed body');
  });

  test('signWebhook writes the same header as the server', async () => {
    assert.equal(await signWebhook(body, [OLD, NEW], { now: NOW }), header(body, [OLD, NEW]));
    assert.equal(await signWebhook(Buffer.from(body), NEW, { now: new Date(NOW + 999) }), header(body, [NEW]));
  });
});
