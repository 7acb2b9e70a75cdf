/**
 * Protocol fuzzing against a live server: real `ws` clients (and raw TCP sockets for malformed
 * WebSocket framing) on loopback throw random and mutated JSON commands, raw bytes, binary frames,
 * invalid UTF-8, deep nesting, huge numbers and prototype-pollution keys at one server.
 *
 * Every frame must be answered: a frame carrying a usable `ref` by exactly one `ack`, `pong` or
 * `error` with that ref; a frame the server cannot attribute (not JSON, not an object, binary, an
 * unusable ref) by one `error` without ref; a frame that breaks the framing or the UTF-8 rules by
 * a close with a documented close code. No error may be `INTERNAL`, nothing may be logged at
 * `error`, no rejection may go unhandled, and a well-behaved pair of clients must see correct
 * presence afterwards.
 *
 * Reproduce a failing run with `FUZZ_SEED=<seed>` (every failure message carries it); scale the
 * frame counts with `FUZZ_SCALE` (e.g. 0.1 for a quick run, 5 for a long one).
 */
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect as tcpConnect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { CLIENT_MESSAGE_TYPES, ERROR_CODES, type ServerMessage } from '@presence/protocol';
import { MemoryHub, MemoryService } from '../src/cluster/memory-service.js';
import { resolveConfig } from '../src/config/config.js';
import type { Logger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { ClusterNode, eventually } from './support/cluster-nodes.js';
import { TestClient, sleep } from './support/harness.js';

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : randomBytes(4).readUInt32LE(0);
const SCALE = process.env.FUZZ_SCALE !== undefined ? Number(process.env.FUZZ_SCALE) : 1;
const JSON_FRAMES = Math.round(100_000 * SCALE);
const RAW_WS_FRAMES = Math.round(10_000 * SCALE);
const RAW_TCP_ROUNDS = Math.max(1, Math.round(25 * SCALE));
const HANDSHAKES = Math.round(300 * SCALE);
const CLUSTER_FRAMES = Math.round(10_000 * SCALE);
const tag = `FUZZ_SEED=${SEED}`;

/** Close codes listed in docs/errors.md: the only ones a client may ever see. */
const DOCUMENTED_CLOSE_CODES: ReadonlySet<number> = (() => {
  const doc = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '../../../docs/errors.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Close codes'));
  return new Set([...section.matchAll(/^\| (\d{4}) \|/gm)].map((m) => Number(m[1])));
})();
const KNOWN_TYPES: ReadonlySet<string> = new Set(CLIENT_MESSAGE_TYPES);
const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

// ---------------------------------------------------------------------------------------------
// Seeded randomness and generators
// ---------------------------------------------------------------------------------------------

/** mulberry32: small, fast, and good enough to pick fuzz inputs reproducibly. */
class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i += 1) out[i] = this.int(256);
    return out;
  }
}

const CHANNELS = ['c0', 'c1', 'c2', 'c3', 'room:1', 'doc:42', '__proto__', 'constructor', 'toString', 'hasOwnProperty'];
const NASTY_STRINGS = [
  '',
  ' ',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  'valueOf',
  '__defineGetter__',
  'then',
  'x'.repeat(64),
  'x'.repeat(65),
  'x'.repeat(128),
  'x'.repeat(129),
  'ü',
  '😀',
  '\u0000',
  '\uD800',
  '\uDC00x',
  '\u202E',
  'a b',
  'a/b',
  '../..',
  '%2F',
  '%3A',
  'room%3A1',
  '*',
  'room:*',
  '<script>',
  "' OR 1=1 --",
  'in-call',
  'lunch',
  'online',
  'away',
  'busy',
  'invisible',
  'offline',
  'everyone',
  'contacts',
  'nobody',
  '2099-01-01T00:00:00Z',
  '2000-01-01T00:00:00Z',
  '2099-13-45T99:99:99Z',
  '2099-01-01T00:00:00',
  'null',
  'true',
  '{}',
  '[]',
];
const NUMBERS = [0, -0, 1, -1, 0.5, 1e21, -1e21, 1.7976931348623157e308, 5e-324, 2 ** 53, 2 ** 53 + 2, 2 ** 31, -(2 ** 31), 4294967296];
const TYPES_WEIGHTED = [...CLIENT_MESSAGE_TYPES.filter((t) => t !== 'logout'), 'join', 'join', 'status', 'meta', 'watch', 'typing', 'channel.meta'];
const ALPHABETS = ['abcxyz', 'ABCabc019_:.@-', ' \t\n\r"\\/{}[],:', 'üéß€😀中文\u0000\u001f\u2028\u2029\uFEFF', '\uD800\uDBFF\uDC00\uDFFF'];

class Generator {
  private nextRef = 0;
  constructor(readonly rng: Rng) {}

  freshRef(): number | string {
    this.nextRef += 1;
    return this.rng.chance(0.5) ? this.nextRef : `r${this.nextRef}`;
  }

  string(): string {
    const { rng } = this;
    if (rng.chance(0.4)) return rng.pick(NASTY_STRINGS);
    if (rng.chance(0.3)) return rng.pick(CHANNELS);
    const alphabet = rng.pick(ALPHABETS);
    const length = rng.chance(0.9) ? rng.int(24) : rng.int(400);
    let out = '';
    for (let i = 0; i < length; i += 1) out += alphabet[rng.int(alphabet.length)];
    return out;
  }

  number(): number {
    return this.rng.chance(0.5) ? this.rng.pick(NUMBERS) : (this.rng.next() - 0.5) * 10 ** this.rng.int(30);
  }

  key(): string {
    return this.rng.chance(0.25) ? this.rng.pick(['__proto__', 'constructor', 'prototype', 'toString', 'type', 'ref']) : this.string().slice(0, 16);
  }

  value(depth = 0): unknown {
    const { rng } = this;
    const roll = rng.int(depth > 5 ? 5 : 7);
    switch (roll) {
      case 0:
        return null;
      case 1:
        return rng.chance(0.5);
      case 2:
        return this.number();
      case 3:
      case 4:
        return this.string();
      case 5:
        return Array.from({ length: rng.int(5) }, () => this.value(depth + 1));
      default:
        return this.object(depth + 1);
    }
  }

