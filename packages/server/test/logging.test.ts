/**
 * The logs: the line format (read from a real server process), the pretty format, and secrets
 * that must never reach the output, tried through every path a value can take into a line.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { SignJWT } from 'jose';
import { configSecrets, createLogger, type Logger } from '../src/log.js';
import { TestClient } from './support/harness.js';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const ENTRY = fileURLToPath(new URL('../bin/presence.ts', import.meta.url));

const API_KEY = 'api-key-0123456789abcdef-LOGTEST';
const JWT_SECRET = 'jwt-secret-that-is-32-bytes-or-more-LOGTEST';
/** JSON escapes quotes and backslashes: the secret must be caught in its escaped form too. */
const ODD_SECRET = 'odd"secret\\with-escapes-LOGTEST';
const REDIS_PASSWORD = 'redis-pass-0987654321-LOGTEST';

interface Run {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<number | null>;
}

const runs: Run[] = [];
after(async () => {
  for (const run of runs) if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
  await Promise.all(runs.map((r) => r.exited));
});

/** The server from source (bin/presence.ts through tsx), with only the given configuration. */
function startProcess(env: Record<string, string>): Run {
  const clean: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(PRESENCE_|LOG_)/.test(key) || ['PORT', 'HOST', 'NODE_ENV', 'REDIS_URL', 'NODE_OPTIONS', 'NO_COLOR'].includes(key)) continue;
    clean[key] = value;
  }
  const child = spawn(process.execPath, ['--import', 'tsx', ENTRY], {
    cwd: REPO_ROOT,
    env: { ...clean, PORT: '0', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = { child, stdout: '', stderr: '', exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))) };
  child.stdout!.on('data', (chunk) => (run.stdout += chunk.toString()));
  child.stderr!.on('data', (chunk) => (run.stderr += chunk.toString()));
  runs.push(run);
  return run;
}

async function waitForLine(run: Run, match: (line: string) => boolean, what: string, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = run.stdout.split('\n').find(match);
    if (line !== undefined) return line;
    if (run.child.exitCode !== null) throw new Error(`exited early (${run.child.exitCode}): ${run.stderr}${run.stdout}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stdout so far: ${run.stdout}`);
    await sleep(20);
  }
}

async function stop(run: Run): Promise<void> {
  run.child.kill('SIGTERM');
  assert.equal(await run.exited, 0);
}

function assertNoSecret(output: string, secrets: Record<string, string>): void {
  for (const [what, secret] of Object.entries(secrets)) {
    const escaped = JSON.stringify(secret).slice(1, -1);
    for (const form of new Set([secret, escaped])) {
      assert.ok(!output.includes(form), `${what} leaked:\n${output}`);
      // Not even a recognizable piece of it (a token's signature, the key's tail).
      assert.ok(!output.includes(form.slice(-16)), `a piece of ${what} leaked:\n${output}`);
    }
  }
}

