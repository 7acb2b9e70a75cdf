/**
 * A load generator process. It holds a shard of the bench's clients (real WebSocket connections
 * over loopback), runs open-loop schedules on them and records delivery latencies into an HDR
 * histogram. The orchestrator (run.ts) drives it over the IPC channel; it never shares a process
 * with a server.
 *
 * Time is `performance.timeOrigin + performance.now()` in every process of the run, so a send
 * timestamp from one worker can be compared with a receive time in another on this host.
 */
import WebSocket from 'ws';
import { LeanSocket } from './lean-socket.js';
import { newHistogram, encodeHistogram, type Histogram } from '../lib/histogram.js';
import { placeClient, type Layout } from './layout.js';
import { JOIN_EVENT, LEAVE_EVENT, channelCount, countOccurrences, scanLeaves, scanMarkers, scanTyping } from './scan.js';
import { UPDATE_KINDS, WIRES, newMember, type BenchMember, type SystemName, type UpdateKind, type Wire, type WireClient } from './wire.js';

// ---------------------------------------------------------------------------------------------
// Requests from the orchestrator
// ---------------------------------------------------------------------------------------------

export type { Layout } from './layout.js';

export interface InitRequest {
  system: SystemName;
  /** Base URLs (`ws://127.0.0.1:PORT`); with several (multi-node), members are spread over them. */
  urls: string[];
  layout: Layout;
  /** Total clients over every worker; this worker holds indices i with i % workers === worker. */
  total: number;
  worker: number;
  workers: number;
  /** Source addresses to spread connections over (each gives ~28k ephemeral ports). */
  sourceAddresses: string[];
  /** The WebSocket client: the lean one (default) or the `ws` library's, to cross-check it. */
  client?: ClientKind;
  /** Presence connect features (`occupancy`: large rooms send counts instead of member lists). */
  features?: string;
}

export type ClientKind = 'lean' | 'ws';

/** What the worker needs from a client socket, whichever implementation. */
interface ClientSocket {
  send(text: string): void;
  terminate(): void;
}

interface SocketEvents {
  open(): void;
  message(data: Buffer): void;
  close(code: number): void;
  error(error: Error & { code?: string }): void;
}

function openSocket(kind: ClientKind, url: string, localAddress: string | undefined, events: SocketEvents): ClientSocket {
  if (kind === 'lean') return new LeanSocket({ url, localAddress, handshakeTimeoutMs: 30_000 }, events);
  const ws = new WebSocket(url, {
    perMessageDeflate: false,
    skipUTF8Validation: true,
    handshakeTimeout: 30_000,
    maxPayload: 512 * 1024 * 1024,
    ...(localAddress ? { localAddress } : {}),
  });
  ws.on('open', () => events.open());
  ws.on('message', (data: Buffer) => events.message(data));
  ws.on('error', (error: Error & { code?: string }) => events.error(error));
  ws.on('close', (code) => events.close(code));
  return ws;
}

export type Mode = 'idle' | 'markers' | 'typing' | 'churn' | 'events' | 'count';

export interface ScheduleRequest {
  /** Events per second for this worker. */
  rate: number;
  /** Absolute start time (ms, same clock in every process). */
  startAt: number;
  durationMs: number;
  /** Deliveries of events sent before startAt + warmupMs are not recorded. */
  warmupMs: number;
  /** Typing storm: number of typists; churn: number of churners. */
  actors?: number;
  /** Fan-out: send only this kind of update (default: meta, status and channel meta in turn). */
  kind?: UpdateKind;
}

/** A large room's fill: this worker's clients connect and join at `rate` per second from `startAt`. */
export interface FillRequest {
  rate: number;
  startAt: number;
}

/** What the clients made of a large room's fill (mode `count`). */
export interface CountReport {
  /** Each client's last count of the channel's members (-1: not connected). */
  counts: number[];
  /** When each client's count last changed (ms, the shared clock); 0 if it never had one. */
  changedAt: number[];
  /** Bytes each client received since it connected. */
  bytes: number[];
  /** The node (index into the init's `urls`) each client is on. */
  nodes: number[];
  /** When the last join of this worker was sent. */
  lastJoinAt: number;
  failed: number;
}

export interface ScheduleResult {
  sent: number;
  /** Events the schedule placed inside the measured window. */
  scheduledInWindow: number;
  sentInWindow: number;
  /** Deliveries the sends inside the window should produce (churn, typing: known locally). */
  expectedInWindow: number;
  sendLagP99Ms: number;
  sendLagMaxMs: number;
}