  object(depth = 0): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const count = this.rng.int(this.rng.chance(0.9) ? 5 : 40);
    // defineProperty, so `__proto__` becomes an own key as JSON.parse would make it.
    for (let i = 0; i < count; i += 1) Object.defineProperty(out, this.key(), { value: this.value(depth), enumerable: true, configurable: true, writable: true });
    return out;
  }

  /** A plausible command of a random type, with random field values. */
  command(): Record<string, unknown> {
    const { rng } = this;
    const type: unknown = rng.chance(0.9) ? rng.pick(TYPES_WEIGHTED) : rng.chance(0.5) ? this.string() : this.value();
    const command: Record<string, unknown> = { type };
    const some = <T>(good: () => T): unknown => (rng.chance(0.75) ? good() : this.value());
    switch (type) {
      case 'join':
        command.channel = some(() => rng.pick(CHANNELS));
        if (rng.chance(0.5)) command.meta = some(() => this.object(2));
        break;
      case 'leave':
        command.channel = some(() => rng.pick(CHANNELS));
        break;
      case 'status':
        if (rng.chance(0.6)) command.status = some(() => rng.pick(['online', 'away', 'busy', 'invisible']));
        if (rng.chance(0.4)) command.state = some(() => rng.pick(['in-call', 'lunch', 'napping', null]));
        if (rng.chance(0.4)) command.message = some(() => (rng.chance(0.8) ? this.string() : '😀'.repeat(250 + rng.int(10))));
        if (rng.chance(0.2)) command.expiresAt = some(() => new Date(Date.now() + (rng.int(3) - 1) * 60_000).toISOString());
        if (rng.chance(0.2)) command.visibility = some(() => rng.pick(['everyone', 'contacts', 'nobody']));
        break;
      case 'meta':
        command.meta = some(() => this.object(1));
        break;
      case 'channel.meta':
        command.channel = some(() => rng.pick(CHANNELS));
        command.meta = some(() => this.object(1));
        break;
      case 'typing':
        command.channel = some(() => rng.pick(CHANNELS));
        command.typing = some(() => rng.chance(0.5));
        break;
      case 'watch':
      case 'unwatch':
        command.users = some(() => Array.from({ length: rng.chance(0.98) ? rng.int(8) : 1100 }, () => this.string()));
        break;
    }
    if (rng.chance(0.3)) Object.defineProperty(command, this.key(), { value: this.value(), enumerable: true, configurable: true, writable: true });
    command.ref = rng.chance(0.9) ? this.freshRef() : this.value();
    return command;
  }

  /** Text-level damage: truncation, inserted or replaced characters, duplicated slices. */
  mutateText(text: string): string {
    const { rng } = this;
    let out = text;
    for (let n = 1 + rng.int(3); n > 0; n -= 1) {
      const at = rng.int(out.length + 1);
      switch (rng.int(6)) {
        case 0:
          out = out.slice(0, at);
          break;
        case 1:
          out = out.slice(0, at) + rng.pick(['{', '}', '[', ']', '"', ',', ':', '\\', '\u0000', 'null', '1e999', '__proto__']) + out.slice(at);
          break;
        case 2:
          out = out.slice(0, at) + out.slice(at + 1 + rng.int(4));
          break;
        case 3:
          out = out.slice(0, at) + out.slice(rng.int(out.length)) ;
          break;
        case 4:
          out = out.replace(/"[a-z.]+"/, `"${this.string().replace(/["\\]/g, '')}"`);
          break;
        default:
          out = out.slice(0, at) + String.fromCharCode(rng.int(0x10000)) + out.slice(at);
      }
    }
    return out;
  }

  /** Hand-written JSON the serializer would never produce: huge numbers, deep nesting, raw keys. */
  special(): string {
    const { rng } = this;
    const ref = JSON.stringify(this.freshRef());
    // Deep enough to break a recursive walker, small enough to fit in a 64 KiB frame.
    const depth = 1 + (rng.chance(0.1) ? rng.int(9_000) : rng.int(100));
    switch (rng.int(12)) {
      case 0:
        return `{"type":"ping","ref":1e${300 + rng.int(5000)}}`;
      case 1:
        return `{"type":"meta","ref":${ref},"meta":{"n":${'9'.repeat(1 + rng.int(5000))}}}`;
      case 2:
        return `{"type":"meta","ref":${ref},"meta":{"n":-1e${309 + rng.int(99)}}}`;
      case 3:
        return `{"type":"meta","ref":${ref},"meta":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`;
      case 4:
        return `{"type":"join","channel":"c1","ref":${ref},"meta":${'['.repeat(depth)}${']'.repeat(depth)}}`;
      case 5:
        return `${'['.repeat(3 * depth)}${']'.repeat(rng.chance(0.5) ? 3 * depth : 3 * depth - 1)}`;
      case 6:
        return `{"type":"meta","ref":${ref},"meta":{"__proto__":{"polluted":true}}}`;
      case 7:
        return `{"__proto__":{"type":"ping"},"ref":${ref}}`;
      case 8:
        return `{"type":"join","type":"leave","channel":"c2","channel":"c3","ref":${ref}}`;
      case 9:
        return `{"type":"channel.meta","channel":"c1","ref":${ref},"meta":{"constructor":{"prototype":{"polluted":true}}}}`;
      case 10:
        return `\uFEFF{"type":"ping","ref":${ref}}`;
      default:
        return `{"type":"watch","ref":${ref},"users":["__proto__","constructor","toString","hasOwnProperty","prototype"]}`;
    }
  }

  /** One fuzz JSON frame as text. */
  jsonFrame(): string {
    const { rng } = this;
    const roll = rng.next();
    if (roll < 0.45) return JSON.stringify(this.command());
    if (roll < 0.9) return this.mutateText(JSON.stringify(this.command()));
    return this.special();
  }

  /** Valid UTF-8 that is mostly not a command: random text, truncated commands, bare JSON values. */
  rawText(): Buffer {
    const { rng } = this;
    switch (rng.int(4)) {
      case 0: {
        const command = Buffer.from(JSON.stringify(this.command()));
        return command.subarray(0, rng.int(command.length));
      }
      case 1:
        return Buffer.from(JSON.stringify(this.value()) ?? '');
      case 2:
        return Buffer.from(this.string());
      default:
        return Buffer.from(rng.bytes(rng.int(200)).toString('latin1'), 'utf8');
    }
  }

  /** Bytes that are not valid UTF-8. */
  invalidUtf8(): Buffer {
    const { rng } = this;
    const bad = rng.pick([[0xff], [0xc3, 0x28], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82]]);
    const text = Buffer.from(JSON.stringify({ type: 'ping', ref: this.freshRef() }));
    const at = rng.int(text.length + 1);
    const out = Buffer.concat([text.subarray(0, at), Buffer.from(bad), text.subarray(at)]);
    assert.equal(isUtf8(out), false);
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// What the server must answer
// ---------------------------------------------------------------------------------------------

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Mirrors the protocol's ref rule: a finite number or a string of at most 64 characters. */
function usableRef(value: unknown): number | string | undefined {
  if (!isPlainObject(value)) return undefined;
  const { ref } = value;
  if (typeof ref === 'number' && Number.isFinite(ref)) return ref;
  if (typeof ref === 'string' && ref.length <= 64) return ref;
  return undefined;
}

