import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { DEFAULT_CONFIG, DEFAULT_STATES } from '../src/config/config.js';
import {
  COMMAND_LINE_FLAGS,
  CONFIG_VARIABLES,
  ConfigError,
  HELP_TEXT,
  configWarnings,
  loadConfig,
  wantsHelp,
  wantsVersion,
} from '../src/config/env.js';
import { configSecrets, createLogger, silentLogger } from '../src/log.js';

/** Asserts that loading throws a ConfigError blaming `variable`, with the name in the message. */
function assertConfigError(env: Record<string, string>, variable: string, argv: string[] = [], match?: RegExp): void {
  assert.throws(
    () => loadConfig(env, argv),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
      assert.equal(err.variable, variable);
      assert.ok(err.message.includes(variable), `message should name ${variable}: ${err.message}`);
      if (match) assert.match(err.message, match);
      return true;
    },
  );
}

function spkiPem(type: 'rsa' | 'ec' | 'ed25519'): string {
  const pair =
    type === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : type === 'ec'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('ed25519');
  return pair.publicKey.export({ type: 'spki', format: 'pem' }).toString();
}

describe('loadConfig', () => {
  it('gives DEFAULT_CONFIG for an empty environment', () => {
    assert.deepEqual(loadConfig({}, []), DEFAULT_CONFIG);
  });

  it('treats empty variables as unset', () => {
    assert.deepEqual(loadConfig({ PORT: '', LOG_LEVEL: '', PRESENCE_JWT_SECRET: '' }, []), DEFAULT_CONFIG);
  });

  it('reads every documented variable', () => {
    const pem = spkiPem('ec');
    const config = loadConfig(
      {
        PORT: '9000',
        HOST: '127.0.0.1',
        PRESENCE_IDLE_TIMEOUT_MS: '60000',
        PRESENCE_OFFLINE_DELAY_MS: '0',
        PRESENCE_SYNC_INTERVAL_MS: '1000',
        PRESENCE_NODE_LEASE_MS: '1500',
        PRESENCE_NODE_ID: 'eu-1',
        PRESENCE_REDIS_PREFIX: 'staging',
        PRESENCE_CLOCK_SKEW_MS: '-30000',
        PRESENCE_TYPING_TIMEOUT_MS: '5000',
        PRESENCE_HEARTBEAT_INTERVAL_MS: '15000',
        PRESENCE_HTTP_HEARTBEAT_INTERVAL_MS: '7000',
        PRESENCE_UNLOAD_GRACE_MS: '2000',
        PRESENCE_LARGE_CHANNEL_MEMBERS: '0',
        PRESENCE_LARGE_CHANNEL_WINDOW_MS: '100',
        PRESENCE_OCCUPANCY_ONLY_MEMBERS: '20000',
        PRESENCE_OCCUPANCY_SAMPLE: '20',
        PRESENCE_OCCUPANCY_SAMPLE_INTERVAL_MS: '5000',
        PRESENCE_JWT_SECRET: 'a'.repeat(40),
        PRESENCE_JWT_PUBLIC_KEY: pem,
        PRESENCE_JWT_AUDIENCE: 'presence',
        PRESENCE_JWT_ISSUER: 'https://auth.example.com',
        PRESENCE_API_KEY: 'k'.repeat(32),
        PRESENCE_SESSION_SECRET: 's'.repeat(32),
        PRESENCE_STATES: 'in-call:busy, lunch:away',
        PRESENCE_ALLOWED_ORIGINS: 'https://app.example.com, http://localhost:3000',
        REDIS_URL: 'redis://:secret@redis:6379/0',
        LOG_LEVEL: 'DEBUG',
        LOG_FORMAT: 'Pretty',
        PRESENCE_METRICS_PORT: '9100',
        NODE_ENV: 'production',
        PRESENCE_PERMESSAGE_DEFLATE: '1',
        PRESENCE_MAX_FRAME_BYTES: '32768',
        PRESENCE_MAX_META_BYTES: '1024',
        PRESENCE_MAX_META_DEPTH: '3',
        PRESENCE_MAX_META_KEYS: '16',
        PRESENCE_MAX_MESSAGE_LENGTH: '100',
        PRESENCE_MAX_CHANNEL_NAME_LENGTH: '64',
        PRESENCE_MAX_CHANNELS_PER_SESSION: '10',
        PRESENCE_MAX_SESSIONS_PER_USER: '5',
        PRESENCE_MAX_WATCHED_USERS: '200',
        PRESENCE_RATE_LIMIT: '20',
        PRESENCE_RATE_BURST: '40',
        PRESENCE_MAX_OUTBOUND_BUFFER_BYTES: '524288',
        PRESENCE_MAX_USER_ID_LENGTH: '64',
        PRESENCE_MAX_CONNECTIONS: '5000',
        PRESENCE_MAX_QUERY_USERS: '100',
        PRESENCE_MAX_PAGE_SIZE: '50',
        PRESENCE_MAX_EVENT_LOOP_LAG_MS: '0',
        PRESENCE_MAX_TOTAL_OUTBOUND_BYTES: '1048576',
        PRESENCE_HTTP_KEY_RATE_LIMIT: '0',
        PRESENCE_HTTP_KEY_RATE_BURST: '500',
        PRESENCE_HTTP_USER_RATE_LIMIT: '5',
        PRESENCE_HTTP_USER_RATE_BURST: '10',
        PRESENCE_HTTP_IP_RATE_LIMIT: '2',
        PRESENCE_HTTP_IP_RATE_BURST: '4',
        PRESENCE_TRUST_PROXY_HOPS: '1',
      },
      [],
    );
    assert.deepEqual(config, {
      port: 9000,
      host: '127.0.0.1',
      idleTimeoutMs: 60000,
      offlineDelayMs: 0,
      syncIntervalMs: 1000,
      nodeLeaseMs: 1500,
      redisPrefix: 'staging',
      clockSkewMs: -30000,
      typingTimeoutMs: 5000,
      heartbeatIntervalMs: 15000,
      httpHeartbeatIntervalMs: 7000,
      unloadGraceMs: 2000,
      auth: {
        jwtSecret: 'a'.repeat(40),
        jwtPublicKey: pem,
        jwtAudience: 'presence',
        jwtIssuer: 'https://auth.example.com',
        apiKey: 'k'.repeat(32),
        sessionSecret: 's'.repeat(32),
      },
      states: { 'in-call': 'busy', lunch: 'away' },
      allowedOrigins: ['https://app.example.com', 'http://localhost:3000'],
      redisUrl: 'redis://:secret@redis:6379/0',
      nodeId: 'eu-1',
      logLevel: 'debug',
      logFormat: 'pretty',
      metricsPort: 9100,
      production: true,
      permessageDeflate: true,
      trustProxyHops: 1,
      largeRooms: { windowMembers: 0, windowMs: 100, occupancyMembers: 20000, sampleSize: 20, sampleIntervalMs: 5000 },
      limits: {
        maxFrameBytes: 32768,
        maxMetaBytes: 1024,
        maxMetaDepth: 3,
        maxMetaKeys: 16,
        maxMessageLength: 100,
        maxChannelNameLength: 64,
        maxChannelsPerSession: 10,
        maxSessionsPerUser: 5,
        maxWatchedUsers: 200,
        rateLimitPerSecond: 20,
        rateLimitBurst: 40,
        maxOutboundBufferBytes: 524288,
        maxUserIdLength: 64,
        maxConnections: 5000,
        maxQueryUsers: 100,
        maxPageSize: 50,
        maxEventLoopLagMs: 0,
        maxTotalOutboundBytes: 1048576,
        httpKeyRateLimit: 0,
        httpKeyRateBurst: 500,
        httpUserRateLimit: 5,
        httpUserRateBurst: 10,
        httpIpRateLimit: 2,
        httpIpRateBurst: 4,
      },
    });
  });

  it('rejects malformed integers, naming the variable', () => {
    assertConfigError(
      { PRESENCE_OFFLINE_DELAY_MS: 'abc' },
      'PRESENCE_OFFLINE_DELAY_MS',
      [],
      /PRESENCE_OFFLINE_DELAY_MS must be a non-negative integer \(got "abc"\)/,
    );
    for (const bad of ['1.5', '1e3', '0x10', '-1', '+5', '30s', '10 000']) {
      assertConfigError({ PRESENCE_IDLE_TIMEOUT_MS: bad }, 'PRESENCE_IDLE_TIMEOUT_MS');
    }
    assertConfigError({ PRESENCE_MAX_META_KEYS: 'many' }, 'PRESENCE_MAX_META_KEYS');
    assertConfigError({ PRESENCE_RATE_LIMIT: '2.5' }, 'PRESENCE_RATE_LIMIT');
  });

  it('rejects integers out of range', () => {
    assertConfigError({ PORT: '65536' }, 'PORT', [], /from 0 to 65535/);
    assert.equal(loadConfig({ PORT: '0' }, []).port, 0);
    assert.equal(loadConfig({ PORT: '65535' }, []).port, 65535);
    assertConfigError({ PRESENCE_IDLE_TIMEOUT_MS: '0' }, 'PRESENCE_IDLE_TIMEOUT_MS');
    assertConfigError({ PRESENCE_TYPING_TIMEOUT_MS: '0' }, 'PRESENCE_TYPING_TIMEOUT_MS');
    assertConfigError({ PRESENCE_SYNC_INTERVAL_MS: '0' }, 'PRESENCE_SYNC_INTERVAL_MS');
    assertConfigError({ PRESENCE_HEARTBEAT_INTERVAL_MS: '9' }, 'PRESENCE_HEARTBEAT_INTERVAL_MS');
    assert.equal(loadConfig({ PRESENCE_HEARTBEAT_INTERVAL_MS: '10' }, []).heartbeatIntervalMs, 10);
    // Beyond setTimeout's range a timer would fire at once instead of never.
    assertConfigError({ PRESENCE_OFFLINE_DELAY_MS: '2147483648' }, 'PRESENCE_OFFLINE_DELAY_MS');
    assertConfigError({ PRESENCE_MAX_CONNECTIONS: '99999999999999999999' }, 'PRESENCE_MAX_CONNECTIONS');
    assertConfigError({ PRESENCE_MAX_CHANNELS_PER_SESSION: '0' }, 'PRESENCE_MAX_CHANNELS_PER_SESSION');
    assertConfigError({ PRESENCE_MAX_FRAME_BYTES: String(200 * 1024 * 1024) }, 'PRESENCE_MAX_FRAME_BYTES');
  });

  it('validates the remaining kinds of values', () => {
    assertConfigError({ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL', [], /debug, info, warn, error, silent/);
    assertConfigError({ PRESENCE_PERMESSAGE_DEFLATE: 'yes please' }, 'PRESENCE_PERMESSAGE_DEFLATE');
    assert.equal(loadConfig({ PRESENCE_PERMESSAGE_DEFLATE: 'false' }, []).permessageDeflate, false);
    assert.equal(loadConfig({ PRESENCE_PERMESSAGE_DEFLATE: 'TRUE' }, []).permessageDeflate, true);
    assertConfigError({ HOST: 'http://0.0.0.0' }, 'HOST');
    assertConfigError({ REDIS_URL: 'localhost:6379' }, 'REDIS_URL');
    assertConfigError({ REDIS_URL: 'http://redis:6379' }, 'REDIS_URL');
    assert.equal(loadConfig({ REDIS_URL: 'rediss://redis.example.com:6380' }, []).redisUrl, 'rediss://redis.example.com:6380');
  });

  it('never echoes a Redis password in an error', () => {
    assert.throws(
      () => loadConfig({ REDIS_URL: 'redis://user:hunter2@ bad host' }, []),
      (err: unknown) => err instanceof ConfigError && !err.message.includes('hunter2'),
    );
  });

  it('REDIS_CLUSTER_NODES: seeds as host:port or redis:// and rediss:// URLs, the scheme and credentials of any seed shared by all', () => {
    const nodes = (value: string) => loadConfig({ REDIS_CLUSTER_NODES: value }, []).redisClusterNodes;
    assert.equal(loadConfig({}, []).redisClusterNodes, undefined);
    assert.deepEqual(nodes('10.0.0.1:7000, 10.0.0.2:7001,,redis-3'), ['redis://10.0.0.1:7000', 'redis://10.0.0.2:7001', 'redis://redis-3:6379']);
    assert.deepEqual(nodes('[::1]:7000'), ['redis://[::1]:7000']);
    assert.deepEqual(nodes('rediss://app:p%40ss@a.example.com:7000,b.example.com:7001'), ['rediss://app:p%40ss@a.example.com:7000', 'rediss://app:p%40ss@b.example.com:7001']);
    assert.deepEqual(nodes('redis://:pw@a:7000/0,redis://:pw@b:7001/'), ['redis://:pw@a:7000', 'redis://:pw@b:7001']);
    assert.deepEqual(loadConfig({ REDIS_CLUSTER_NODES: 'redis://:pw@a:7000' }, []).redisUrl, undefined);
    assertConfigError({ REDIS_CLUSTER_NODES: ' , ' }, 'REDIS_CLUSTER_NODES', [], /at least one seed node/);
    assertConfigError({ REDIS_CLUSTER_NODES: 'a:7000,http://b:7001' }, 'REDIS_CLUSTER_NODES', [], /seed 2 must be host:port or a redis:\/\/ or rediss:\/\/ URL/);
    assertConfigError({ REDIS_CLUSTER_NODES: 'a:notaport' }, 'REDIS_CLUSTER_NODES', [], /seed 1 is neither host:port nor/);
    assertConfigError({ REDIS_CLUSTER_NODES: 'user:pw@a:7000' }, 'REDIS_CLUSTER_NODES', [], /credentials and TLS go in a redis:\/\/ or rediss:\/\/ URL/);
    assertConfigError({ REDIS_CLUSTER_NODES: 'redis://a:7000/2' }, 'REDIS_CLUSTER_NODES', [], /database 0 only/);
    assertConfigError({ REDIS_CLUSTER_NODES: 'redis://:one@a:7000,redis://:two@b:7001' }, 'REDIS_CLUSTER_NODES', [], /seed 2 has another scheme or other credentials than seed 1/);
    assertConfigError({ REDIS_CLUSTER_NODES: 'redis://a:7000,rediss://b:7001' }, 'REDIS_CLUSTER_NODES', [], /seed 2 has another scheme/);
  });

  it('REDIS_CLUSTER_NODES: never echoes a password, and its passwords are kept out of the logs', () => {
    assert.throws(
      () => loadConfig({ REDIS_CLUSTER_NODES: 'redis://user:hunter2@a:7000/5' }, []),
      (err: unknown) => err instanceof ConfigError && !err.message.includes('hunter2') && err.message.includes('***'),
    );
    const config = loadConfig({ REDIS_CLUSTER_NODES: 'redis://app:s%3Dcret@a:7000,b:7001' }, []);
    assert.ok(configSecrets(config).includes('s=cret'), 'the decoded password is a secret of the logs');
  });

  it('REDIS_URL and REDIS_CLUSTER_NODES together are refused, naming both; so is either with PRESENCE_DATA_DIR', () => {
    assertConfigError(
      { REDIS_URL: 'redis://127.0.0.1:6379', REDIS_CLUSTER_NODES: '127.0.0.1:7000' },
      'REDIS_CLUSTER_NODES',
      [],
      /^REDIS_URL and REDIS_CLUSTER_NODES are both set: REDIS_URL names one Redis, REDIS_CLUSTER_NODES a Redis Cluster; unset one of them$/,
    );
    assertConfigError({ REDIS_CLUSTER_NODES: '127.0.0.1:7000', PRESENCE_DATA_DIR: '/data' }, 'PRESENCE_DATA_DIR', [], /PRESENCE_DATA_DIR and REDIS_CLUSTER_NODES are both set: with REDIS_CLUSTER_NODES user records live in Redis/);
  });

  it('REDIS_URL and REDIS_CLUSTER_NODES together: the server exits with code 2 and says so', () => {
    const bin = fileURLToPath(new URL('../bin/presence.ts', import.meta.url));
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, REDIS_URL: 'redis://127.0.0.1:1', REDIS_CLUSTER_NODES: '127.0.0.1:2' };
    const run = spawnSync(process.execPath, ['--import', 'tsx', bin], { env, encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.status, 2, run.stdout + run.stderr);
    assert.match(run.stderr + run.stdout, /REDIS_URL and REDIS_CLUSTER_NODES are both set/);
  });

  it('parses PRESENCE_ALLOWED_ORIGINS into exact origins', () => {
    assert.deepEqual(
      loadConfig({ PRESENCE_ALLOWED_ORIGINS: 'HTTPS://App.Example.com:443/, capacitor://localhost' }, []).allowedOrigins,
      ['https://app.example.com', 'capacitor://localhost'],
    );
    assert.deepEqual(loadConfig({ PRESENCE_ALLOWED_ORIGINS: '*' }, []).allowedOrigins, []);
    assert.deepEqual(loadConfig({ PRESENCE_ALLOWED_ORIGINS: '' }, []).allowedOrigins, []);
    assertConfigError({ PRESENCE_ALLOWED_ORIGINS: 'https://app.example.com/login' }, 'PRESENCE_ALLOWED_ORIGINS');
    assertConfigError({ PRESENCE_ALLOWED_ORIGINS: 'app.example.com' }, 'PRESENCE_ALLOWED_ORIGINS');
    assertConfigError({ PRESENCE_ALLOWED_ORIGINS: 'https://*.example.com' }, 'PRESENCE_ALLOWED_ORIGINS');
    assertConfigError({ PRESENCE_ALLOWED_ORIGINS: '*,https://a.example.com' }, 'PRESENCE_ALLOWED_ORIGINS');
  });
});

describe('PRESENCE_STATES', () => {
  it('defaults to DEFAULT_STATES when unset, none when empty', () => {
    assert.deepEqual(loadConfig({}, []).states, DEFAULT_STATES);
    assert.deepEqual(loadConfig({ PRESENCE_STATES: '' }, []).states, {});
    assert.deepEqual(loadConfig({ PRESENCE_STATES: '  ' }, []).states, {});
  });

  it('parses name:base pairs', () => {
    assert.deepEqual(loadConfig({ PRESENCE_STATES: 'in-call:busy,presenting:busy,lunch:away' }, []).states, {
      'in-call': 'busy',
      presenting: 'busy',
      lunch: 'away',
    });
    assert.deepEqual(loadConfig({ PRESENCE_STATES: ' available.v2 : Online , ' }, []).states, {
      'available.v2': 'online',
    });
  });

  it('rejects bad entries', () => {
    assertConfigError({ PRESENCE_STATES: 'lunch' }, 'PRESENCE_STATES', [], /name:base/);
    assertConfigError({ PRESENCE_STATES: 'lunch:offline' }, 'PRESENCE_STATES', [], /online, away or busy/);
    assertConfigError({ PRESENCE_STATES: 'lunch:invisible' }, 'PRESENCE_STATES');
    assertConfigError({ PRESENCE_STATES: 'in call:busy' }, 'PRESENCE_STATES');
    assertConfigError({ PRESENCE_STATES: `${'x'.repeat(65)}:busy` }, 'PRESENCE_STATES');
    assertConfigError({ PRESENCE_STATES: ':busy' }, 'PRESENCE_STATES');
    assertConfigError({ PRESENCE_STATES: 'lunch:away,lunch:busy' }, 'PRESENCE_STATES', [], /twice/);
  });
});

describe('auth configuration', () => {
  it('refuses production without any auth, naming PRESENCE_JWT_SECRET', () => {
    assertConfigError({ NODE_ENV: 'production' }, 'PRESENCE_JWT_SECRET', [], /production refuses to start without auth/);
    assert.equal(loadConfig({ NODE_ENV: 'production', PRESENCE_API_KEY: 'k'.repeat(32) }, []).production, true);
    assert.equal(loadConfig({ NODE_ENV: 'production', PRESENCE_JWT_SECRET: 's'.repeat(32) }, []).production, true);
    assert.equal(loadConfig({ NODE_ENV: 'development' }, []).production, false);
  });

  it('accepts RSA and EC public keys, also with \\n escapes and next to a secret', () => {
    for (const type of ['rsa', 'ec'] as const) {
      const pem = spkiPem(type);
      assert.equal(loadConfig({ PRESENCE_JWT_PUBLIC_KEY: pem }, []).auth.jwtPublicKey, pem);
      const escaped = pem.trim().replace(/\n/g, '\\n');
      assert.equal(loadConfig({ PRESENCE_JWT_PUBLIC_KEY: escaped }, []).auth.jwtPublicKey, pem);
      const both = loadConfig({ PRESENCE_JWT_PUBLIC_KEY: pem, PRESENCE_JWT_SECRET: 's'.repeat(32) }, []).auth;
      assert.equal(both.jwtPublicKey, pem);
      assert.equal(both.jwtSecret, 's'.repeat(32));
      // A public key alone is enough auth for production.
      assert.equal(loadConfig({ NODE_ENV: 'production', PRESENCE_JWT_PUBLIC_KEY: pem }, []).production, true);
    }
  });

  it('rejects garbage, private and non-RSA/EC keys', () => {
    assertConfigError({ PRESENCE_JWT_PUBLIC_KEY: 'not a key' }, 'PRESENCE_JWT_PUBLIC_KEY');
    assertConfigError(
      { PRESENCE_JWT_PUBLIC_KEY: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n' },
      'PRESENCE_JWT_PUBLIC_KEY',
    );
    assertConfigError({ PRESENCE_JWT_PUBLIC_KEY: spkiPem('ed25519') }, 'PRESENCE_JWT_PUBLIC_KEY', [], /RSA or EC/);
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    assertConfigError({ PRESENCE_JWT_PUBLIC_KEY: privatePem }, 'PRESENCE_JWT_PUBLIC_KEY', [], /not a private key/);
  });

  it('reads PRESENCE_JWT_PUBLIC_KEY_FILE', () => {
    const dir = mkdtempSync(join(tmpdir(), 'presence-config-'));
    try {
      const pem = spkiPem('rsa');
      const file = join(dir, 'jwt.pub');
      writeFileSync(file, pem);
      assert.equal(loadConfig({ PRESENCE_JWT_PUBLIC_KEY_FILE: file }, []).auth.jwtPublicKey, pem);

      const garbage = join(dir, 'garbage.pem');
      writeFileSync(garbage, 'hello');
      assertConfigError({ PRESENCE_JWT_PUBLIC_KEY_FILE: garbage }, 'PRESENCE_JWT_PUBLIC_KEY_FILE');
      assertConfigError({ PRESENCE_JWT_PUBLIC_KEY_FILE: join(dir, 'missing.pem') }, 'PRESENCE_JWT_PUBLIC_KEY_FILE', [], /ENOENT/);
      assertConfigError(
        { PRESENCE_JWT_PUBLIC_KEY_FILE: file, PRESENCE_JWT_PUBLIC_KEY: pem },
        'PRESENCE_JWT_PUBLIC_KEY_FILE',
        [],
        /only one/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('warns about weak but legal settings', () => {
    assert.deepEqual(configWarnings(DEFAULT_CONFIG), []);
    const weak = loadConfig({ PRESENCE_JWT_SECRET: 'short', PRESENCE_API_KEY: 'tiny' }, []);
    const warnings = configWarnings(weak);
    assert.ok(warnings.some((w) => w.includes('PRESENCE_JWT_SECRET')));
    assert.ok(warnings.some((w) => w.includes('PRESENCE_API_KEY')));
  });
});

describe('webhook configuration', () => {
  const secret = 'w'.repeat(32);
  const base = { PRESENCE_WEBHOOK_URLS: 'https://api.example.com/hooks/presence', PRESENCE_WEBHOOK_SECRET: secret };

  it('is absent without PRESENCE_WEBHOOK_URLS, and defaults every setting but the URLs and secrets', () => {
    assert.equal(loadConfig({}).webhooks, undefined);
    assert.deepEqual(loadConfig(base).webhooks, {
      urls: ['https://api.example.com/hooks/presence'],
      secrets: [secret],
      events: ['user.online', 'user.offline', 'user.status', 'user.meta', 'channel.member_joined', 'channel.member_left', 'channel.occupied', 'channel.vacated'],
      maxBacklog: 10_000,
      timeoutMs: 10_000,
      giveUpMs: 3_600_000,
    });
  });

  it('reads every webhook variable', () => {
    const config = loadConfig({
      PRESENCE_WEBHOOK_URLS: ' https://a.example.com/hook?token=t1 , http://127.0.0.1:3000/presence ,',
      PRESENCE_WEBHOOK_SECRET: `${'n'.repeat(40)}, ${secret}`,
      PRESENCE_WEBHOOK_EVENTS: 'typing.*, user.offline,channel.member_updated',
      PRESENCE_WEBHOOK_MAX_BACKLOG: '500',
      PRESENCE_WEBHOOK_TIMEOUT_MS: '2500',
      PRESENCE_WEBHOOK_GIVE_UP_MS: '60000',
    });
    assert.deepEqual(config.webhooks, {
      urls: ['https://a.example.com/hook?token=t1', 'http://127.0.0.1:3000/presence'],
      secrets: ['n'.repeat(40), secret],
      events: ['user.offline', 'channel.member_updated', 'typing.started', 'typing.stopped'],
      maxBacklog: 500,
      timeoutMs: 2500,
      giveUpMs: 60_000,
    });
    assert.equal(loadConfig({ ...base, PRESENCE_WEBHOOK_EVENTS: '*' }).webhooks!.events.length, 11);
  });

  it('refuses secrets shorter than 32 bytes, a missing secret, and never echoes a secret', () => {
    assertConfigError({ ...base, PRESENCE_WEBHOOK_SECRET: 'short-secret' }, 'PRESENCE_WEBHOOK_SECRET', [], /secret 1 is 12 bytes; each secret must be at least 32 bytes/);
    assertConfigError({ ...base, PRESENCE_WEBHOOK_SECRET: `${secret},${'x'.repeat(31)}` }, 'PRESENCE_WEBHOOK_SECRET', [], /secret 2 is 31 bytes/);
    assertConfigError({ PRESENCE_WEBHOOK_URLS: base.PRESENCE_WEBHOOK_URLS }, 'PRESENCE_WEBHOOK_SECRET', [], /must be set with PRESENCE_WEBHOOK_URLS/);
    assertConfigError({ ...base, PRESENCE_WEBHOOK_SECRET: ' , ' }, 'PRESENCE_WEBHOOK_SECRET', [], /must be set|at least one secret/);
    try {
      loadConfig({ ...base, PRESENCE_WEBHOOK_SECRET: 'hunter2-is-not-long-enough' });
      assert.fail('refused');
    } catch (error) {
      assert.ok(!(error as Error).message.includes('hunter2'), (error as Error).message);
    }
    // 32 bytes of UTF-8 are enough, however few characters.
    assert.ok(loadConfig({ ...base, PRESENCE_WEBHOOK_SECRET: 'é'.repeat(16) }).webhooks);
  });

  it('refuses bad URLs (without showing a query string), unknown event types, and settings without URLs', () => {
    assertConfigError({ ...base, PRESENCE_WEBHOOK_URLS: 'ftp://example.com/x' }, 'PRESENCE_WEBHOOK_URLS', [], /must be an http:\/\/ or https:\/\/ URL/);
    assertConfigError({ ...base, PRESENCE_WEBHOOK_URLS: 'example.com/hook' }, 'PRESENCE_WEBHOOK_URLS', [], /is not a URL/);
    assertConfigError({ ...base, PRESENCE_WEBHOOK_URLS: 'https://user:pw@example.com/hook' }, 'PRESENCE_WEBHOOK_URLS', [], /must not carry credentials/);
    assertConfigError({ ...base, PRESENCE_WEBHOOK_URLS: 'https://example.com/hook#x' }, 'PRESENCE_WEBHOOK_URLS', [], /#fragment/);
    assertConfigError({ ...base, PRESENCE_WEBHOOK_URLS: 'https://example.com/a,https://example.com/a' }, 'PRESENCE_WEBHOOK_URLS', [], /twice/);
    assertConfigError({ ...base, PRESENCE_WEBHOOK_URLS: 'https://example.com/a?t=1,https://example.com/a?t=2' }, 'PRESENCE_WEBHOOK_URLS', [], /twice with different query strings/);
    assert.throws(
      () => loadConfig({ ...base, PRESENCE_WEBHOOK_URLS: 'https://example.com/a?token=topsecret#x' }),
      (error: Error) => !error.message.includes('topsecret') && error.message.includes('?…'),
    );
    assertConfigError({ ...base, PRESENCE_WEBHOOK_EVENTS: 'user.online,user.away' }, 'PRESENCE_WEBHOOK_EVENTS', [], /"user.away" is not a webhook event type/);
    assertConfigError({ ...base, PRESENCE_WEBHOOK_EVENTS: 'presence.*' }, 'PRESENCE_WEBHOOK_EVENTS');
    assertConfigError({ ...base, PRESENCE_WEBHOOK_MAX_BACKLOG: '0' }, 'PRESENCE_WEBHOOK_MAX_BACKLOG');
    assertConfigError({ ...base, PRESENCE_WEBHOOK_TIMEOUT_MS: '10s' }, 'PRESENCE_WEBHOOK_TIMEOUT_MS');
    assertConfigError({ ...base, PRESENCE_WEBHOOK_GIVE_UP_MS: '-1' }, 'PRESENCE_WEBHOOK_GIVE_UP_MS');
    for (const name of ['PRESENCE_WEBHOOK_SECRET', 'PRESENCE_WEBHOOK_EVENTS', 'PRESENCE_WEBHOOK_MAX_BACKLOG', 'PRESENCE_WEBHOOK_TIMEOUT_MS', 'PRESENCE_WEBHOOK_GIVE_UP_MS']) {
      assertConfigError({ [name]: name === 'PRESENCE_WEBHOOK_SECRET' ? secret : name === 'PRESENCE_WEBHOOK_EVENTS' ? 'user.*' : '5' }, name, [], /PRESENCE_WEBHOOK_URLS is not/);
    }
  });

  it('takes webhooks with REDIS_URL or REDIS_CLUSTER_NODES: delivered cluster-wide (docs/webhooks.md#clusters)', () => {
    assert.deepEqual(loadConfig({ ...base, REDIS_URL: 'redis://127.0.0.1:6379' }).webhooks, loadConfig(base).webhooks);
    assert.deepEqual(loadConfig({ ...base, REDIS_CLUSTER_NODES: '127.0.0.1:7000' }).webhooks, loadConfig(base).webhooks);
  });

  it('warns in production about plain http:// to another host and a give-up age under an hour', () => {
    const production = { ...base, NODE_ENV: 'production', PRESENCE_API_KEY: 'k'.repeat(32), PRESENCE_ALLOWED_ORIGINS: 'https://app.example.com' };
    assert.deepEqual(configWarnings(loadConfig(production)), []);
    assert.deepEqual(configWarnings(loadConfig({ ...production, PRESENCE_WEBHOOK_URLS: 'http://localhost:3000/hook' })), []);
    assert.match(configWarnings(loadConfig({ ...production, PRESENCE_WEBHOOK_URLS: 'http://hooks.internal/presence' })).join('\n'), /plain http:\/\/ URLs/);
    assert.match(configWarnings(loadConfig({ ...production, PRESENCE_WEBHOOK_GIVE_UP_MS: '60000' })).join('\n'), /PRESENCE_WEBHOOK_GIVE_UP_MS is below an hour/);
    assert.deepEqual(configWarnings(loadConfig({ ...base, PRESENCE_WEBHOOK_GIVE_UP_MS: '60000' })), [], 'outside production (tests shorten it)');
  });
});

describe('Pusher endpoint configuration', () => {
  const base = { PRESENCE_PUSHER_APP_ID: '1234', PRESENCE_PUSHER_KEY: 'app-key', PRESENCE_PUSHER_SECRET: 'a-secret-of-20-chars' };

  it('is absent without the variables, and on with all three (webhooks optional)', () => {
    assert.equal(loadConfig({}).pusher, undefined);
    assert.deepEqual(loadConfig(base).pusher, { appId: '1234', key: 'app-key', secret: 'a-secret-of-20-chars', webhookUrls: [] });
    assert.deepEqual(loadConfig({ ...base, PRESENCE_PUSHER_WEBHOOK_URLS: 'https://a.example.com/pusher' }).pusher?.webhookUrls, ['https://a.example.com/pusher']);
  });

  it('names what is missing, malformed or in the way', () => {
    assertConfigError({ PRESENCE_PUSHER_APP_ID: '1' }, 'PRESENCE_PUSHER_KEY', [], /needs an app id, a key and a secret/);
    assertConfigError({ ...base, PRESENCE_PUSHER_SECRET: '' }, 'PRESENCE_PUSHER_SECRET');
    assertConfigError({ ...base, PRESENCE_PUSHER_KEY: 'a/b' }, 'PRESENCE_PUSHER_KEY', [], /A-Z a-z 0-9/);
    assertConfigError({ ...base, PRESENCE_PUSHER_APP_ID: 'x y' }, 'PRESENCE_PUSHER_APP_ID');
    assertConfigError({ ...base, PRESENCE_PUSHER_SECRET: 'app-key' }, 'PRESENCE_PUSHER_SECRET', [], /key is public/);
    assertConfigError({ PRESENCE_PUSHER_WEBHOOK_URLS: 'https://a.example.com/x' }, 'PRESENCE_PUSHER_WEBHOOK_URLS');
    assertConfigError({ ...base, PRESENCE_PUSHER_WEBHOOK_URLS: 'ftp://a.example.com/x' }, 'PRESENCE_PUSHER_WEBHOOK_URLS');
  });

  it('runs in a cluster: REDIS_URL or REDIS_CLUSTER_NODES with the endpoint is accepted', () => {
    assert.equal(loadConfig({ ...base, REDIS_URL: 'redis://127.0.0.1:6390' }).pusher?.appId, base.PRESENCE_PUSHER_APP_ID);
    assert.equal(loadConfig({ ...base, REDIS_CLUSTER_NODES: '127.0.0.1:7000' }).pusher?.appId, base.PRESENCE_PUSHER_APP_ID);
  });

  it('takes Pusher webhooks in a cluster too (delivered once per cluster, docs/pusher.md#clusters)', () => {
    const urls = { PRESENCE_PUSHER_WEBHOOK_URLS: 'https://a.example.com/x' };
    assert.deepEqual(loadConfig({ ...base, ...urls, REDIS_URL: 'redis://127.0.0.1:6390' }).pusher?.webhookUrls, ['https://a.example.com/x']);
    assert.deepEqual(loadConfig({ ...base, ...urls, REDIS_CLUSTER_NODES: '127.0.0.1:7000' }).pusher?.webhookUrls, ['https://a.example.com/x']);
  });

  it('warns about a short secret', () => {
    const warnings = configWarnings(loadConfig({ ...base, PRESENCE_PUSHER_SECRET: 'short' }));
    assert.ok(warnings.some((w) => w.includes('PRESENCE_PUSHER_SECRET')));
  });
});

describe('command-line flags', () => {
  it('override the environment, in both forms', () => {
    const config = loadConfig(
      { PORT: '9000', HOST: '0.0.0.0', LOG_LEVEL: 'info', PRESENCE_OFFLINE_DELAY_MS: '1000', PRESENCE_IDLE_TIMEOUT_MS: '1000' },
      ['--port', '9100', '--host=127.0.0.1', '--log-level', 'warn', '--offline-delay-ms=0', '--idle-timeout-ms', '5000'],
    );
    assert.equal(config.port, 9100);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.logLevel, 'warn');
    assert.equal(config.offlineDelayMs, 0);
    assert.equal(config.idleTimeoutMs, 5000);
  });

  it('validate flag values, naming the flag', () => {
    assertConfigError({}, '--port', ['--port', 'http'], /--port must be a non-negative integer/);
    assertConfigError({}, '--log-level', ['--log-level=loud']);
    assertConfigError({}, '--port', ['--port']);
    assertConfigError({}, '--port', ['--port', '--host', 'x'], /needs a value/);
  });

  it('rejects unknown flags and stray arguments', () => {
    assertConfigError({}, '--prot', ['--prot', '80'], /unknown option/);
    assertConfigError({}, '-p', ['-p']);
    assertConfigError({}, 'serve', ['serve'], /unexpected argument/);
  });

  it('leave --help to the caller', () => {
    assert.equal(wantsHelp(['--help']), true);
    assert.equal(wantsHelp(['--port', '1', '-h']), true);
    assert.equal(wantsHelp(['--port', '1']), false);
    assert.deepEqual(loadConfig({}, ['--help']), DEFAULT_CONFIG);
  });
});

describe('command-line flags (node:util parseArgs)', () => {
  /** The flags `--help` lists in its Options section, as written there. */
  const helpFlags = [...HELP_TEXT.split('\nEnvironment:')[0].matchAll(/^ {2}(?:-[a-z], )?(--[a-z][a-z-]*)/gm)].map((m) => m[1]);

  it('--help lists exactly the flags that are accepted', () => {
    assert.deepEqual(
      [...helpFlags].sort(),
      [...COMMAND_LINE_FLAGS.map((f) => f.flag), '--help', '--version'].sort(),
    );
  });

  it('every flag of --help is accepted, and does what its variable does', () => {
    for (const { flag, env, example } of COMMAND_LINE_FLAGS) {
      assert.ok(CONFIG_VARIABLES.includes(env), `${flag} stands for a variable loadConfig reads`);
      assert.ok(HELP_TEXT.includes(`Same as ${env} `), `--help says which variable ${flag} stands for`);
      const fromVariable = loadConfig({ [env]: example });
      assert.notDeepEqual(fromVariable, DEFAULT_CONFIG, `${env}=${example} changes something`);
      assert.deepEqual(loadConfig({}, [flag, example]), fromVariable, `${flag} ${example}`);
      assert.deepEqual(loadConfig({}, [`${flag}=${example}`]), fromVariable, `${flag}=${example}`);
    }
    for (const info of ['--help', '-h', '--version']) {
      assert.deepEqual(loadConfig({}, [info]), DEFAULT_CONFIG, `${info} is accepted (the caller acts on it)`);
    }
  });

  it('--version and --help are recognised before a --, and take no value', () => {
    assert.equal(wantsVersion(['--version']), true);
    assert.equal(wantsVersion(['--port', '1', '--version']), true);
    assert.equal(wantsVersion(['--port', '1']), false);
    assert.equal(wantsVersion(['--', '--version']), false);
    assert.equal(wantsHelp(['--', '--help']), false);
    assert.equal(wantsHelp(['--port', '--help']), true, 'a flag is not a value: this asks for help');
    assert.equal(wantsHelp(['-h']), true);
    assert.equal(wantsHelp(['--help=yes']), false);
    assertConfigError({}, '--help', ['--help=yes'], /--help takes no value/);
    assertConfigError({}, '--version', ['--version=2'], /--version takes no value/);
  });

  it('refuses what parseArgs would guess at, naming the flag', () => {
    assertConfigError({}, '--port', ['--port='], /--port needs a value \(--port N\)/);
    assertConfigError({}, '--data-dir', ['--data-dir', '--port', '1'], /--data-dir needs a value/);
    assertConfigError({}, '--bogus', ['--bogus=1'], /unknown option --bogus \(see --help\)/);
    assertConfigError({}, '-x', ['-hx'], /unknown option -x/);
    assertConfigError({}, 'extra', ['--port', '1', '--', 'extra'], /unexpected argument "extra"/);
    assert.equal(loadConfig({}, ['--port', '1', '--']).port, 1, 'a trailing -- is harmless');
    assert.equal(loadConfig({}, ['--port', '1', '--port', '2']).port, 2, 'the last one wins');
    assertConfigError({}, '--idle-timeout-ms', ['--idle-timeout-ms', '-5'], /--idle-timeout-ms must be a positive integer \(got "-5"\)/);
  });
});

describe('HELP_TEXT', () => {
  it('lists exactly the variables of CONFIG_VARIABLES in its Environment section', () => {
    const environment = HELP_TEXT.split('\nEnvironment:\n')[1];
    const listed = [...environment.matchAll(/^ {2}([A-Z][A-Z0-9_]*) \(default: /gm)].map((m) => m[1]);
    assert.deepEqual(listed, [...CONFIG_VARIABLES]);
  });

  it('mentions every variable loadConfig reads, and nothing it does not', () => {
    const read = new Set<string>();
    const env = new Proxy({} as Record<string, string | undefined>, {
      get(_target, key) {
        if (typeof key === 'string') read.add(key);
        return undefined;
      },
    });
    loadConfig(env, []);
    assert.deepEqual([...read].sort(), [...CONFIG_VARIABLES].sort());
    for (const name of CONFIG_VARIABLES) {
      assert.ok(HELP_TEXT.includes(name), `HELP_TEXT should mention ${name}`);
    }
  });

  it('names the key variables and flags literally, with defaults', () => {
    for (const text of [
      'PORT (default: 8080)',
      'PRESENCE_OFFLINE_DELAY_MS (default: 30000)',
      'PRESENCE_IDLE_TIMEOUT_MS (default: 300000)',
      'PRESENCE_JWT_PUBLIC_KEY_FILE',
      'PRESENCE_STATES (default: in-call:busy,presenting:busy,focus:busy,lunch:away)',
      'PRESENCE_MAX_FRAME_BYTES (default: 65536)',
      'REDIS_URL',
      '--port N',
      '--offline-delay-ms N',
      '--help',
    ]) {
      assert.ok(HELP_TEXT.includes(text), `HELP_TEXT should include ${text}`);
    }
  });
});

describe('PRESENCE_METRICS_PORT and LOG_FORMAT', () => {
  it('PRESENCE_METRICS_PORT is unset by default, takes 0-65535 or --metrics-port, and must differ from PORT', () => {
    assert.equal(loadConfig({}, []).metricsPort, undefined);
    assert.equal(loadConfig({ PRESENCE_METRICS_PORT: '0' }, []).metricsPort, 0);
    assert.equal(loadConfig({ PORT: '0', PRESENCE_METRICS_PORT: '0' }, []).metricsPort, 0, 'two free ports');
    assert.equal(loadConfig({ PRESENCE_METRICS_PORT: '9100' }, ['--metrics-port', '9200']).metricsPort, 9200, 'the flag wins');
    assert.equal(loadConfig({}, ['--metrics-port=9300']).metricsPort, 9300);
    assertConfigError({ PRESENCE_METRICS_PORT: 'abc' }, 'PRESENCE_METRICS_PORT', [], /PRESENCE_METRICS_PORT must be a non-negative integer \(got "abc"\)/);
    assertConfigError({ PRESENCE_METRICS_PORT: '70000' }, 'PRESENCE_METRICS_PORT', [], /from 0 to 65535/);
    assertConfigError({ PORT: '9000', PRESENCE_METRICS_PORT: '9000' }, 'PRESENCE_METRICS_PORT', [], /must differ from PORT/);
    assertConfigError({ PRESENCE_METRICS_PORT: '8080' }, 'PRESENCE_METRICS_PORT', [], /must differ from PORT \(both are 8080\)/);
    assertConfigError({}, '--metrics-port', ['--metrics-port', '-1']);
  });

  it('LOG_FORMAT takes json (default) or pretty, in any case; anything else is refused naming the variable', () => {
    assert.equal(loadConfig({}, []).logFormat, 'json');
    assert.equal(loadConfig({ LOG_FORMAT: ' PRETTY ' }, []).logFormat, 'pretty');
    assert.equal(loadConfig({ LOG_FORMAT: 'pretty' }, ['--log-format=json']).logFormat, 'json');
    for (const bad of ['text', 'logfmt', 'json,pretty']) {
      assertConfigError({ LOG_FORMAT: bad }, 'LOG_FORMAT', [], /LOG_FORMAT must be one of json, pretty/);
    }
    assertConfigError({}, '--log-format', ['--log-format', 'yaml'], /--log-format must be one of json, pretty \(got "yaml"\)/);
    assert.ok(HELP_TEXT.includes('--metrics-port N') && HELP_TEXT.includes('--log-format F'));
    assert.ok(CONFIG_VARIABLES.includes('LOG_FORMAT') && CONFIG_VARIABLES.includes('PRESENCE_METRICS_PORT'));
  });
});

describe('log', () => {
  it('writes one JSON object per line with time, level, msg and fields', () => {
    const lines: string[] = [];
    const log = createLogger('info', (line) => lines.push(line));
    log.info('listening', { port: 8080 });
    assert.equal(lines.length, 1);
    assert.ok(!lines[0].includes('\n'));
    const record = JSON.parse(lines[0]);
    assert.equal(record.level, 'info');
    assert.equal(record.msg, 'listening');
    assert.equal(record.port, 8080);
    assert.equal(new Date(record.time).toISOString(), record.time);
    assert.deepEqual(Object.keys(record).slice(0, 3), ['time', 'level', 'msg']);
  });

  it('filters by level', () => {
    const lines: string[] = [];
    const log = createLogger('warn', (line) => lines.push(line));
    log.debug('a');
    log.info('b');
    log.warn('c');
    log.error('d');
    assert.deepEqual(lines.map((l) => JSON.parse(l).level), ['warn', 'error']);
    const silent: string[] = [];
    const quiet = createLogger('silent', (line) => silent.push(line));
    quiet.error('nothing');
    assert.deepEqual(silent, []);
  });

  it('adds child fields, lets call fields win and protects the envelope', () => {
    const lines: string[] = [];
    const log = createLogger('debug', (line) => lines.push(line)).child({ node: 'n1', a: 1 }).child({ session: 's1' });
    log.debug('hello', { a: 2, msg: 'sneaky' });
    const record = JSON.parse(lines[0]);
    assert.equal(record.node, 'n1');
    assert.equal(record.session, 's1');
    assert.equal(record.a, 2);
    assert.equal(record.msg, 'hello');
    assert.equal(record['field.msg'], 'sneaky');
  });

  it('serializes errors and survives unserializable fields', () => {
    const lines: string[] = [];
    const log = createLogger('info', (line) => lines.push(line));
    const err = Object.assign(new TypeError('boom'), { code: 'E_BOOM' });
    const cyclic: Record<string, unknown> = { name: 'x' };
    cyclic.self = cyclic;
    log.error('failed', { err, big: 10n, cyclic });
    const record = JSON.parse(lines[0]);
    assert.equal(record.err.name, 'TypeError');
    assert.equal(record.err.message, 'boom');
    assert.equal(record.err.code, 'E_BOOM');
    assert.match(record.err.stack, /TypeError: boom/);
    assert.equal(record.big, '10');
    assert.equal(record.cyclic.self, '[Circular]');
  });

  it('has a silent logger', () => {
    silentLogger.info('x');
    assert.equal(silentLogger.child({ a: 1 }), silentLogger);
  });
});