export interface Collected {
  histogram: string;
  syncHistogram: string;
  deliveredInWindow: number;
  /** Every delivery since the last collect, by the node (index into the init's `urls`) the receiver is on. */
  deliveredByNode: number[];
  deliveredTotal: number;
  frames: number;
  bytes: number;
  /** Frames (and their bytes) that arrived inside the measured window. */
  framesInWindow: number;
  bytesInWindow: number;
  errorFrames: number;
  closes: Record<string, number>;
  events: { joinsAtObservers: number; leavesAtObservers: number; joinsAtOthers: number; leavesAtOthers: number };
}

export interface ConnectResult {
  ready: number;
  failed: number;
  elapsedMs: number;
  resumed: number;
  notResumed: number;
  errors: Record<string, number>;
}

type Request =
  | { op: 'init'; args: InitRequest }
  | { op: 'connect'; args: { concurrency: number; only?: 'missing' } }
  | { op: 'mode'; args: { mode: Mode } }
  | { op: 'fanout'; args: ScheduleRequest }
  | { op: 'typing'; args: ScheduleRequest }
  | { op: 'churn'; args: ScheduleRequest }
  | { op: 'fill'; args: FillRequest }
  | { op: 'counts'; args: Record<string, never> }
  | { op: 'countsRight'; args: { count: number; since: number } }
  | { op: 'storm'; args: { observerEvery: number; concurrency: number; settleMs: number } }
  | { op: 'reveal'; args: { first: number; last: number } }
  | { op: 'poll'; args: Record<string, never> }
  | { op: 'collect'; args: Record<string, never> }
  | { op: 'close'; args: Record<string, never> };

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

type ClientState = 'idle' | 'connecting' | 'ready' | 'closed';

class Client implements WireClient {
  ws: ClientSocket | null = null;
  state: ClientState = 'idle';
  /** The client is a member of its channel (joined, and not left by the churn schedule). */
  inChannel = false;
  helloSeen = false;
  resumed = false;
  sessionId?: string;
  socketId?: string;
  member: BenchMember;
  eventSeq = 0;
  lastSeq: Map<number, number> | null = null;
  typingOn = false;
  /** Churn: when the last join was sent, until its snapshot arrives. */
  joinSentAt = 0;
  observer = false;
  /** Joins without an announcement until revealed (filling a large channel). */
  quiet = false;
  /** Mode `count`: the channel's members as this client knows them, and when that last changed. */
  count = 0;
  countChangedAt = 0;
  bytes = 0;
  onReady: ((ok: boolean, reason: string) => void) | null = null;

  constructor(
    readonly idx: number,
    readonly userId: string,
    readonly channel: string,
    readonly url: string,
    readonly localAddress: string | undefined,
    /** Index of `url` in the init's `urls`. */
    readonly node: number,
  ) {
    this.member = newMember(idx, userId);
  }
}

let wire: Wire;
let system: SystemName;
let clientKind: ClientKind = 'lean';
let features: string | undefined;
let clients: Client[] = [];
let mode: Mode = 'idle';

const nowMs = () => performance.timeOrigin + performance.now();

// Recording state, reset by `collect`.
let histogram: Histogram = newHistogram();
let syncHistogram: Histogram = newHistogram();
let windowStartUs = 0;
let windowEndUs = 0;
let deliveredInWindow = 0;
let deliveredByNode: number[] = [];
let deliveredTotal = 0;
let frames = 0;
let bytes = 0;
let framesInWindow = 0;
let bytesInWindow = 0;
/** When this worker last sent a join (a large room's fill ends with it). */
let lastJoinSentAt = 0;
let errorFrames = 0;
let closes: Record<string, number> = {};
let events = { joinsAtObservers: 0, leavesAtObservers: 0, joinsAtOthers: 0, leavesAtOthers: 0 };
const typingSentAt = [new Map<string, number>(), new Map<string, number>()];
const leaveSentAt = new Map<string, number>();

const ERROR_FRAME = Buffer.from('"type":"error"');
const WELCOME = Buffer.from('"type":"welcome"');
const OCCUPANCY = Buffer.from('"presence.occupancy"');
const PUSHER_ERROR = Buffer.from('"event":"pusher:error"');
const PUSHER_ESTABLISHED = Buffer.from('"pusher:connection_established"');