/** How refs compare after a JSON round trip (-0 comes back as 0). */
const refKey = (ref: number | string): string => (typeof ref === 'number' ? `n:${String(ref)}` : `s:${ref}`);

type Expectation = { kind: 'ref'; key: string } | { kind: 'unattributed' } | { kind: 'skip' };

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

interface Findings {
  failures: string[];
  errorCodes: Map<string, number>;
  closeCodes: Map<number, number>;
  frames: { json: number; rawWs: number; rawTcp: number; handshakes: number };
}

function fail(findings: Findings, message: string): void {
  if (findings.failures.length < 50) findings.failures.push(message);
}

function bump<K>(map: Map<K, number>, key: K): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

/**
 * A `ws` client that tracks what it still expects to be answered: refs it sent, and frames the
 * server cannot attribute (answered by an error without ref, in order).
 */
class FuzzSocket {
  readonly ws: WebSocket;
  readonly opened: Promise<void>;
  readonly closed: Promise<number>;
  closeCode: number | undefined;
  /** Outstanding refs and the frame that carried each, for the failure report. */
  private readonly pending = new Map<string, string>();
  private readonly unattributed: string[] = [];
  private drainWaiters: { limit: number; resolve: () => void }[] = [];
  /** Rate-limited connections end with one RATE_LIMITED without ref, answering whichever frame tripped it. */
  allowFinalRateLimit = false;
  welcomed = false;

  constructor(
    url: string,
    private readonly findings: Findings,
    readonly label: string,
  ) {
    this.ws = new WebSocket(url);
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    this.closed = new Promise((resolve) =>
      this.ws.on('close', (code) => {
        this.closeCode = code;
        bump(findings.closeCodes, code);
        if (!DOCUMENTED_CLOSE_CODES.has(code)) fail(findings, `${label}: undocumented close code ${code} (${tag})`);
        this.wake();
        resolve(code);
      }),
    );
    this.ws.on('error', () => {});
    this.ws.on('message', (data, isBinary) => this.onFrame(data as Buffer, isBinary));
  }

  get outstanding(): number {
    return this.pending.size + this.unattributed.length;
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  private onFrame(data: Buffer, isBinary: boolean): void {
    if (isBinary) return fail(this.findings, `${this.label}: the server sent a binary frame (${tag})`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(data.toString('utf8'));
    } catch {
      return fail(this.findings, `${this.label}: the server sent a frame that is not JSON: ${data.toString('utf8').slice(0, 200)} (${tag})`);
    }
    for (const message of Array.isArray(parsed) ? parsed : [parsed]) this.onMessage(message);
    this.wake();
  }

  private onMessage(value: unknown): void {
    if (!isPlainObject(value) || typeof value.type !== 'string') {
      return fail(this.findings, `${this.label}: malformed server message ${JSON.stringify(value).slice(0, 200)} (${tag})`);
    }
    const message = value as unknown as ServerMessage;
    if (message.type === 'welcome') this.welcomed = true;
    if (message.type !== 'ack' && message.type !== 'error' && message.type !== 'pong') return;
    if (message.type === 'error') {
      bump(this.findings.errorCodes, message.code);
      if (!KNOWN_CODES.has(message.code)) fail(this.findings, `${this.label}: unknown error code ${message.code} (${tag})`);
      if (message.code === 'INTERNAL') fail(this.findings, `${this.label}: INTERNAL error: ${message.message} (${tag})`);
      if (typeof message.message !== 'string' || message.message.length === 0) fail(this.findings, `${this.label}: error without message (${tag})`);
    }
    const ref = (message as { ref?: number | string }).ref;
    if (ref !== undefined) {
      const key = refKey(ref);
      if (!this.pending.delete(key)) fail(this.findings, `${this.label}: answer for a ref nobody is waiting for: ${JSON.stringify(message).slice(0, 200)} (${tag})`);
      return;
    }
    if (message.type === 'error' && this.unattributed.length > 0) {
      this.unattributed.shift();
      return;
    }
    if (message.type === 'error' && message.code === 'RATE_LIMITED' && this.allowFinalRateLimit && this.pending.size > 0) {
      // The frame that tripped the flood close is answered without its ref; it is one of the pending ones.
      this.pending.delete(this.pending.keys().next().value as string);
      return;
    }
    fail(this.findings, `${this.label}: unexpected answer without ref: ${JSON.stringify(message).slice(0, 200)} (${tag})`);
  }

  private wake(): void {
    const closed = this.closeCode !== undefined;
    this.drainWaiters = this.drainWaiters.filter((w) => {
      if (!closed && this.outstanding > w.limit) return true;
      w.resolve();
      return false;
    });
  }

  /** Resolves once at most `limit` frames are unanswered, or the socket closed. */
  async drain(limit: number, timeoutMs = 15_000): Promise<void> {
    if (this.outstanding <= limit || this.closeCode !== undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.drainWaiters.push({ limit, resolve })),
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          const sample = [...this.pending.values()].slice(0, 3).concat(this.unattributed.slice(0, 3));
          fail(this.findings, `${this.label}: ${this.outstanding} frames unanswered after ${timeoutMs} ms, e.g. ${JSON.stringify(sample).slice(0, 600)} (${tag})`);
          resolve();
        }, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Classifies a text frame the way the server will see it, then sends it. */
  sendText(bytes: Buffer, expectation: Expectation, preview: string): void {
    if (expectation.kind === 'ref') this.pending.set(expectation.key, preview);
    else if (expectation.kind === 'unattributed') this.unattributed.push(preview);
    this.ws.send(bytes, { binary: false });
  }

  sendBinary(bytes: Buffer): void {
    this.unattributed.push(`<binary ${bytes.length} bytes>`);
    this.ws.send(bytes, { binary: true });
  }

  hasPending(key: string): boolean {
    return this.pending.has(key);
  }

  /** Frames the close answered: what was still unanswered when the socket closed. */
  settleByClose(): number {
    const n = this.outstanding;
    this.pending.clear();
    this.unattributed.length = 0;
    return n;
  }
}

/**
 * What a text frame asks of the server, judged on the text the server decodes. A frame that would
 * be valid without a ref gets one (a ref-less valid command may legitimately go unanswered).
 */
function prepare(socket: FuzzSocket, text: string, gen: Generator): { bytes: Buffer; expectation: Expectation } {
  let bytes = Buffer.from(text, 'utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { bytes, expectation: { kind: 'unattributed' } };
  }
  if (isPlainObject(parsed) && parsed.type === 'logout') return { bytes, expectation: { kind: 'skip' } };
  let ref = usableRef(parsed);
  if (ref === undefined && isPlainObject(parsed) && parsed.ref === undefined && typeof parsed.type === 'string' && KNOWN_TYPES.has(parsed.type)) {
    ref = gen.freshRef();
    parsed.ref = ref;
    bytes = Buffer.from(JSON.stringify(parsed), 'utf8');
  }
  if (ref === undefined) return { bytes, expectation: { kind: 'unattributed' } };
  const key = refKey(ref);
  if (socket.hasPending(key)) return { bytes, expectation: { kind: 'skip' } };
  return { bytes, expectation: { kind: 'ref', key } };
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket framing over TCP
// ---------------------------------------------------------------------------------------------

interface RawFrame {
  fin?: boolean;
  rsv?: number;
  opcode: number;
  payload: Buffer;
  masked?: boolean;
  /** Declared payload length, when it should lie. */
  declared?: bigint;
}

function encodeFrame(frame: RawFrame): Buffer {
  const { payload } = frame;
  const length = frame.declared ?? BigInt(payload.length);
  const head: number[] = [((frame.fin ?? true) ? 0x80 : 0) | ((frame.rsv ?? 0) << 4) | frame.opcode];
  const mask = (frame.masked ?? true) ? 0x80 : 0;
  let extended = Buffer.alloc(0);
  if (length < 126n) head.push(mask | Number(length));
  else if (length < 65536n) {
    head.push(mask | 126);
    extended = Buffer.alloc(2);
    extended.writeUInt16BE(Number(length));
  } else {
    head.push(mask | 127);
    extended = Buffer.alloc(8);
    extended.writeBigUInt64BE(length);
  }
  if (!(frame.masked ?? true)) return Buffer.concat([Buffer.from(head), extended, payload]);
  const key = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i += 1) body[i] ^= key[i % 4];
  return Buffer.concat([Buffer.from(head), extended, key, body]);
}

/** A WebSocket spoken by hand: the handshake, then whatever bytes the test writes. */
class RawSocket {
  private readonly socket: Socket;
  private buffer = Buffer.alloc(0);
  private onCloseFrame: () => void = () => {};
  private upgraded = false;
  readonly texts: string[] = [];
  closeCode: number | undefined;
  readonly ended: Promise<void>;
  private readonly ready: Promise<void>;

