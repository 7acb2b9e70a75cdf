/**
 * `npm run token`: the script run as a process prints a token that the server's own verifier
 * accepts, with the claims asked for, and a real server lets its user in; without a key, or with
 * bad arguments, it refuses with exit code 2 and a one-line reason.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createTokenVerifier } from '../src/auth/tokens.js';
import { TestClient, startTestServer } from './support/harness.js';

const SCRIPT = fileURLToPath(new URL('../scripts/token.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SECRET = 'token-script-test-secret-of-at-least-32-bytes';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the script as `npm run -s token -- …` does, with only the given PRESENCE_ variables. */
function token(args: string[], env: Record<string, string> = {}): Run {
  const clean: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('PRESENCE_') && key !== 'NODE_OPTIONS') clean[key] = value;
  const run = spawnSync(process.execPath, ['--import', 'tsx', SCRIPT, ...args], { cwd: ROOT, env: { ...clean, ...env }, encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** The token a successful run printed: stdout is that line and nothing else. */
function printed(run: Run): string {
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/, 'stdout is the token alone');
  return run.stdout.trim();
}

describe('npm run token', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'presence-token-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('HS256 with PRESENCE_JWT_SECRET: the server verifies it and reads every claim', async () => {
    const jwt = printed(
      token(
        ['--user', 'ada', '--name', 'Ada', '--avatar', 'https://example.com/ada.png', '--meta', '{"team":"core"}', '--channels', 'room:*,doc:1', '--contacts', 'bob, grace', '--visibility', 'contacts', '--expires-in', '10m'],
        { PRESENCE_JWT_SECRET: SECRET },
      ),
    );
    assert.equal(JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString()).alg, 'HS256');
    const identity = await createTokenVerifier({ jwtSecret: SECRET })!.verify(jwt);
    const { expiresAt, ...rest } = identity;
    assert.deepEqual(rest, {
      userId: 'ada',
      meta: { team: 'core', name: 'Ada', avatar: 'https://example.com/ada.png' },
      channels: ['room:*', 'doc:1'],
      contacts: ['bob', 'grace'],
      visibility: 'contacts',
    });
    assert.ok(expiresAt !== undefined && Math.abs(expiresAt - (Date.now() + 10 * 60_000)) < 30_000, 'expires in 10 minutes');
    await assert.rejects(createTokenVerifier({ jwtSecret: `${SECRET}-other` })!.verify(jwt), /signature/);
  });

  it('a real server with the secret lets the user in, within the channels the token allows', async (t) => {
    const server = await startTestServer({ auth: { jwtSecret: SECRET } });
    t.after(() => server.shutdown());
    const jwt = printed(token(['--user', 'ada', '--name', 'Ada', '--channels', 'room:*'], { PRESENCE_JWT_SECRET: SECRET }));
    const client = await TestClient.connect(server, { token: jwt });
    t.after(() => client.ws.terminate());
    assert.equal(client.welcome.userId, 'ada');
    assert.equal((await client.request({ type: 'join', channel: 'room:lobby' })).type, 'ack');
    const refused = await client.request({ type: 'join', channel: 'doc:1' });
    assert.equal(refused.type === 'error' && refused.code, 'CHANNEL_FORBIDDEN');
  });

  it('the default lifetime is an hour; audience and issuer come from the server\'s variables', async () => {
    const env = { PRESENCE_JWT_SECRET: SECRET, PRESENCE_JWT_AUDIENCE: 'presence', PRESENCE_JWT_ISSUER: 'https://auth.example.com' };
    const jwt = printed(token(['--user', 'ada'], env));
    const identity = await createTokenVerifier({ jwtSecret: SECRET, jwtAudience: 'presence', jwtIssuer: 'https://auth.example.com' })!.verify(jwt);
    assert.ok(identity.expiresAt !== undefined && Math.abs(identity.expiresAt - (Date.now() + 3_600_000)) < 30_000);
    const other = printed(token(['--user', 'ada', '--audience', 'elsewhere'], env));
    await assert.rejects(createTokenVerifier({ jwtSecret: SECRET, jwtAudience: 'presence' })!.verify(other), /audience/);
  });

  for (const [alg, pair] of [
    ['RS256', () => generateKeyPairSync('rsa', { modulusLength: 2048 })],
    ['ES256', () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' })],
  ] as const) {
    it(`${alg} with --private-key: verified with the public half, as PRESENCE_JWT_PUBLIC_KEY`, async () => {
      const { privateKey, publicKey } = pair();
      const file = join(dir, `${alg}.pem`);
      // PKCS#1 / SEC1 for one, PKCS#8 for the other: both PEM forms openssl writes.
      writeFileSync(file, privateKey.export({ type: alg === 'RS256' ? 'pkcs1' : 'pkcs8', format: 'pem' }));
      // The secret is ignored when a key file is given.
      const jwt = printed(token(['--user', 'grace', '--private-key', file], { PRESENCE_JWT_SECRET: SECRET }));
      assert.equal(JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString()).alg, alg);
      const spki = publicKey.export({ type: 'spki', format: 'pem' }).toString();
      const identity = await createTokenVerifier({ jwtPublicKey: spki })!.verify(jwt);
      assert.equal(identity.userId, 'grace');
    });
  }

  it('refuses, with exit code 2 and one line on stderr, when there is no key or an argument is wrong', () => {
    const noKey = token(['--user', 'ada']);
    assert.equal(noKey.status, 2);
    assert.equal(noKey.stdout, '');
    assert.match(noKey.stderr, /^token: no signing key: set PRESENCE_JWT_SECRET .* or pass --private-key FILE .*\?userId=ada instead of a token\n$/);

    const ed25519 = join(dir, 'ed25519.pem');
    writeFileSync(ed25519, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const publicOnly = join(dir, 'public.pem');
    writeFileSync(publicOnly, generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }));
    const env = { PRESENCE_JWT_SECRET: SECRET };
    for (const [args, message] of [
      [[], /--user ID is required/],
      [['--user', 'x'.repeat(129)], /--user must be at most 128 characters/],
      [['--user', 'ada', '--visibility', 'friends'], /--visibility must be one of everyone, contacts, nobody \(got "friends"\)/],
      [['--user', 'ada', '--meta', '[1]'], /--meta must be a JSON object/],
      [['--user', 'ada', '--expires-in', 'soon'], /--expires-in must be seconds or a span/],
      [['--user', 'ada', '--bogus'], /Unknown option '--bogus'.*see --help/],
      [['--user', 'ada', 'extra'], /Unexpected argument 'extra'/],
      [['--user', 'ada', '--private-key', join(dir, 'absent.pem')], /--private-key .*absent\.pem cannot be read \(ENOENT\)/],
      [['--user', 'ada', '--private-key', ed25519], /must be an RSA key \(RS256\) or an EC P-256 key \(ES256\), got ed25519/],
      [['--user', 'ada', '--private-key', publicOnly], /is not a PEM private key/],
    ] as const) {
      const run = token([...args], env);
      assert.equal(run.status, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.equal(run.stdout, '', args.join(' '));
      assert.match(run.stderr, /^token: [^\n]+\n$/, args.join(' '));
      assert.match(run.stderr, message, args.join(' '));
    }
  });

  it('--help lists every option and exits 0', () => {
    const run = token(['--help']);
    assert.equal(run.status, 0);
    for (const option of ['--user ID', '--name', '--avatar', '--meta', '--channels', '--contacts', '--visibility', '--expires-in', '--audience', '--issuer', '--private-key FILE', 'PRESENCE_JWT_SECRET']) {
      assert.ok(run.stdout.includes(option), `help mentions ${option}`);
    }
  });
});