function record(sentUs: number, nowUs: number): void {
  deliveredTotal += 1;
  if (sentUs < windowStartUs || sentUs >= windowEndUs) return;
  deliveredInWindow += 1;
  histogram.recordValue(Math.max(1, Math.round(nowUs - sentUs)));
}

function onFrame(c: Client, data: Buffer): void {
  frames += 1;
  bytes += data.length;
  c.bytes += data.length;
  if (windowEndUs > 0) {
    const us = nowMs() * 1000;
    if (us >= windowStartUs && us < windowEndUs) {
      framesInWindow += 1;
      bytesInWindow += data.length;
    }
  }
  if (system === 'socketio') {
    const packet = data[0];
    if (packet === 0x32 /* 2: ping */) {
      c.ws?.send('3');
      return;
    }
    if (packet === 0x30 /* 0: open */) {
      c.ws?.send(`40{"userId":"${c.userId}"}`);
      return;
    }
    if (packet !== 0x34 /* 4: message */) return;
    if (data[1] === 0x30 /* 0: connected */) {
      hello(c);
      return;
    }
    if (data[1] === 0x34 /* 4: connect error */) {
      c.onReady?.(false, 'connect_error');
      return;
    }
  }
  if (c.state === 'connecting') setupFrame(c, data);
  else if (data.length < 4096 && data.indexOf(system === 'pusher' ? PUSHER_ERROR : ERROR_FRAME) !== -1) errorFrames += 1;
  switch (mode) {
    case 'idle':
      return;
    case 'markers':
      return onMarkers(c, data);
    case 'typing':
      return onTyping(data);
    case 'count': {
      const count = channelCount(data, c.count);
      if (count !== c.count) {
        c.count = count;
        c.countChangedAt = nowMs();
      }
      return;
    }
    case 'churn':
      onMarkers(c, data);
      if (c.joinSentAt > 0 && data.indexOf(wire.joinedToken) !== -1) {
        const now = nowMs();
        if (inWindow(c.joinSentAt)) {
          syncHistogram.recordValue(Math.max(1, Math.round((now - c.joinSentAt) * 1000)));
        }
        c.joinSentAt = 0;
      }
      scanLeaves(data, (userId) => {
        const sentAt = leaveSentAt.get(userId);
        if (sentAt !== undefined) record(Math.round(sentAt * 1000), nowMs() * 1000);
      });
      return;
    case 'events': {
      const joins = countOccurrences(data, JOIN_EVENT);
      const leaves = countOccurrences(data, LEAVE_EVENT);
      if (c.observer) {
        events.joinsAtObservers += joins;
        events.leavesAtObservers += leaves;
      } else {
        events.joinsAtOthers += joins;
        events.leavesAtOthers += leaves;
      }
      return;
    }
  }
}

function onMarkers(c: Client, data: Buffer): void {
  let nowUs = 0;
  scanMarkers(data, (sender, seq, sentUs) => {
    if (sender === c.idx) return;
    const seen = (c.lastSeq ??= new Map());
    if ((seen.get(sender) ?? 0) >= seq) return;
    seen.set(sender, seq);
    nowUs ||= nowMs() * 1000;
    record(sentUs, nowUs);
    deliveredByNode[c.node] = (deliveredByNode[c.node] ?? 0) + 1;
  });
}

function onTyping(data: Buffer): void {
  let nowUs = 0;
  scanTyping(data, (userId, typing) => {
    const sentAt = typingSentAt[typing ? 1 : 0].get(userId);
    if (sentAt === undefined) return;
    nowUs ||= nowMs() * 1000;
    record(Math.round(sentAt * 1000), nowUs);
  });
}

/** Frames of a connecting client: the greeting, then the confirmation of its join. */
function setupFrame(c: Client, data: Buffer): void {
  if (!c.helloSeen && system === 'pusher' && data.indexOf(PUSHER_ESTABLISHED) !== -1) {
    // `data` is a JSON string: the socket id sits between escaped quotes.
    c.socketId = /socket_id\\":\\"([0-9.]+)/.exec(data.toString('utf8'))?.[1];
    hello(c);
  }
  if (!c.helloSeen && system !== 'socketio' && data.indexOf(WELCOME) !== -1) {
    const head = data.toString('utf8', 0, Math.min(data.length, 4096));
    const session = /"sessionId":"([^"]+)"/.exec(head);
    if (session) c.sessionId = session[1];
    c.resumed = /"resumed":true/.test(head);
    hello(c);
  }
  // With features=occupancy, a large room answers a join with its counts instead of the list.
  const joined = data.indexOf(c.quiet ? wire.quietJoinedToken : wire.joinedToken) !== -1 || (features !== undefined && data.indexOf(OCCUPANCY) !== -1);
  if (c.helloSeen && joined) {
    c.state = 'ready';
    c.inChannel = true;
    c.onReady?.(true, 'ok');
  }
}

