/**
 * The protocol schemas (`@presence/protocol/schema`) as the one source of every shape: the
 * generated documents are committed and valid, the OpenAPI document covers every route and a real
 * server's answers match it, every frame a real server sends matches the protocol's JSON Schema,
 * the decoders answer exactly as the hand-written ones they replaced, and the TypeScript types are
 * the schemas' types.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { CLIENT_MESSAGE_TYPES, ERROR_CODES, type ClientMessage, type ServerMessage } from '@presence/protocol';
import * as S from '@presence/protocol/schema';
import type { Static } from '@sinclair/typebox';
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- documents are broken on purpose below
type Any = any;
import { ROUTES } from '../src/http/api.js';
import { decodeCommand } from '../src/presence/commands.js';
import { SCHEMA_DIR, schemaDocuments } from '../scripts/schema.js';
import { decodeCommand as legacyDecodeCommand } from './support/legacy-decoder.js';
import { TestClient, httpJson, startTestServer, type HttpAnswer } from './support/harness.js';

type Json = Record<string, unknown>;

const SECRET = 'schema-test-secret-of-at-least-32-bytes!';
const API_KEY = 'schema-test-api-key-0123456789';

function committed(name: string): string {
  return readFileSync(new URL(name, `file://${SCHEMA_DIR}`), 'utf8');
}

const generated = schemaDocuments();
const openapi = JSON.parse(generated['openapi.json']) as Json & { paths: Record<string, Record<string, Json>>; components: Json };
const protocol = JSON.parse(generated['protocol.schema.json']) as Json & { $defs: Record<string, Json> };

// ---------------------------------------------------------------------------------------------
// Type level: the types of the main entry are the schemas' types.
// ---------------------------------------------------------------------------------------------

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type MutuallyAssignable<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
function typeTest<T extends true>(): T | undefined {
  return undefined;
}
typeTest<MutuallyAssignable<ClientMessage, Static<typeof S.ClientMessage>>>();
typeTest<MutuallyAssignable<ServerMessage, Static<typeof S.ServerMessage>>>();
typeTest<Equal<ClientMessage['type'], keyof typeof S.COMMANDS>>();
typeTest<Equal<(typeof CLIENT_MESSAGE_TYPES)[number], keyof typeof S.COMMANDS>>();
typeTest<Equal<Static<typeof S.ErrorCode>, (typeof ERROR_CODES)[number]>>();

describe('the schemas', () => {
  test('define every command type of the protocol, in CLIENT_MESSAGE_TYPES order', () => {
    assert.deepEqual(Object.keys(S.COMMANDS), [...CLIENT_MESSAGE_TYPES]);
    const union = protocol.$defs.ClientMessage.anyOf as { $ref: string }[];
    assert.deepEqual(
      union.map((member) => (protocol.$defs[member.$ref.replace('#/$defs/', '')].properties as Json & { type: { const: string } }).type.const),
      [...CLIENT_MESSAGE_TYPES],
    );
  });

  test('list every error code once, in the error body and the error frame', () => {
    assert.deepEqual(protocol.$defs.ErrorCode.enum, ERROR_CODES);
    const components = openapi.components as { schemas: Record<string, Json> };
    assert.deepEqual(components.schemas.ErrorCode.enum, ERROR_CODES);
  });

  test('the committed documents are what `npm run schema` writes', () => {
    for (const [name, text] of Object.entries(generated)) {
      assert.equal(committed(name), text, `docs/schema/${name} is stale: run npm run schema`);
    }
  });

  test('the protocol JSON Schema compiles as JSON Schema 2020-12 and tells frames apart', () => {
    const ajv = new Ajv2020({ strict: true, allErrors: true, validateFormats: false });
    const validate = ajv.compile(protocol);
    const valid = [
      { type: 'join', channel: 'room', ref: 1 },
      { type: 'status', status: 'busy', state: null, message: 'hi', expiresAt: null, visibility: 'contacts' },
      { type: 'pong', serverTime: '2026-01-01T00:00:00.000Z' },
      [{ type: 'typing', channel: 'room', userId: 'u', typing: true }],
    ];
    const invalid = [{ type: 'join' }, { type: 'status', status: 'offline' }, { type: 'nope' }, { type: 'ping', ref: 'r'.repeat(65) }];
    for (const frame of valid) assert.ok(validate(frame), `${JSON.stringify(frame)}: ${ajv.errorsText(validate.errors)}`);
    for (const frame of invalid) assert.ok(!validate(frame), `${JSON.stringify(frame)} must not match`);
  });
});

// ---------------------------------------------------------------------------------------------
// The OpenAPI document
// ---------------------------------------------------------------------------------------------

describe('the OpenAPI document', () => {
  test('is a valid OpenAPI 3.1 document, and the validator does catch a broken one', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(openapi));
    assert.deepEqual(result, { valid: true });
    assert.equal(validator.version, '3.1');

    // The validator can fail: an operation response without its required description, a security
    // scheme of an unknown type, a parameter in no valid place.
    const breakages: Array<(doc: Any) => void> = [
      (doc) => (doc.paths['/healthz'].get.responses['200'] = {}),
      (doc) => (doc.components.securitySchemes.apiKey.type = 'bearer'),
      (doc) => (doc.paths['/realtime/users/{id}/presence'].get.parameters[0].in = 'body'),
    ];
    for (const breakage of breakages) {
      const broken = structuredClone(openapi);
      breakage(broken);
      assert.equal((await new Validator().validate(broken)).valid, false, String(breakage));
    }
  });

  test('its schemas are valid JSON Schema 2020-12 (the OpenAPI validator does not look inside them)', () => {
    const ajv = new Ajv2020({ strict: true });
    const schemas = (openapi.components as { schemas: Record<string, Json> }).schemas;
    for (const [name, schema] of Object.entries(schemas)) {
      assert.ok(ajv.validateSchema(schema), `${name}: ${ajv.errorsText(ajv.errors)}`);
    }
    assert.equal(ajv.validateSchema({ ...schemas.UserPresence, type: 'objekt' }), false, 'the check can fail');
  });

  test('documents every route of the API with its method, and nothing else but the WebSocket', () => {
    const documented = new Set(Object.keys(openapi.paths));
    for (const template of Object.values(ROUTES)) {
      const path = template.replace(/:([A-Za-z]+)/g, '{$1}');
      assert.ok(documented.has(path), `${template} is documented`);
      documented.delete(path);
    }
    assert.deepEqual([...documented], ['/realtime']);
    assert.ok(openapi.paths[ROUTES.updatePresence].post, 'update is a POST');
    assert.ok(openapi.paths[ROUTES.queryPresence].post, 'query is a POST');
    assert.ok(openapi.paths['/realtime/users/{id}/presence'].get, 'user presence is a GET');
  });

  test('declares the API key and the user JWT as bearer schemes, and which routes are public', () => {
    const schemes = (openapi.components as { securitySchemes: Record<string, Json> }).securitySchemes;
    assert.deepEqual(Object.keys(schemes).sort(), ['apiKey', 'userToken']);
    assert.equal(schemes.apiKey.type, 'http');
    assert.equal(schemes.apiKey.scheme, 'bearer');
    assert.equal(schemes.userToken.scheme, 'bearer');
    assert.equal(schemes.userToken.bearerFormat, 'JWT');
    const security = (path: string) => Object.values(openapi.paths[path])[0].security;
    for (const path of [ROUTES.health, ROUTES.ready, ROUTES.metrics, ROUTES.openapi]) assert.deepEqual(security(path), [], `${path} is public`);
    assert.deepEqual(security(ROUTES.adminStats), [{ apiKey: [] }]);
    assert.deepEqual(security(ROUTES.updatePresence), [{ apiKey: [] }, { userToken: [] }]);
  });
});

// ---------------------------------------------------------------------------------------------
// A real server against the documents
// ---------------------------------------------------------------------------------------------

describe('a real server', () => {
  let server: Awaited<ReturnType<typeof startTestServer>>;
  const clients: TestClient[] = [];
  const ajv = new Ajv2020({ strict: false, validateFormats: false });
  ajv.addSchema(openapi, 'openapi');
  ajv.addSchema(protocol);

  /** The response schema the document gives for this path, method and status. */
  function responseSchema(path: string, method: string, status: number): ValidateFunction {
    const operation = openapi.paths[path]?.[method] as { responses: Record<string, Json> } | undefined;
    assert.ok(operation, `${method} ${path} is documented`);
    const response = operation.responses[String(status)] as { content?: Record<string, { schema: Json }> } | undefined;
    assert.ok(response?.content?.['application/json'], `${method} ${path} documents a JSON ${status}`);
    const pointer = `openapi#/paths/${path.replace(/~/g, '~0').replace(/\//g, '~1')}/${method}/responses/${status}/content/application~1json/schema`;
    const validate = ajv.getSchema(pointer);
    assert.ok(validate, `schema at ${pointer}`);
    return validate;
  }

  function assertMatches(answer: HttpAnswer, path: string, method: string): void {
    const validate = responseSchema(path, method, answer.status);
    assert.ok(validate(answer.body), `${method} ${path} ${answer.status}: ${ajv.errorsText(validate.errors)} in ${answer.text}`);
  }

  async function token(sub: string): Promise<string> {
    return new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(sub)
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(SECRET));
  }

  before(async () => {
    server = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY } });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.shutdown();
  });

  test('serves the OpenAPI document without credentials', async () => {
    const answer = await httpJson(server, ROUTES.openapi);
    assert.equal(answer.status, 200);
    assert.match(answer.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(answer.body, openapi);
    const foreign = await fetch(`${server.url}${ROUTES.openapi}`, { headers: { origin: 'https://elsewhere.example' } });
    assert.equal(foreign.status, 200, 'documentation refuses no Origin');
    // The other /realtime/ routes still need credentials.
    assert.equal((await httpJson(server, '/realtime/users/alice/presence')).status, 401);
  });

  test('answers every route as the document says', async () => {
    const alice = await TestClient.connect(server, { token: await token('alice'), device: 'web' });
    clients.push(alice);
    assert.equal((await alice.request({ type: 'join', channel: 'doc:1', meta: { cursor: { x: 1 } } })).type, 'ack');
    await alice.request({ type: 'status', status: 'busy', message: 'In a call' });

    const key = { bearer: API_KEY };
    assertMatches(await httpJson(server, '/realtime/channels/doc%3A1/presence?limit=10', key), '/realtime/channels/{id}/presence', 'get');
    assertMatches(await httpJson(server, '/realtime/channels/empty/presence', key), '/realtime/channels/{id}/presence', 'get');
    assertMatches(await httpJson(server, '/realtime/users/alice/presence', key), '/realtime/users/{id}/presence', 'get');
    assertMatches(await httpJson(server, '/realtime/users/nobody/presence', key), '/realtime/users/{id}/presence', 'get');
    assertMatches(await httpJson(server, ROUTES.queryPresence, { ...key, body: { userIds: ['alice', 'bob'] } }), ROUTES.queryPresence, 'post');
    const update = await httpJson(server, ROUTES.updatePresence, {
      ...key,
      body: { userId: 'bob', status: 'away', state: null, message: 'back soon', meta: { name: 'Bob' }, visibility: 'contacts', contacts: ['alice'] },
    });
    assert.equal(update.status, 200);
    assertMatches(update, ROUTES.updatePresence, 'post');
    const own = await httpJson(server, ROUTES.updatePresence, { bearer: await token('alice'), body: { message: null } });
    assertMatches(own, ROUTES.updatePresence, 'post');
    // Twice: the second answer has rates.
    assertMatches(await httpJson(server, ROUTES.adminStats, key), ROUTES.adminStats, 'get');
    assertMatches(await httpJson(server, ROUTES.adminStats, key), ROUTES.adminStats, 'get');
    assertMatches(await httpJson(server, '/realtime/users/alice/channels', key), '/realtime/users/{id}/channels', 'get');
    assertMatches(await httpJson(server, '/realtime/users/alice/channels', { bearer: await token('alice') }), '/realtime/users/{id}/channels', 'get');
    assertMatches(await httpJson(server, '/realtime/users/nobody/channels', key), '/realtime/users/{id}/channels', 'get');
    assertMatches(await httpJson(server, `${ROUTES.onlineUsers}?limit=1`, key), ROUTES.onlineUsers, 'get');
    assertMatches(await httpJson(server, ROUTES.health), ROUTES.health, 'get');
    assertMatches(await httpJson(server, ROUTES.ready), ROUTES.ready, 'get');

    // Errors, each with a status the operation documents.
    assertMatches(await httpJson(server, '/realtime/users/alice/presence'), '/realtime/users/{id}/presence', 'get');
    assertMatches(await httpJson(server, ROUTES.updatePresence, { ...key, body: { userId: 'bob', stauts: 'away' } }), ROUTES.updatePresence, 'post');
    assertMatches(
      await httpJson(server, ROUTES.updatePresence, { bearer: await token('alice'), body: { userId: 'bob' } }),
      ROUTES.updatePresence,
      'post',
    );
    assertMatches(await httpJson(server, ROUTES.adminStats, { bearer: await token('alice') }), ROUTES.adminStats, 'get');
    assertMatches(await httpJson(server, '/realtime/users/alice/channels', { bearer: await token('bob') }), '/realtime/users/{id}/channels', 'get');
    assertMatches(await httpJson(server, ROUTES.onlineUsers, { bearer: await token('alice') }), ROUTES.onlineUsers, 'get');
    assertMatches(await httpJson(server, '/realtime/channels/bad%20name/presence', key), '/realtime/channels/{id}/presence', 'get');
    const tooMany = Array.from({ length: server.config.limits.maxQueryUsers + 1 }, (_, i) => `u${i}`);
    assertMatches(await httpJson(server, ROUTES.queryPresence, { ...key, body: { userIds: tooMany } }), ROUTES.queryPresence, 'post');
  });

  test('a 429 matches the document, which declares its Retry-After header', async () => {
    const limited = await startTestServer({ auth: { jwtSecret: SECRET, apiKey: API_KEY }, limits: { httpUserRateBurst: 1 } });
    try {
      const bearer = await token('alice');
      assert.equal((await httpJson(limited, '/realtime/users/bob/presence', { bearer })).status, 200);
      const answer = await httpJson(limited, '/realtime/users/bob/presence', { bearer });
      assert.equal(answer.status, 429);
      assertMatches(answer, '/realtime/users/{id}/presence', 'get');
      const declared = (openapi.paths['/realtime/users/{id}/presence'].get as Any).responses['429'].headers['Retry-After'];
      assert.equal(declared.schema.type, 'integer');
      assert.ok(Number(answer.headers.get('retry-after')) >= 1);
    } finally {
      await limited.shutdown();
    }
  });

  test('sends only frames the protocol JSON Schema admits', async () => {
    const serverFrame = ajv.getSchema(`${S.PROTOCOL_SCHEMA_ID}#/$defs/ServerFrame`)!;
    const frames: unknown[] = [];
    const record = (client: TestClient) => client.ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
    const carol = new TestClient(`${server.wsUrl}?${new URLSearchParams({ token: await token('carol'), status: 'away', state: 'lunch' })}`);
    record(carol);
    clients.push(carol);
    await carol.waitFor((m) => m.type === 'welcome');
    const dave = await TestClient.connect(server, { token: await token('dave') });
    record(dave);
    clients.push(dave);

    await carol.request({ type: 'join', channel: 'room', meta: { mode: 'viewing' } });
    await dave.request({ type: 'join', channel: 'room' });
    await carol.request({ type: 'watch', users: ['dave', 'nobody'] });
    await dave.request({ type: 'status', status: 'busy', state: 'in-call', message: '📞', expiresAt: new Date(Date.now() + 60_000).toISOString() });
    await dave.request({ type: 'meta', meta: { name: 'Dave' } });
    await dave.request({ type: 'channel.meta', channel: 'room', meta: { mode: 'editing' } });
    await dave.request({ type: 'typing', channel: 'room', typing: true });
    await dave.request({ type: 'typing', channel: 'room', typing: false });
    await dave.request({ type: 'activity' });
    await dave.request({ type: 'idle' });
    dave.sendRaw(JSON.stringify({ type: 'ping', ref: 'p' }));
    await dave.waitFor((m) => m.type === 'pong');
    await dave.request({ type: 'join', channel: 'bad name' });
    await dave.request({ type: 'nope' });
    await dave.request({ type: 'leave', channel: 'room' });
    await carol.request({ type: 'unwatch', users: ['dave'] });
    await carol.waitFor((m) => m.type === 'presence.leave');

    const types = new Set(frames.flatMap((frame) => (Array.isArray(frame) ? frame : [frame])).map((m) => (m as { type: string }).type));
    for (const type of ['welcome', 'presence.sync', 'presence.join', 'presence.update', 'presence.leave', 'typing', 'user.sync', 'user.update', 'ack', 'error', 'pong']) {
      assert.ok(types.has(type), `the scenario produced a ${type} frame`);
    }
    for (const frame of frames) assert.ok(serverFrame(frame), `${JSON.stringify(frame)}: ${ajv.errorsText(serverFrame.errors)}`);
  });
});