  constructor(port: number, path: string) {
    const socket: Socket = tcpConnect(port, '127.0.0.1');
    this.socket = socket;
    let onReady: () => void = () => {};
    let onFailed: (error: Error) => void = () => {};
    this.ready = new Promise((resolve, reject) => {
      onReady = resolve;
      onFailed = reject;
    });
    this.ended = new Promise((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => {});
    socket.on('connect', () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      if (!this.upgraded) {
        const end = this.buffer.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = this.buffer.subarray(0, end).toString('latin1');
        this.buffer = this.buffer.subarray(end + 4);
        if (!head.startsWith('HTTP/1.1 101')) return onFailed(new Error(`no upgrade: ${head.split('\r\n')[0]}`));
        this.upgraded = true;
      }
      this.parse();
      if (this.texts.some((t) => t.includes('"welcome"'))) onReady();
    });
    socket.on('close', () => onFailed(new Error('closed before welcome')));
  }

  private parse(): void {
    for (;;) {
      if (this.buffer.length < 2) return;
      const opcode = this.buffer[0] & 0x0f;
      let length = this.buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.buffer.length < offset + length) return;
      const payload = this.buffer.subarray(offset, offset + length);
      this.buffer = this.buffer.subarray(offset + length);
      if (opcode === 0x1) this.texts.push(payload.toString('utf8'));
      if (opcode === 0x8) {
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        this.onCloseFrame();
      }
    }
  }