function hello(c: Client): void {
  c.helloSeen = true;
  // A resumed Presence session is still in its channels and gets their snapshots unasked.
  if (c.resumed && c.inChannel) return;
  c.eventSeq += 1;
  if (c.quiet) for (const frame of wire.quietJoin(c)) c.ws?.send(frame);
  else c.ws?.send(wire.join(c));
  lastJoinSentAt = nowMs();
}

/**
 * Close codes after which the SDK waits before coming back (rate limited, full, overloaded): its
 * `slowDownDelayMs` (5 s) plus up to as much again at random. The load generator does the same, so
 * a server that sheds load during a storm is measured the way its real clients would meet it.
 */
const SLOW_DOWN_CODES = new Set(['closed 1013', 'closed 4008', 'closed 4029']);
const SLOW_DOWN_MS = 5000;
const SLOW_DOWN_ATTEMPTS = 5;

async function connectClient(c: Client, errors: Record<string, number>): Promise<boolean> {
  for (let attempt = 1; ; attempt += 1) {
    const outcome = await connectOnce(c, errors);
    if (outcome === 'ok') return true;
    if (!SLOW_DOWN_CODES.has(outcome) || attempt >= SLOW_DOWN_ATTEMPTS) return false;
    errors['retried after slow-down'] = (errors['retried after slow-down'] ?? 0) + 1;
    await new Promise((resolve) => setTimeout(resolve, SLOW_DOWN_MS * (1 + Math.random())));
  }
}

/** One attempt: 'ok', or why it failed (`closed CODE`, `timeout`, `connect_error`). */
function connectOnce(c: Client, errors: Record<string, number>): Promise<string> {
  return new Promise((resolve) => {
    c.state = 'connecting';
    c.helloSeen = false;
    c.resumed = false;
    if (system !== 'presence') c.inChannel = false;
    let opened = false;
    const ws = openSocket(clientKind, wire.url(c.url, c, features), c.localAddress, {
      open: () => {
        opened = true;
      },
      message: (data) => onFrame(c, data),
      error: (error) => {
        errors[error.code ?? error.message] = (errors[error.code ?? error.message] ?? 0) + 1;
      },
      close: (code) => {
        if (c.ws !== ws) return;
        if (c.state === 'ready') closes[String(code)] = (closes[String(code)] ?? 0) + 1;
        c.state = 'closed';
        // A drop without a close frame: whether the server took the upgrade says where to look.
        c.onReady?.(false, code === 1006 ? `closed 1006 ${opened ? 'after' : 'during'} the handshake` : `closed ${code}`);
      },
    });
    c.ws = ws;
    const timer = setTimeout(() => c.onReady?.(false, 'timeout'), 60_000);
    c.onReady = (ok, reason) => {
      clearTimeout(timer);
      c.onReady = null;
      if (!ok) {
        errors[reason] = (errors[reason] ?? 0) + 1;
        c.state = 'closed';
        ws.terminate();
      }
      resolve(ok ? 'ok' : reason);
    };
  });
}

let progress = { ready: 0, failed: 0, target: 0 };

async function connectMany(list: Client[], concurrency: number): Promise<ConnectResult> {
  const started = nowMs();
  const errors: Record<string, number> = {};
  progress = { ready: 0, failed: 0, target: list.length };
  const ticker = setInterval(() => process.send?.({ progress: { ...progress } }), 500);
  let next = 0;
  await new Promise<void>((done) => {
    let inFlight = 0;
    if (list.length === 0) return done();
    const launch = () => {
      while (inFlight < concurrency && next < list.length) {
        const c = list[next++];
        inFlight += 1;
        void connectClient(c, errors).then((ok) => {
          inFlight -= 1;
          if (ok) progress.ready += 1;
          else progress.failed += 1;
          if (next >= list.length && inFlight === 0) done();
          else launch();
        });
      }
    };
    launch();
  });
  clearInterval(ticker);
  let resumed = 0;
  for (const c of list) if (c.resumed) resumed += 1;
  return {
    ready: progress.ready,
    failed: progress.failed,
    elapsedMs: nowMs() - started,
    resumed,
    notResumed: system === 'presence' ? progress.ready - resumed : 0,
    errors,
  };
}