// ---------------------------------------------------------------------------------------------
// The decoders answer as the hand-written ones did
// ---------------------------------------------------------------------------------------------

function outcome(decode: (value: unknown) => unknown, value: unknown): string {
  try {
    return `ok ${JSON.stringify(decode(value))}`;
  } catch (error) {
    const { code, message } = error as { code: string; message: string };
    return `${code}: ${message}`;
  }
}

describe('the command decoder', () => {
  test('answers every frame with the code and message of the hand-written decoder it replaced', () => {
    const anyJson = fc.jsonValue({ maxDepth: 2 });
    const field = fc.oneof(
      anyJson,
      fc.constantFrom('online', 'away', 'busy', 'invisible', 'offline', 'everyone', 'contacts', 'nobody', 'room', ''),
      fc.string({ maxLength: 70 }),
      fc.array(fc.oneof(fc.string({ maxLength: 4 }), fc.integer()), { maxLength: 3 }),
      fc.constant(undefined),
    );
    const frame = fc.record(
      {
        // `members` came after the hand-written decoder; large-rooms.test.ts checks its refusals.
        type: fc.oneof(fc.constantFrom(...CLIENT_MESSAGE_TYPES.filter((t) => t !== 'members'), 'subscribe', 'PING', '__proto__', 'constructor'), anyJson),
        ref: fc.oneof(fc.integer(), fc.double(), fc.string({ maxLength: 70 }), anyJson),
        channel: field,
        meta: fc.oneof(fc.dictionary(fc.string({ maxLength: 3 }), anyJson, { maxKeys: 2 }), field),
        status: field,
        state: field,
        message: field,
        expiresAt: field,
        visibility: field,
        typing: fc.oneof(fc.boolean(), field),
        users: field,
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.oneof({ weight: 9, arbitrary: frame }, { weight: 1, arbitrary: anyJson }), (value) => {
        assert.equal(outcome(decodeCommand, value), outcome(legacyDecodeCommand, value));
      }),
      { numRuns: 20_000 },
    );
  });

  test('refuses with the same words in the HTTP API', async (t) => {
    const server = await startTestServer();
    t.after(() => server.shutdown());
    const cases: Array<[string, unknown, string, string]> = [
      [ROUTES.updatePresence, { userId: 'bob', stauts: 'away' }, 'INVALID_MESSAGE', 'Unknown field "stauts".'],
      [ROUTES.updatePresence, { userId: 'bob', status: 'sleeping' }, 'INVALID_MESSAGE', 'presence update: "status" must be one of online, away, busy, invisible, offline'],
      [ROUTES.updatePresence, { userId: 'bob', state: 5 }, 'INVALID_MESSAGE', 'presence update: "state" must be a string or null'],
      [ROUTES.updatePresence, { userId: 'bob', visibility: 'friends' }, 'INVALID_MESSAGE', 'presence update: "visibility" must be one of everyone, contacts, nobody'],
      [ROUTES.updatePresence, { userId: 'bob', meta: [] }, 'INVALID_MESSAGE', '"meta" must be a JSON object.'],
      [ROUTES.updatePresence, { userId: 'bob', contacts: ['a', 1] }, 'INVALID_MESSAGE', '"contacts" must be an array of user ids.'],
      // Development mode (no auth configured): there is no API key to name.
      [ROUTES.updatePresence, { status: 'away' }, 'INVALID_MESSAGE', '"userId" is required: with no auth configured (development mode), say which user to update.'],
      [ROUTES.updatePresence, { userId: 7, status: 'nope' }, 'INVALID_USER_ID', 'user ids must be non-empty strings of at most 128 characters'],
      [ROUTES.updatePresence, [], 'INVALID_MESSAGE', 'The request body must be a JSON object.'],
      [ROUTES.queryPresence, { userIds: 'a' }, 'INVALID_MESSAGE', '"userIds" must be an array of user ids.'],
      [ROUTES.queryPresence, { userIds: ['a', 2] }, 'INVALID_MESSAGE', '"userIds[1]" must be a string.'],
      [ROUTES.queryPresence, { userIds: ['', 2] }, 'INVALID_USER_ID', 'user ids must be non-empty strings of at most 128 characters'],
    ];
    for (const [path, body, code, message] of cases) {
      const answer = await httpJson(server, path, { body });
      assert.deepEqual(answer.body, { error: { code, message } }, JSON.stringify(body));
    }
  });

  test('a missing "userId" is blamed on the API key only when one is configured', async (t) => {
    const dev = await startTestServer();
    t.after(() => dev.shutdown());
    const devAnswer = await httpJson(dev, ROUTES.updatePresence, { body: { status: 'away' } });
    assert.equal(devAnswer.status, 400);
    const devError = (devAnswer.body as { error: { code: string; message: string } }).error;
    assert.equal(devError.code, 'INVALID_MESSAGE');
    assert.doesNotMatch(devError.message, /API key/i);
    assert.match(devError.message, /"userId" is required.*development mode/);

    const apiKey = 'schema-test-api-key-0123456789';
    const keyed = await startTestServer({ auth: { apiKey } });
    t.after(() => keyed.shutdown());
    const keyedAnswer = await httpJson(keyed, ROUTES.updatePresence, { body: { status: 'away' }, bearer: apiKey });
    assert.deepEqual(keyedAnswer.body, { error: { code: 'INVALID_MESSAGE', message: '"userId" is required with an API key.' } });
  });
});