describe('log lines of a running server', () => {
  test('JSON lines: time (ISO string) first, then level (a string) and msg, then the fields; nothing else', async () => {
    const run = startProcess({ LOG_LEVEL: 'info', PRESENCE_OFFLINE_DELAY_MS: '1000' });
    const line = await waitForLine(run, (l) => l.includes('"presence server listening"'), 'the listening line');
    const record = JSON.parse(line) as Record<string, unknown>;
    assert.deepEqual(Object.keys(record).slice(0, 3), ['time', 'level', 'msg']);
    assert.equal(typeof record.time, 'string');
    assert.equal(new Date(record.time as string).toISOString(), record.time, 'time is an ISO 8601 UTC string');
    assert.equal(record.level, 'info');
    assert.equal(record.msg, 'presence server listening');
    assert.equal(typeof record.url, 'string');
    assert.equal(record.websocket, `${(record.url as string).replace(/^http/, 'ws')}/realtime`);
    assert.equal(record.offlineDelayMs, 1000);
    assert.equal(record.pid, undefined, 'no pid');
    assert.equal(record.hostname, undefined, 'no hostname');
    await stop(run);
    const lines = run.stdout.split('\n').filter((l) => l !== '');
    for (const text of lines) {
      const each = JSON.parse(text) as Record<string, unknown>;
      assert.deepEqual(Object.keys(each).slice(0, 3), ['time', 'level', 'msg'], text);
      assert.ok(['debug', 'info', 'warn', 'error'].includes(each.level as string), text);
    }
    assert.ok(lines.some((l) => JSON.parse(l).level === 'warn'), 'the development-mode warning');
    assert.ok(lines.some((l) => JSON.parse(l).msg === 'shutting down'));
  });

  test('LOG_FORMAT=pretty: readable lines, no JSON', async () => {
    const run = startProcess({ LOG_FORMAT: 'pretty', LOG_LEVEL: 'info' });
    const line = await waitForLine(run, (l) => l.includes('presence server listening'), 'the listening line');
    assert.match(line, /^\d\d:\d\d:\d\d\.\d{3} INFO  presence server listening url=http:\/\/127\.0\.0\.1:\d+ websocket=ws:\/\/127\.0\.0\.1:\d+\/realtime /);
    assert.ok(!line.includes('\x1b['), 'no colors when stdout is not a terminal');
    await stop(run);
    assert.match(run.stdout, /^\d\d:\d\d:\d\d\.\d{3} WARN  no auth configured/m);
    assert.ok(!run.stdout.includes('{"time"'));
  });

  test('LOG_FORMAT with another value is refused at start, naming the variable', async () => {
    const run = startProcess({ LOG_FORMAT: 'logfmt' });
    assert.equal(await run.exited, 2);
    assert.match(run.stderr, /LOG_FORMAT must be one of json, pretty \(got "logfmt"\)/);
    assert.equal(run.stdout, '');
  });

  test('a server given the secrets and hit with them never writes them, at debug level', async () => {
    const run = startProcess({
      LOG_LEVEL: 'debug',
      PRESENCE_API_KEY: API_KEY,
      PRESENCE_JWT_SECRET: JWT_SECRET,
      PRESENCE_OFFLINE_DELAY_MS: '100',
    });
    const line = await waitForLine(run, (l) => l.includes('"presence server listening"'), 'the listening line');
    const { url, websocket } = JSON.parse(line) as { url: string; websocket: string };
    const key = new TextEncoder().encode(JWT_SECRET);
    const good = await new SignJWT({ exp: Math.floor(Date.now() / 1000) + 600 }).setProtectedHeader({ alg: 'HS256' }).setSubject('keeper').sign(key);
    const forged = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('forger').sign(new TextEncoder().encode('not-the-secret-but-long-enough-000'));
    const expired = await new SignJWT({ exp: Math.floor(Date.now() / 1000) - 60 }).setProtectedHeader({ alg: 'HS256' }).setSubject('late').sign(key);

    const client = await TestClient.connect({ wsUrl: websocket }, { token: good });
    assert.equal(client.welcome.userId, 'keeper');
    client.sendRaw('{not json');
    await client.request({ type: 'join', channel: 'logs' });
    for (const token of [forged, expired, API_KEY, JWT_SECRET, 'garbage.token.value']) {
      const refused = await TestClient.connect({ wsUrl: websocket }, { token });
      await refused.closed;
    }
    for (const bearer of [good, forged, expired, API_KEY, `${API_KEY}x`, JWT_SECRET]) {
      await fetch(`${url}/realtime/users/keeper/presence`, { headers: { authorization: `Bearer ${bearer}` } }).then((r) => r.text());
      await fetch(`${url}/realtime/nope/${encodeURIComponent(bearer)}?token=${encodeURIComponent(bearer)}`, { headers: { authorization: `Bearer ${bearer}` } }).then((r) => r.text());
    }
    await fetch(`${url}/realtime/presence/update`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ userId: 'keeper', bogus: API_KEY }),
    }).then((r) => r.text());
    await client.close();
    await stop(run);

    assert.ok(run.stdout.split('\n').length > 3, 'the server logged');
    assertNoSecret(run.stdout + run.stderr, { good, forged, expired, apiKey: API_KEY, jwtSecret: JWT_SECRET });
  });
});