// ---------------------------------------------------------------------------------------------
// Open-loop schedules
// ---------------------------------------------------------------------------------------------

/**
 * Runs `send(k, at)` for k = 0, 1, … at `startAt + k / rate`, whatever the replies do (open loop).
 * `at` is the intended time, which goes into the marker: if this process falls behind, the delay
 * counts against the measured latency instead of silently lowering the load.
 */
function schedule(request: ScheduleRequest, send: (k: number, at: number) => void): Promise<{ sent: number; scheduledInWindow: number; lag: Histogram }> {
  const { rate, startAt, durationMs } = request;
  const total = Math.floor((rate * durationMs) / 1000);
  const interval = 1000 / rate;
  const lag = newHistogram();
  let k = 0;
  let scheduledInWindow = 0;
  return new Promise((done) => {
    const tick = () => {
      const now = nowMs();
      while (k < total) {
        const at = startAt + k * interval;
        if (at > now) break;
        if (inWindow(at)) scheduledInWindow += 1;
        send(k, at);
        lag.recordValue(Math.max(1, Math.round((now - at) * 1000)));
        k += 1;
      }
      if (k >= total) {
        // Resolve only once the window is over, so whatever the caller sends next is outside it.
        // Timers may fire a little early by this clock, hence the loop.
        const end = startAt + durationMs;
        const finish = () => {
          const left = end - nowMs();
          if (left > 0) setTimeout(finish, Math.ceil(left));
          else done({ sent: total, scheduledInWindow, lag });
        };
        finish();
        return;
      }
      setTimeout(tick, Math.min(1, Math.max(0, startAt + k * interval - nowMs())));
    };
    setTimeout(tick, Math.max(0, startAt - nowMs()));
  });
}

function openWindow(request: ScheduleRequest): void {
  windowStartUs = Math.round((request.startAt + request.warmupMs) * 1000);
  windowEndUs = Math.round((request.startAt + request.durationMs) * 1000);
}

/** Whether an event sent at `at` (ms) is measured; the same rounding as the markers' µs. */
const inWindow = (at: number) => {
  const us = Math.round(at * 1000);
  return us >= windowStartUs && us < windowEndUs;
};

function lagResult(lag: Histogram): Pick<ScheduleResult, 'sendLagP99Ms' | 'sendLagMaxMs'> {
  return { sendLagP99Ms: lag.getValueAtPercentile(99) / 1000, sendLagMaxMs: lag.maxValue / 1000 };
}

/**
 * The clients in a fixed pseudo-random order (seeded, so every run and system gets the same), so
 * that consecutive sends land in unrelated channels, as independent users' updates do. In index
 * order they would hit the same channel back to back and be batched into one frame artificially.
 */