  welcome(): Promise<void> {
    return this.ready;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Waits for the server's close frame (or the TCP end), at most `timeoutMs`. */
  async outcome(timeoutMs: number): Promise<number | 'open' | 'ended'> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.ended,
      new Promise<void>((resolve) => {
        this.onCloseFrame = resolve;
        if (this.closeCode !== undefined) resolve();
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (this.closeCode !== undefined) return this.closeCode;
    return this.socket.destroyed ? 'ended' : 'open';
  }

  destroy(): void {
    this.socket.destroy();
  }
}

interface RawCase {
  name: string;
  frames: (rng: Rng, maxFrameBytes: number) => RawFrame[];
  /** The close code, or `answer`: the frames are valid and a pong with ref `raw` must come. */
  expect: number | 'answer';
}

const PING_RAW = Buffer.from('{"type":"ping","ref":"raw"}');
const closePayload = (code: number): Buffer => {
  const payload = Buffer.alloc(2);
  payload.writeUInt16BE(code);
  return payload;
};
const text = (payload: Buffer, extra: Partial<RawFrame> = {}): RawFrame => ({ opcode: 0x1, payload, ...extra });

const RAW_CASES: RawCase[] = [
  { name: 'unmasked client frame', frames: () => [text(PING_RAW, { masked: false })], expect: 1002 },
  { name: 'RSV1 without permessage-deflate', frames: () => [text(PING_RAW, { rsv: 4 })], expect: 1002 },
  { name: 'RSV2', frames: () => [text(PING_RAW, { rsv: 2 })], expect: 1002 },
  { name: 'RSV3', frames: () => [text(PING_RAW, { rsv: 1 })], expect: 1002 },
  { name: 'reserved data opcode', frames: (rng) => [{ opcode: 3 + rng.int(5), payload: rng.bytes(rng.int(40)) }], expect: 1002 },
  { name: 'reserved control opcode', frames: (rng) => [{ opcode: 0xb + rng.int(5), payload: rng.bytes(rng.int(40)) }], expect: 1002 },
  { name: 'fragmented ping', frames: () => [{ opcode: 0x9, fin: false, payload: Buffer.from('x') }], expect: 1002 },
  { name: 'ping payload over 125 bytes', frames: (rng) => [{ opcode: 0x9, payload: rng.bytes(126 + rng.int(200)) }], expect: 1002 },
  { name: 'continuation with nothing to continue', frames: () => [{ opcode: 0x0, payload: PING_RAW }], expect: 1002 },
  { name: 'new text frame inside a fragmented message', frames: () => [text(Buffer.from('{"type":'), { fin: false }), text(PING_RAW)], expect: 1002 },
  { name: 'declared length past 2^53', frames: () => [text(Buffer.alloc(0), { declared: 2n ** 63n + 5n })], expect: 1009 },
  { name: 'declared length past maxFrameBytes', frames: (_rng, max) => [text(Buffer.alloc(0), { declared: BigInt(max + 1) })], expect: 1009 },
  { name: 'fragments adding up past maxFrameBytes', frames: (_rng, max) => [text(Buffer.alloc(max - 10, 0x20), { fin: false }), { opcode: 0x0, payload: Buffer.alloc(20, 0x20) }], expect: 1009 },
  { name: 'close frame with a 1-byte payload', frames: () => [{ opcode: 0x8, payload: Buffer.from([3]) }], expect: 1002 },
  { name: 'close frame with a code nobody may send', frames: (rng) => [{ opcode: 0x8, payload: closePayload(rng.pick([0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000, 65535])) }], expect: 1002 },
  { name: 'close frame with an invalid UTF-8 reason', frames: () => [{ opcode: 0x8, payload: Buffer.from([0x03, 0xe8, 0xff, 0xfe]) }], expect: 1007 },
  { name: 'text frame with invalid UTF-8', frames: () => [text(Buffer.from([0x7b, 0xc3, 0x28, 0x7d]))], expect: 1007 },
  { name: 'invalid UTF-8 split over fragments', frames: () => [text(Buffer.from([0x22, 0xe2, 0x82]), { fin: false }), { opcode: 0x0, payload: Buffer.from([0x28, 0x22]) }], expect: 1007 },
  { name: 'a client close is echoed', frames: () => [{ opcode: 0x8, payload: Buffer.from([0x03, 0xe8]) }], expect: 1000 },
  {
    name: 'valid fragments split inside a character',
    frames: () => {
      const whole = Buffer.from('{"type":"ping","ref":"raw","x":"😀ü"}');
      // Byte 34 is inside the emoji.
      return [text(whole.subarray(0, 34), { fin: false }), { opcode: 0x9, payload: Buffer.from('interleaved ping') }, { opcode: 0x0, payload: whole.subarray(34) }];
    },
    expect: 'answer',
  },
  { name: 'empty continuation frames', frames: () => [text(PING_RAW.subarray(0, 5), { fin: false }), { opcode: 0x0, fin: false, payload: Buffer.alloc(0) }, { opcode: 0x0, payload: PING_RAW.subarray(5) }], expect: 'answer' },
  { name: 'unsolicited pong', frames: (rng) => [{ opcode: 0xa, payload: rng.bytes(rng.int(100)) }, text(PING_RAW)], expect: 'answer' },
];

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

interface Watch {
  errors: string[];
  stop(): void;
}

/** Records unhandled rejections and uncaught exceptions while the fuzz runs. */
function watchProcess(): Watch {
  const errors: string[] = [];
  const onRejection = (reason: unknown) => errors.push(`unhandledRejection: ${String((reason as Error)?.stack ?? reason)}`);
  const onException = (error: Error) => errors.push(`uncaughtException: ${error.stack ?? String(error)}`);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return {
    errors,
    stop() {
      process.off('unhandledRejection', onRejection);
      process.off('uncaughtException', onException);
    },
  };
}

/** Collects what the server logs at `error` (an unexpected exception anywhere). */
function recordingLogger(lines: string[]): Logger {
  const noop = () => {};
  const logger: Logger = {
    debug: noop,
    info: noop,
    warn: noop,
    error: (msg, fields) => lines.push(`${msg} ${JSON.stringify(fields, (_k, v: unknown) => (v instanceof Error ? v.stack : v))?.slice(0, 800)}`),
    child: () => logger,
  };
  return logger;
}

type Server = RunningServer & { wsUrl: string; maxFrameBytes: number };

async function start(overrides: Parameters<typeof resolveConfig>[0], errorLog: string[], hub?: MemoryHub): Promise<Server> {
  const config = resolveConfig({ port: 0, host: '127.0.0.1', offlineDelayMs: 100, typingTimeoutMs: 300, heartbeatIntervalMs: 10_000, ...overrides });
  // Load shedding (overload.test.ts) is off: on a busy machine a lagging event loop would refuse
  // fuzz connections with OVERLOADED, which is right for the server and noise for this test.
  config.limits = { ...config.limits, maxEventLoopLagMs: 0 };
  const server = await startServer(config, { log: recordingLogger(errorLog), sharedService: hub && new MemoryService(hub) });
  return { ...server, wsUrl: `ws://127.0.0.1:${server.port}/realtime`, maxFrameBytes: config.limits.maxFrameBytes };
}

function newFindings(): Findings {
  return { failures: [], errorCodes: new Map(), closeCodes: new Map(), frames: { json: 0, rawWs: 0, rawTcp: 0, handshakes: 0 } };
}

async function openFuzzSocket(server: Server, findings: Findings, userId: string, label: string): Promise<FuzzSocket> {
  const socket = new FuzzSocket(`${server.wsUrl}?${new URLSearchParams({ userId, device: 'fuzz' })}`, findings, label);
  await socket.opened;
  // The welcome comes first; commands sent before it are still queued behind it by the server.
  return socket;
}

/** Checks that two fresh users see each other correctly: join, sync, status, leave. */
async function assertWellBehaved(server: Server, channel: string, benServer: Server = server): Promise<void> {
  const ann = await TestClient.connect(server, { userId: `ann-${channel}`, device: 'web' });
  const ben = await TestClient.connect(benServer, { userId: `ben-${channel}`, device: 'ios' });
  try {
    assert.equal(ann.welcome.userId, `ann-${channel}`);
    assert.equal((await ann.request({ type: 'join', channel, meta: { mode: 'editing' } })).type, 'ack');
    assert.equal((await ben.request({ type: 'join', channel })).type, 'ack');
    const sync = (await ben.waitFor((m) => m.type === 'presence.sync' && m.channel === channel)) as Extract<ServerMessage, { type: 'presence.sync' }>;
    assert.deepEqual(sync.members.map((m) => m.userId).sort(), [`ann-${channel}`, `ben-${channel}`]);
    const annSeen = sync.members.find((m) => m.userId === `ann-${channel}`)!;
    assert.equal(annSeen.status, 'online');
    assert.deepEqual(annSeen.channelMeta, { mode: 'editing' });
    assert.deepEqual(annSeen.devices, ['web']);
    const joined = (await ann.waitFor((m) => m.type === 'presence.join' && m.channel === channel)) as Extract<ServerMessage, { type: 'presence.join' }>;
    assert.equal(joined.member.userId, `ben-${channel}`);
    assert.equal(joined.seq, sync.seq);
    assert.equal((await ann.request({ type: 'status', status: 'busy', message: 'after the fuzz' })).type, 'ack');
    const update = (await ben.waitFor((m) => m.type === 'presence.update' && m.member.userId === `ann-${channel}`)) as Extract<
      ServerMessage,
      { type: 'presence.update' }
    >;
    assert.equal(update.member.status, 'busy');
    assert.equal(update.member.message, 'after the fuzz');
    assert.equal(update.seq, sync.seq + 1);
    assert.equal((await ben.request({ type: 'leave', channel })).type, 'ack');
    const left = (await ann.waitFor((m) => m.type === 'presence.leave' && m.channel === channel)) as Extract<ServerMessage, { type: 'presence.leave' }>;
    assert.equal(left.userId, `ben-${channel}`);
    assert.equal(left.seq, sync.seq + 2);
    const http = await fetch(`${server.url}/realtime/channels/${channel}/presence`).then((r) => r.json() as Promise<{ count: number; members: { userId: string }[] }>);
    assert.equal(http.count, 1);
    assert.deepEqual(http.members.map((m) => m.userId), [`ann-${channel}`]);
  } finally {
    await Promise.all([ann.close(), ben.close()]);
  }
}

/** Sends `count` generated JSON frames over one user's connection, reconnecting if it is closed. */
async function fuzzJson(server: Server, findings: Findings, userId: string, label: string, gen: Generator, count: number, keepOpen = false): Promise<FuzzSocket> {
  const window = 128;
  let socket = await openFuzzSocket(server, findings, userId, label);
  for (let sent = 0; sent < count; ) {
    if (!socket.isOpen) {
      await socket.closed;
      sent += socket.settleByClose();
      socket = await openFuzzSocket(server, findings, userId, label);
    }
    let frame = gen.jsonFrame();
    if (Buffer.byteLength(frame) > server.maxFrameBytes) frame = frame.slice(0, server.maxFrameBytes / 4);
    const { bytes, expectation } = prepare(socket, frame, gen);
    if (expectation.kind === 'skip') continue;
    socket.sendText(bytes, expectation, bytes.toString('utf8').slice(0, 300));
    sent += 1;
    findings.frames.json += 1;
    if (socket.outstanding >= window) await socket.drain(window / 2);
  }
  await socket.drain(0);
  if (!keepOpen) {
    socket.ws.close(1000);
    await socket.closed;
  }
  return socket;
}

/** What two nodes must agree on about a member once replication has settled. */
function memberFacts(server: Server, channel: string): string {
  return JSON.stringify(
    server.engine.channelPresence(channel, { limit: 1000 }).members.map((m) => [m.userId, m.status, m.state, m.message, m.meta, m.channelMeta, m.devices]),
  );
}

function report(findings: Findings, diagnostic: (message: string) => void): void {
  diagnostic(`${tag}: frames json=${findings.frames.json} rawWs=${findings.frames.rawWs} rawTcp=${findings.frames.rawTcp} handshakes=${findings.frames.handshakes}`);
  diagnostic(`error codes: ${JSON.stringify(Object.fromEntries([...findings.errorCodes].sort((a, b) => b[1] - a[1])))}`);
  diagnostic(`close codes: ${JSON.stringify(Object.fromEntries(findings.closeCodes))}`);
}

// ---------------------------------------------------------------------------------------------
// The runs
// ---------------------------------------------------------------------------------------------

describe(`protocol fuzzing (${tag})`, () => {
  let server: Server;
  const errorLog: string[] = [];
  let watch: Watch;
  const findings = newFindings();
  /** A well-behaved client that stays connected through the whole fuzz. */
  let bystander: TestClient;

  before(async () => {
    watch = watchProcess();
    // Rate limits out of the way: this part is about input handling, not flood control.
    server = await start({ limits: { rateLimitPerSecond: 1_000_000, rateLimitBurst: 1_000_000 } }, errorLog);
    bystander = await TestClient.connect(server, { userId: 'bystander' });
    assert.equal((await bystander.request({ type: 'join', channel: 'c1' })).type, 'ack');
  });

  after(async () => {
    watch.stop();
    bystander.ws.terminate();
    await server.shutdown();
  });

  test(`${JSON_FRAMES} random and mutated JSON frames are each answered`, { timeout: 120_000 }, async (t) => {
    const userIds = ['fuzz-a', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'fuzz-b'];
    const perSocket = Math.ceil(JSON_FRAMES / userIds.length);
    const started = performance.now();
    await Promise.all(userIds.map((userId, i) => fuzzJson(server, findings, userId, `json[${userId}]`, new Generator(new Rng(SEED + 1 + i)), perSocket)));
    t.diagnostic(`json frames: ${findings.frames.json} in ${Math.round(performance.now() - started)} ms`);
    assert.deepEqual(findings.failures, [], tag);
    assert.ok(findings.frames.json >= JSON_FRAMES, `sent ${findings.frames.json} JSON frames`);
  });

  test(`${RAW_WS_FRAMES} raw frames: binary, truncated, bare values, invalid UTF-8, oversized`, { timeout: 120_000 }, async (t) => {
    const gen = new Generator(new Rng(SEED ^ 0x5bd1e995));
    const { rng } = gen;
    const started = performance.now();
    let connections = 0;
    const lanes = 4;
    const perLane = Math.ceil(RAW_WS_FRAMES / lanes);
    await Promise.all(
      Array.from({ length: lanes }, async (_, lane) => {
        const open = async () => {
          connections += 1;
          return openFuzzSocket(server, findings, `raw-${lane}-${connections}`, `raw[${lane}]`);
        };
        let socket = await open();
        for (let sent = 0; sent < perLane; sent += 1) {
          findings.frames.rawWs += 1;
          const roll = rng.next();
          if (roll < 0.05 || roll > 0.999) {
            // These end the connection: everything before them is answered first, then the close.
            await socket.drain(0);
            const oversized = roll > 0.999;
            socket.ws.send(oversized ? Buffer.alloc(server.maxFrameBytes + 1 + rng.int(1000), 0x20) : gen.invalidUtf8(), { binary: false });
            const code = await socket.closed;
            assert.equal(code, oversized ? 1009 : 1007, `${oversized ? 'oversized' : 'invalid UTF-8'} frame (${tag})`);
            socket = await open();
          } else if (roll < 0.45) {
            socket.sendBinary(rng.bytes(rng.int(rng.chance(0.9) ? 64 : 8000)));
          } else {
            const bytes = gen.rawText();
            const { bytes: prepared, expectation } = prepare(socket, bytes.toString('utf8'), gen);
            if (expectation.kind === 'skip') continue;
            socket.sendText(prepared, expectation, prepared.toString('utf8').slice(0, 300));
          }
          if (socket.outstanding >= 64) await socket.drain(32);
        }
        await socket.drain(0);
        socket.ws.close(1000);
        await socket.closed;
      }),
    );
    t.diagnostic(`raw ws frames: ${findings.frames.rawWs} over ${connections} connections in ${Math.round(performance.now() - started)} ms`);
    assert.deepEqual(findings.failures, [], tag);
  });

  test('malformed WebSocket framing over raw TCP is closed with 1002, 1007 or 1009', { timeout: 60_000 }, async (t) => {
    const rng = new Rng(SEED ^ 0x9e3779b9);
    const started = performance.now();
    let n = 0;
    for (let round = 0; round < RAW_TCP_ROUNDS; round += 1) {
      await Promise.all(
        RAW_CASES.map(async (rawCase) => {
          n += 1;
          const raw = new RawSocket(server.port, `/realtime?userId=tcp-${n}`);
          try {
            await raw.welcome();
            const frames = rawCase.frames(rng, server.maxFrameBytes);
            findings.frames.rawTcp += frames.length;
            raw.write(Buffer.concat(frames.map(encodeFrame)));
            if (rawCase.expect === 'answer') {
              const deadline = Date.now() + 3000;
              while (!raw.texts.some((s) => s.includes('"pong"') && s.includes('"raw"')) && Date.now() < deadline) await sleep(5);
              assert.ok(raw.texts.some((s) => s.includes('"pong"')), `${rawCase.name}: no pong (${tag})`);
              assert.equal(raw.closeCode, undefined, `${rawCase.name}: closed (${tag})`);
            } else {
              const outcome = await raw.outcome(3000);
              assert.equal(outcome, rawCase.expect, `${rawCase.name}: close code (${tag})`);
              bump(findings.closeCodes, rawCase.expect);
            }
          } finally {
            raw.destroy();
          }
        }),
      );
    }
    // Frames cut off mid-way: the server waits for the rest, and cleans up when the peer goes away.
    const settle = async (count: number) => {
      const deadline = Date.now() + 3000;
      while (server.engine.stats().connections !== count && Date.now() < deadline) await sleep(10);
      return server.engine.stats().connections;
    };
    const before = await settle(1); // the bystander
    const cut: RawSocket[] = [];
    for (let i = 0; i < 20; i += 1) {
      const raw = new RawSocket(server.port, `/realtime?userId=cut-${i}`);
      await raw.welcome();
      const whole = encodeFrame(text(PING_RAW));
      raw.write(whole.subarray(0, 1 + rng.int(whole.length - 1)));
      findings.frames.rawTcp += 1;
      cut.push(raw);
    }
    assert.equal(server.engine.stats().connections, before + cut.length, 'the server waits for the rest of a frame');
    for (const raw of cut) raw.destroy();
    assert.equal(await settle(before), before, 'cut-off connections are released');
    t.diagnostic(`raw tcp frames: ${findings.frames.rawTcp} in ${Math.round(performance.now() - started)} ms`);
  });

  test(`${HANDSHAKES} handshakes with random query parameters get a welcome or an error and a documented close`, { timeout: 60_000 }, async () => {
    const gen = new Generator(new Rng(SEED ^ 0x27d4eb2f));
    const { rng } = gen;
    const fields = ['userId', 'sessionId', 'device', 'name', 'avatar', 'status', 'state', 'message', 'expiresAt', 'token', 'userId'];
    for (let i = 0; i < HANDSHAKES; i += 8) {
      await Promise.all(
        Array.from({ length: 8 }, async (_, j) => {
          const query = new URLSearchParams();
          if (rng.chance(0.8)) query.append('userId', rng.chance(0.7) ? `hs-${i + j}` : gen.string());
          for (let k = rng.int(5); k > 0; k -= 1) query.append(rng.pick(fields), rng.chance(0.3) ? 'x'.repeat(rng.int(3000)) : gen.string());
          // Past Node's 16 KiB header limit the upgrade is refused at the HTTP level (security.test.ts).
          while (query.toString().length > 12_000) query.delete([...query.keys()].at(-1)!);
          findings.frames.handshakes += 1;
          const client = new TestClient(`${server.wsUrl}?${query}`);
          const first = await client.waitFor(() => true, 3000).catch(() => undefined);
          if (first?.type === 'welcome') {
            client.ws.terminate();
            return;
          }
          assert.equal(first?.type, 'error', `handshake ?${query.toString().slice(0, 300)}: ${JSON.stringify(first)} (${tag})`);
          assert.ok(KNOWN_CODES.has((first as { code: string }).code));
          const { code } = await client.closed;
          assert.ok(DOCUMENTED_CLOSE_CODES.has(code), `close ${code} (${tag})`);
          bump(findings.closeCodes, code);
        }),
      );
    }
  });

  test('afterwards: no crash, nothing logged as an error, correct presence for well-behaved clients', async (t) => {
    report(findings, (m) => t.diagnostic(m));
    assert.deepEqual(findings.failures, [], tag);
    assert.deepEqual(watch.errors, [], `unhandled rejections or uncaught exceptions (${tag})`);
    assert.deepEqual(errorLog, [], `the server logged errors (${tag})`);
    assert.ok(!findings.errorCodes.has('INTERNAL'));
    assert.ok(findings.frames.json + findings.frames.rawWs + findings.frames.rawTcp >= JSON_FRAMES + RAW_WS_FRAMES);
    // The bystander was never disconnected and still works.
    assert.equal(bystander.ws.readyState, WebSocket.OPEN);
    const ref = 'bystander-alive';
    bystander.sendRaw(JSON.stringify({ type: 'ping', ref }));
    await bystander.waitFor((m) => m.type === 'pong' && m.ref === ref);
    // Every fuzz session is gone once its offline delay passed: only the bystander is left.
    const deadline = Date.now() + 5000;
    while (server.engine.stats().sessions > 1 && Date.now() < deadline) await sleep(20);
    assert.equal(server.engine.stats().connections, 1);
    assert.equal(server.engine.stats().sessions, 1);
    await assertWellBehaved(server, 'after-fuzz');
    // Nothing was planted on Object.prototype by `__proto__` keys.
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false);
  });
});

describe(`fuzzing a two-node cluster (${tag})`, () => {
  test(`${CLUSTER_FRAMES} JSON frames over two nodes: every frame answered, both nodes agree afterwards`, { timeout: 120_000 }, async (t) => {
    const errorLog: string[] = [];
    const watch = watchProcess();
    const hub = new MemoryHub();
    const raised = { limits: { rateLimitPerSecond: 1_000_000, rateLimitBurst: 1_000_000 } };
    const nodes = [await start(raised, errorLog, hub), await start(raised, errorLog, hub)];
    const findings = newFindings();
    try {
      // The same users on both nodes (sessions of one user spread over nodes), and some on one only.
      const lanes: [number, string][] = [
        [0, '__proto__'],
        [1, '__proto__'],
        [0, 'constructor'],
        [1, 'toString'],
        [0, 'fuzz-x'],
        [1, 'fuzz-x'],
      ];
      const perLane = Math.ceil(CLUSTER_FRAMES / lanes.length);
      const started = performance.now();
      const sockets = await Promise.all(
        lanes.map(([node, userId], i) => fuzzJson(nodes[node], findings, userId, `cluster[${node}:${userId}]`, new Generator(new Rng(SEED + 300 + i)), perLane, true)),
      );
      t.diagnostic(`cluster json frames: ${findings.frames.json} in ${Math.round(performance.now() - started)} ms`);
      // Whatever state the fuzz left, everyone becomes visible and joins every channel of the pool,
      // so that each channel has members from both nodes to compare.
      for (const [i, socket] of sockets.entries()) {
        const gen = new Generator(new Rng(SEED + 400 + i));
        for (const command of [{ type: 'status', status: 'online' }, ...CHANNELS.map((channel) => ({ type: 'join', channel }))]) {
          const ref = gen.freshRef();
          socket.sendText(Buffer.from(JSON.stringify({ ...command, ref })), { kind: 'ref', key: refKey(ref) }, JSON.stringify(command));
        }
        await socket.drain(0);
      }
      // Replication settles: every channel shows the same members, statuses and meta on both nodes.
      const users = [...new Set(lanes.map(([, userId]) => userId))];
      const userFacts = (server: Server, userId: string): string => {
        const { status, state, message, meta, devices } = server.engine.userPresence(userId, { trusted: true });
        return JSON.stringify([status, state, message, meta, devices]);
      };
      const differing = (): string[] => [
        ...CHANNELS.filter((channel) => memberFacts(nodes[0], channel) !== memberFacts(nodes[1], channel)).map((channel) => `channel ${channel}`),
        ...users.filter((userId) => userFacts(nodes[0], userId) !== userFacts(nodes[1], userId)).map((userId) => `user ${userId}`),
      ];
      const deadline = Date.now() + 10_000;
      while (differing().length > 0 && Date.now() < deadline) await sleep(50);
      const statuses = users.map((userId) => `${userId}: ${nodes.map((node) => node.engine.userPresence(userId, { trusted: true }).status).join(' / ')}`);
      assert.deepEqual(differing(), [], `the nodes disagree (${tag}); status per node: ${statuses.join(', ')}`);
      for (const socket of sockets) {
        socket.ws.close(1000);
        await socket.closed;
      }
      report(findings, (m) => t.diagnostic(m));
      assert.deepEqual(findings.failures, [], tag);
      assert.deepEqual(watch.errors, [], tag);
      assert.deepEqual(errorLog, [], tag);
      await assertWellBehaved(nodes[0], 'across-nodes', nodes[1]);
    } finally {
      watch.stop();
      for (const node of nodes) await node.shutdown();
    }
  });
});

describe('regressions found by fuzzing', () => {
  test('a user back from invisible (by command or by expiry) is visible on the other node too', async () => {
    // The status change used to be saved as part of the quiet "activity" write that coming back
    // makes, which other nodes are never told about: the user stayed offline everywhere else.
    const hub = new MemoryHub();
    const nodes = [await ClusterNode.start({ service: new MemoryService(hub) }), await ClusterNode.start({ service: new MemoryService(hub) })];
    try {
      const watcher = await nodes[0].connect('watcher');
      await nodes[0].send(watcher, { type: 'join', channel: 'room' });
      const hider = await nodes[1].connect('hider');
      await nodes[1].send(hider, { type: 'join', channel: 'room' });
      const seenOnFirst = () => nodes[0].engine.channelPresence('room', { limit: 10 }).members.map((m) => m.userId).sort().join(',');
      await eventually(() => seenOnFirst() === 'hider,watcher', 3000, 'hider visible on node 0');
      await nodes[1].send(hider, { type: 'status', status: 'invisible' });
      await eventually(() => seenOnFirst() === 'watcher', 3000, 'hider gone on node 0');
      await nodes[1].send(hider, { type: 'status', status: 'online' });
      await eventually(() => seenOnFirst() === 'hider,watcher', 3000, 'hider back on node 0 after status online');
      // The same through the expiry of an invisible status.
      await nodes[1].send(hider, { type: 'status', status: 'invisible', expiresAt: new Date(Date.now() + 300).toISOString() });
      await eventually(() => seenOnFirst() === 'watcher', 3000, 'hider gone on node 0 again');
      await eventually(() => seenOnFirst() === 'hider,watcher', 3000, 'hider back on node 0 after the expiry');
      assert.equal(nodes[0].engine.userPresence('hider', { trusted: true }).status, 'online');
    } finally {
      for (const node of nodes) await node.stop();
    }
  });
});

describe(`fuzzing with the default rate limits (${tag})`, () => {
  test('a flood of fuzz frames is answered frame by frame until 4008; a paced client is never limited', { timeout: 60_000 }, async (t) => {
    const errorLog: string[] = [];
    const watch = watchProcess();
    const server = await start({}, errorLog);
    const findings = newFindings();
    try {
      // Flooders: everything is sent at once; the bucket allows the burst, refuses the next
      // burst's worth with RATE_LIMITED, then closes with 4008.
      await Promise.all(
        Array.from({ length: 4 }, async (_, i) => {
          const gen = new Generator(new Rng(SEED + 100 + i));
          const socket = await openFuzzSocket(server, findings, `flood-${i}`, `flood[${i}]`);
          socket.allowFinalRateLimit = true;
          for (let sent = 0; sent < 400; ) {
            const { bytes, expectation } = prepare(socket, gen.jsonFrame().slice(0, 4000), gen);
            if (expectation.kind === 'skip') continue;
            socket.sendText(bytes, expectation, bytes.toString('utf8').slice(0, 300));
            findings.frames.json += 1;
            sent += 1;
          }
          const code = await socket.closed;
          assert.equal(code, 4008, `flood close (${tag})`);
          t.diagnostic(`flood-${i}: ${socket.settleByClose()} frames answered by the 4008 close`);
        }),
      );
      // A client pacing itself under the limit gets every frame answered and is never refused.
      const gen = new Generator(new Rng(SEED + 200));
      const paced = await openFuzzSocket(server, findings, 'paced', 'paced');
      const codesBefore = findings.errorCodes.get('RATE_LIMITED') ?? 0;
      for (let sent = 0; sent < 150; ) {
        const { bytes, expectation } = prepare(paced, gen.jsonFrame().slice(0, 4000), gen);
        if (expectation.kind === 'skip') continue;
        paced.sendText(bytes, expectation, bytes.toString('utf8').slice(0, 300));
        findings.frames.json += 1;
        sent += 1;
        if (sent > 90) await sleep(25); // the burst first, then 40 per second
      }
      await paced.drain(0);
      assert.equal(findings.errorCodes.get('RATE_LIMITED') ?? 0, codesBefore, 'the paced client was never rate-limited');
      assert.ok(paced.isOpen);
      paced.ws.close(1000);
      await paced.closed;
      report(findings, (m) => t.diagnostic(m));
      assert.deepEqual(findings.failures, [], tag);
      assert.deepEqual(watch.errors, [], tag);
      assert.deepEqual(errorLog, [], tag);
      await assertWellBehaved(server, 'after-flood');
    } finally {
      watch.stop();
      await server.shutdown();
    }
  });
});