describe('redaction', () => {
  /** Logs every secret through every path a value can take into a line. */
  async function logEverywhere(log: Logger, secrets: Record<string, string>): Promise<number> {
    let calls = 0;
    const call = (fn: () => void) => {
      fn();
      calls++;
    };
    for (const [what, secret] of Object.entries(secrets)) {
      call(() => log.info(`the ${what} is ${secret}`));
      call(() => log.warn('field', { value: secret, [what]: secret }));
      call(() => log.warn('known names', { token: secret, apiKey: secret, jwtSecret: secret, secret, password: secret, authorization: `Bearer ${secret}`, cookie: `sid=${secret}` }));
      call(() => log.warn('nested', { req: { headers: { authorization: `Bearer ${secret}`, cookie: secret }, query: { token: secret } }, deep: { a: { b: { c: [secret] } } } }));
      call(() => log.error('url', { url: `ws://h/realtime?userId=x&token=${encodeURIComponent(secret)}` }));
      call(() => log.error(`GET /realtime?token=${secret}&x=1`));
      call(() => log.error(`header Authorization: Bearer ${secret}`));
      call(() => log.child({ apiKey: secret, note: secret }).info('child bindings'));
      call(() => log.child({ node: 'n1' }).child({ session: secret }).debug('grandchild', { msg: secret, level: secret }));
      call(() => log.error('error', { err: Object.assign(new Error(`bad credentials ${secret}`), { code: secret, cause: new Error(secret) }) }));
      call(() => log.error('thrown', { err: new TypeError(`token ${secret} refused`), list: [new Error(secret)], big: 10n }));
    }
    // Tokens the logger cannot know: recognized by shape.
    const opaque = 'opaqueTokenValue1234567890-LOGTEST';
    const jwt = await new SignJWT({ secret: 'claims' }).setProtectedHeader({ alg: 'HS256' }).setSubject('someone').sign(new TextEncoder().encode('x'.repeat(32)));
    call(() => log.info(`connect ws://h/realtime?token=${opaque}`));
    call(() => log.info('upgrade', { url: `/realtime?access_token=${opaque}&userId=u`, header: `Bearer ${opaque}` }));
    call(() => log.info(`a JWT in passing: ${jwt}`, { copy: jwt }));
    call(() => log.info('basic', { authorization: `Basic ${Buffer.from(`user:${opaque}`).toString('base64')}`, raw: `Basic ${Buffer.from(`user:${opaque}`).toString('base64')}` }));
    secrets.opaque = opaque;
    secrets.jwt = jwt;
    secrets.basic = Buffer.from(`user:${opaque}`).toString('base64');
    return calls;
  }

  for (const format of ['json', 'pretty'] as const) {
    test(`${format}: configured secrets, credential fields, token= parameters, Bearer values and JWTs never reach the output`, async () => {
      const lines: string[] = [];
      const secrets = configSecrets({ auth: { apiKey: API_KEY, jwtSecret: JWT_SECRET }, redisUrl: `redis://:${REDIS_PASSWORD}@redis:6379/0` });
      const log = createLogger('debug', { format, write: (line) => lines.push(line), secrets: [...secrets, ODD_SECRET] });
      const probe: Record<string, string> = { apiKey: API_KEY, jwtSecret: JWT_SECRET, redisPassword: REDIS_PASSWORD, odd: ODD_SECRET };
      const calls = await logEverywhere(log, probe);
      assert.equal(lines.length, calls, 'every call wrote its line: redaction drops values, never lines');
      const output = lines.join('\n');
      assertNoSecret(output, probe);
      assert.ok(output.includes('[REDACTED]'));
      // What is not secret stays readable.
      assert.ok(output.includes('child bindings') && output.includes('n1'));
      if (format === 'json') {
        for (const line of lines) JSON.parse(line);
        const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
        const thrown = records.find((r) => r.msg === 'thrown')!;
        assert.equal((thrown.err as { name: string }).name, 'TypeError', 'errors keep their shape');
        assert.equal(thrown.big, '10');
        const nested = records.find((r) => r.msg === 'nested')!;
        assert.deepEqual((nested.req as { headers: unknown }).headers, { authorization: '[REDACTED]', cookie: '[REDACTED]' });
        assert.match(records.find((r) => r.msg === 'url')!.url as string, /^ws:\/\/h\/realtime\?userId=x&token=\[REDACTED\]$/);
      }
    });
  }

  test('without configured secrets, shapes are still caught; short secrets are not searched for', () => {
    const lines: string[] = [];
    const log = createLogger('info', { write: (line) => lines.push(line), secrets: ['short', undefined] });
    log.info('level info with a short word', { word: 'short' });
    log.info('GET /x?token=abcdefghijkl');
    assert.equal(JSON.parse(lines[0]).word, 'short', 'a value under 8 characters would match ordinary words');
    assert.equal(JSON.parse(lines[1]).msg, 'GET /x?token=[REDACTED]');
  });
});