function shuffled(list: Client[], seed = 0x9e3779b9): Client[] {
  const out = list.slice();
  let state = seed >>> 0;
  const random = () => {
    // xorshift32
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 0x100000000;
  };
  for (let i = out.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

async function fanout(request: ScheduleRequest): Promise<ScheduleResult> {
  openWindow(request);
  const senders = shuffled(clients.filter((c) => c.state === 'ready'));
  let sentInWindow = 0;
  const { sent, scheduledInWindow, lag } = await schedule(request, (k, at) => {
    const c = senders[k % senders.length];
    if (!c || c.state !== 'ready') return;
    c.eventSeq += 1;
    const kind = request.kind ?? UPDATE_KINDS[c.eventSeq % UPDATE_KINDS.length];
    c.ws!.send(wire.update(c, kind, `L:${c.idx}:${c.eventSeq}:${Math.round(at * 1000)}`));
    if (inWindow(at)) sentInWindow += 1;
  });
  return { sent, scheduledInWindow, sentInWindow, expectedInWindow: 0, ...lagResult(lag) };
}

function membersPresent(): number {
  let present = 0;
  for (const c of clients) if (c.state === 'ready' && c.inChannel) present += 1;
  return present;
}

async function typingStorm(request: ScheduleRequest): Promise<ScheduleResult> {
  openWindow(request);
  typingSentAt[0].clear();
  typingSentAt[1].clear();
  const typists = clients.filter((c) => c.state === 'ready').slice(0, request.actors ?? 1);
  const receivers = membersPresent() - 1;
  let sentInWindow = 0;
  const { sent, scheduledInWindow, lag } = await schedule(request, (k, at) => {
    const c = typists[k % typists.length];
    if (!c || c.state !== 'ready') return;
    c.typingOn = !c.typingOn;
    typingSentAt[c.typingOn ? 1 : 0].set(c.userId, at);
    c.ws!.send(wire.typing(c, c.typingOn));
    if (inWindow(at)) sentInWindow += 1;
  });
  // Leave nobody typing: a server-side typing timeout later would be an event nobody sent.
  for (const c of typists) {
    if (!c.typingOn || c.state !== 'ready') continue;
    c.typingOn = false;
    typingSentAt[0].set(c.userId, nowMs());
    c.ws!.send(wire.typing(c, false));
  }
  return { sent, scheduledInWindow, sentInWindow, expectedInWindow: sentInWindow * receivers, ...lagResult(lag) };
}

async function churn(request: ScheduleRequest): Promise<ScheduleResult> {
  openWindow(request);
  leaveSentAt.clear();
  // Churners come from the end of the shard, so typists (from the start) stay put.
  const churners = clients.filter((c) => c.state === 'ready').slice(-(request.actors ?? 1));
  let present = membersPresent();
  let sentInWindow = 0;
  let expectedInWindow = 0;
  const toggle = (c: Client, at: number, counted: boolean) => {
    c.eventSeq += 1;
    if (c.inChannel) {
      c.inChannel = false;
      leaveSentAt.set(c.userId, at);
      present -= 1;
      if (counted) expectedInWindow += present;
      c.ws!.send(wire.leave(c));
    } else {
      c.inChannel = true;
      c.joinSentAt = at;
      if (counted) expectedInWindow += present;
      present += 1;
      c.ws!.send(wire.join(c, `L:${c.idx}:${c.eventSeq}:${Math.round(at * 1000)}`));
    }
  };
  const { sent, scheduledInWindow, lag } = await schedule(request, (k, at) => {
    const c = churners[k % churners.length];
    if (!c || c.state !== 'ready') return;
    const counted = inWindow(at);
    toggle(c, at, counted);
    if (counted) sentInWindow += 1;
  });
  // Everyone back in the channel for the next step.
  for (const c of churners) if (!c.inChannel && c.state === 'ready') toggle(c, nowMs(), false);
  return { sent, scheduledInWindow, sentInWindow, expectedInWindow, ...lagResult(lag) };
}

/**
 * A large room's fill: the clients connect (each joins as it is welcomed) one after the other at
 * `rate` per second from `startAt`, open loop; resolves once every one has answered.
 */
async function fill(request: FillRequest): Promise<{ ready: number; failed: number; lastJoinAt: number; errors: Record<string, number> }> {
  const errors: Record<string, number> = {};
  const list = clients.filter((c) => c.state !== 'ready');
  let ready = 0;
  let failed = 0;
  const attempts: Promise<void>[] = [];
  for (let i = 0; i < list.length; i += 1) {
    const at = request.startAt + (i * 1000) / request.rate;
    const wait = at - nowMs();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const c = list[i];
    attempts.push(
      connectClient(c, errors).then((ok) => {
        if (ok) ready += 1;
        else failed += 1;
      }),
    );
  }
  await Promise.all(attempts);
  return { ready, failed, lastJoinAt: lastJoinSentAt, errors };
}

function countReport(): CountReport {
  return {
    // A client that never got in (or fell out) has no count: -1.
    counts: clients.map((c) => (c.state === 'ready' ? c.count : -1)),
    changedAt: clients.map((c) => c.countChangedAt),
    bytes: clients.map((c) => c.bytes),
    nodes: clients.map((c) => c.node),
    lastJoinAt: lastJoinSentAt,
    failed: clients.filter((c) => c.state !== 'ready').length,
  };
}

/**
 * Reconnect storm: every client but the observers (one per channel) is cut at once from this
 * side, then reconnects at once, resuming its session where the system has sessions.
 */
async function storm(args: { observerEvery: number; concurrency: number; settleMs: number }) {
  events = { joinsAtObservers: 0, leavesAtObservers: 0, joinsAtOthers: 0, leavesAtOthers: 0 };
  const droppers: Client[] = [];
  for (const c of clients) {
    c.observer = c.idx % args.observerEvery === args.observerEvery - 1;
    if (!c.observer && c.state === 'ready') droppers.push(c);
  }
  const started = nowMs();
  for (const c of droppers) {
    const ws = c.ws!;
    c.ws = null;
    c.state = 'idle';
    ws.terminate();
  }
  const result = await connectMany(droppers, args.concurrency);
  const backMs = nowMs() - started;
  await new Promise((r) => setTimeout(r, args.settleMs));
  return { dropped: droppers.length, backMs, ...result, events: { ...events } };
}

// ---------------------------------------------------------------------------------------------
// IPC
// ---------------------------------------------------------------------------------------------

function init(args: InitRequest): { clients: number } {
  wire = WIRES[args.system];
  system = args.system;
  clientKind = args.client ?? 'lean';
  features = args.features;
  clients = [];
  deliveredByNode = args.urls.map(() => 0);
  const perAddress = Math.ceil(args.total / Math.max(1, args.sourceAddresses.length));
  for (let i = args.worker; i < args.total; i += args.workers) {
    const { channel, node } = placeClient(i, args.layout, args.urls.length);
    const address = args.sourceAddresses.length > 0 ? args.sourceAddresses[Math.floor(i / perAddress)] : undefined;
    const client = new Client(i, `u${i}`, channel, args.urls[node], address, node);
    client.quiet = args.layout.kind === 'single' && args.layout.quiet === true;
    clients.push(client);
  }
  return { clients: clients.length };
}

function collect(): Collected {
  const result: Collected = {
    histogram: encodeHistogram(histogram),
    syncHistogram: encodeHistogram(syncHistogram),
    deliveredInWindow,
    deliveredByNode,
    deliveredTotal,
    frames,
    bytes,
    framesInWindow,
    bytesInWindow,
    errorFrames,
    closes,
    events: { ...events },
  };
  histogram = newHistogram();
  syncHistogram = newHistogram();
  deliveredInWindow = deliveredTotal = frames = bytes = framesInWindow = bytesInWindow = errorFrames = 0;
  deliveredByNode = deliveredByNode.map(() => 0);
  closes = {};
  return result;
}

async function handle(request: Request): Promise<unknown> {
  switch (request.op) {
    case 'init':
      return init(request.args);
    case 'connect': {
      const list = clients.filter((c) => c.state !== 'ready');
      return connectMany(list, request.args.concurrency);
    }
    case 'mode':
      mode = request.args.mode;
      return {};
    case 'fanout':
      return fanout(request.args);
    case 'typing':
      return typingStorm(request.args);
    case 'churn':
      return churn(request.args);
    case 'storm':
      return storm(request.args);
    case 'fill':
      return fill(request.args);
    case 'counts':
      return countReport();
    case 'countsRight': {
      // Cheap to poll: how many connected clients show `count`, changed at or after `since`.
      let right = 0;
      let present = 0;
      for (const c of clients) {
        if (c.state !== 'ready') continue;
        present += 1;
        if (c.count === request.args.count && c.countChangedAt >= request.args.since) right += 1;
      }
      return { right, present };
    }
    case 'reveal': {
      // The first `first` and the last `last` clients of this shard become visible (actors).
      let sent = 0;
      const ready = clients.filter((c) => c.state === 'ready');
      const actors = new Set([...ready.slice(0, request.args.first), ...ready.slice(Math.max(0, ready.length - request.args.last))]);
      for (const c of actors) {
        c.quiet = false;
        for (const frame of wire.reveal(c)) {
          c.ws!.send(frame);
          sent += 1;
        }
      }
      return { sent, actors: actors.size };
    }
    case 'poll':
      return { deliveredInWindow, deliveredTotal, frames, ready: clients.filter((c) => c.state === 'ready').length };
    case 'collect':
      return collect();
    case 'close':
      for (const c of clients) c.ws?.terminate();
      setTimeout(() => process.exit(0), 100);
      return {};
  }
}

process.on('message', (message: { id: number } & Request) => {
  handle(message).then(
    (result) => process.send?.({ id: message.id, ok: true, result }),
    (error: unknown) => process.send?.({ id: message.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
  );
});
process.on('disconnect', () => process.exit(0));
