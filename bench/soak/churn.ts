/**
 * The soak's churn generator, a process of its own: a bounded population of real WebSocket clients
 * over loopback that keep connecting, joining and leaving channels, changing status, meta and
 * channel meta, typing, watching, going idle, and disconnecting — cleanly, abruptly, by logout, or
 * by dropping the socket and resuming the session with its `sessionId` (on the other node, when
 * there are two). Rates are fixed per second over the whole population, so the load stays bounded
 * however long the run.
 *
 * Started by `soak.ts` with its options as JSON in argv; answers `report` and `drain` over IPC.
 */
import { WebSocket } from 'ws';
import type { ChurnCounters, ChurnOptions, ChurnReport } from './messages.js';

const TICK_MS = 100;
const MAX_CHANNELS_PER_CLIENT = 3;
const STATES = ['in-call', 'presenting', 'focus', 'lunch'];

type EndMode = 'clean' | 'abrupt' | 'logout' | 'resume';

interface Slot {
  index: number;
  userId: string;
  ws?: WebSocket;
  open: boolean;
  sessionId?: string;
  /** The session to resume on the next connect. */
  resumeId?: string;
  nodeIndex: number;
  channels: Set<string>;
  typing: Set<string>;
  /** Set when this side ended the connection, so the close is not counted as the server's. */
  ending?: EndMode;
  reconnectAt?: number;
}

/** A small seeded generator, so two runs with the same seed make the same choices. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Churn {
  readonly counters: ChurnCounters = {
    connected: 0,
    opened: 0,
    closedClean: 0,
    closedAbrupt: 0,
    loggedOut: 0,
    resumed: 0,
    moved: 0,
    commands: 0,
    messagesIn: 0,
    errorsIn: 0,
    closedByServer: 0,
    failedConnects: 0,
  };
  readonly errorCodes: Record<string, number> = {};
  private readonly slots: Slot[] = [];
  private readonly random: () => number;
  private timer?: NodeJS.Timeout;
  private commandCredit = 0;
  private disconnectCredit = 0;
  private draining = false;
  private ref = 0;

  constructor(private readonly options: ChurnOptions) {
    this.random = seeded(options.seed);
    for (let index = 0; index < options.clients; index += 1) {
      this.slots.push({
        index,
        // Each user has about clients/users sessions, well under the per-user session limit.
        userId: `soak-u${index % options.users}`,
        open: false,
        nodeIndex: index % options.urls.length,
        channels: new Set(),
        typing: new Set(),
        // Spread the first connects over two seconds rather than opening everything at once.
        reconnectAt: Date.now() + Math.floor(this.random() * 2000),
      });
    }
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)];
  }

  private tick(): void {
    const now = Date.now();
    for (const slot of this.slots) if (!slot.ws && slot.reconnectAt !== undefined && slot.reconnectAt <= now) this.connect(slot);
    const open = this.slots.filter((slot) => slot.open && !slot.ending);
    if (open.length === 0) return;
    this.commandCredit += (this.options.commandsPerSecond * TICK_MS) / 1000;
    for (; this.commandCredit >= 1; this.commandCredit -= 1) this.act(this.pick(open));
    this.disconnectCredit += (this.options.disconnectsPerSecond * TICK_MS) / 1000;
    for (; this.disconnectCredit >= 1; this.disconnectCredit -= 1) {
      const slot = this.pick(open);
      if (slot.open && !slot.ending) this.end(slot, this.pickEndMode());
    }
  }

  private pickEndMode(): EndMode {
    const roll = this.random();
    if (roll < 0.35) return 'clean';
    if (roll < 0.6) return 'abrupt';
    if (roll < 0.7) return 'logout';
    return 'resume';
  }

  private connect(slot: Slot): void {
    slot.reconnectAt = undefined;
    const resumeId = slot.resumeId;
    slot.resumeId = undefined;
    let moved = false;
    if (resumeId && this.options.urls.length > 1 && this.random() < 0.5) {
      slot.nodeIndex = (slot.nodeIndex + 1) % this.options.urls.length;
      moved = true;
    }
    const query = new URLSearchParams({ userId: slot.userId, device: this.random() < 0.5 ? 'web' : 'ios' });
    if (resumeId) query.set('sessionId', resumeId);
    const ws = new WebSocket(`${this.options.urls[slot.nodeIndex]}/realtime?${query}`, { perMessageDeflate: false });
    slot.ws = ws;
    slot.open = false;
    slot.ending = undefined;
    slot.channels.clear();
    slot.typing.clear();
    let welcomed = false;
    ws.on('open', () => {
      slot.open = true;
      this.counters.opened += 1;
      this.counters.connected += 1;
      if (resumeId) this.counters.resumed += 1;
      if (moved) this.counters.moved += 1;
      // A resumed session kept its channels on the server; the client re-joins like the SDK does.
      const joins = 1 + Math.floor(this.random() * 2);
      for (let i = 0; i < joins; i += 1) this.join(slot);
    });
    ws.on('message', (data: Buffer) => {
      this.counters.messagesIn += 1;
      if (!welcomed) {
        welcomed = true;
        const first = JSON.parse(data.toString('utf8')) as { type?: string; sessionId?: string } | Array<{ type?: string; sessionId?: string }>;
        const welcome = Array.isArray(first) ? first.find((m) => m.type === 'welcome') : first;
        if (welcome?.type === 'welcome') slot.sessionId = welcome.sessionId;
      }
      if (data.includes('"type":"error"')) {
        this.counters.errorsIn += 1;
        for (const match of data.toString('utf8').matchAll(/"type":"error"[^}]*?"code":"([A-Z_]+)"/g)) {
          this.errorCodes[match[1]] = (this.errorCodes[match[1]] ?? 0) + 1;
        }
      }
    });
    ws.on('error', () => {
      // A close always follows; counted there.
    });
    ws.on('close', (code) => {
      const wasOpen = slot.open;
      if (wasOpen) this.counters.connected -= 1;
      else this.counters.failedConnects += 1;
      const ending = slot.ending;
      if (wasOpen && !ending && !this.draining) {
        this.counters.closedByServer += 1;
        this.errorCodes[`close:${code}`] = (this.errorCodes[`close:${code}`] ?? 0) + 1;
      }
      slot.ws = undefined;
      slot.open = false;
      slot.ending = undefined;
      if (this.draining) return;
      if (ending === 'resume' && slot.sessionId) {
        // Back inside the offline delay: others must see nothing.
        slot.resumeId = slot.sessionId;
        slot.reconnectAt = Date.now() + 100 + Math.floor(this.random() * 900);
      } else {
        slot.reconnectAt = Date.now() + 500 + Math.floor(this.random() * 4500);
      }
      slot.sessionId = undefined;
    });
  }

  private send(slot: Slot, command: Record<string, unknown>): void {
    if (!slot.ws || !slot.open) return;
    this.ref += 1;
    slot.ws.send(JSON.stringify({ ...command, ref: this.ref }));
    this.counters.commands += 1;
  }

  private join(slot: Slot): void {
    if (slot.channels.size >= MAX_CHANNELS_PER_CLIENT) return;
    const channel = `soak:c${Math.floor(this.random() * this.options.channels)}`;
    if (slot.channels.has(channel)) return;
    slot.channels.add(channel);
    this.send(slot, { type: 'join', channel, meta: { mode: this.random() < 0.5 ? 'viewing' : 'editing' } });
  }

  private act(slot: Slot): void {
    const roll = this.random();
    const channels = [...slot.channels];
    const now = Date.now();
    if (roll < 0.1) this.join(slot);
    else if (roll < 0.17) {
      if (channels.length === 0) return this.join(slot);
      const channel = this.pick(channels);
      slot.channels.delete(channel);
      slot.typing.delete(channel);
      this.send(slot, { type: 'leave', channel });
    } else if (roll < 0.32) {
      const kind = this.random();
      if (kind < 0.3) this.send(slot, { type: 'status', status: 'online' });
      else if (kind < 0.5) this.send(slot, { type: 'status', status: this.random() < 0.5 ? 'away' : 'busy', message: `soak ${now % 1000}` });
      else if (kind < 0.6) this.send(slot, { type: 'status', status: 'invisible' });
      else if (kind < 0.8) {
        // Short expiries, so they all fall due before the end-of-run check.
        this.send(slot, { type: 'status', state: this.pick(STATES), message: 'soak', expiresAt: new Date(now + 1000 + Math.floor(this.random() * 4000)).toISOString() });
      } else this.send(slot, { type: 'status', status: 'busy', expiresAt: new Date(now + 2000).toISOString() });
    } else if (roll < 0.42) {
      this.send(slot, { type: 'meta', meta: { name: `User ${slot.userId}`, n: Math.floor(this.random() * 1000), tmp: this.random() < 0.5 ? 'x' : null } });
    } else if (roll < 0.5) {
      if (channels.length === 0) return this.join(slot);
      this.send(slot, { type: 'channel.meta', channel: this.pick(channels), meta: { cursor: Math.floor(this.random() * 500) } });
    } else if (roll < 0.72) {
      if (channels.length === 0) return this.join(slot);
      const channel = this.pick(channels);
      if (slot.typing.has(channel) && this.random() < 0.6) {
        slot.typing.delete(channel);
        this.send(slot, { type: 'typing', channel, typing: false });
      } else {
        // Some typing is never stopped and must time out on the server.
        slot.typing.add(channel);
        this.send(slot, { type: 'typing', channel, typing: true });
      }
    } else if (roll < 0.82) this.send(slot, { type: 'activity' });
    else if (roll < 0.87) this.send(slot, { type: 'idle' });
    else if (roll < 0.93) {
      const users = Array.from({ length: 1 + Math.floor(this.random() * 5) }, () => `soak-u${Math.floor(this.random() * this.options.users)}`);
      this.send(slot, { type: this.random() < 0.7 ? 'watch' : 'unwatch', users });
    } else this.send(slot, { type: 'ping' });
  }

  private end(slot: Slot, mode: EndMode): void {
    const ws = slot.ws;
    if (!ws) return;
    slot.ending = mode;
    if (mode === 'clean') {
      this.counters.closedClean += 1;
      ws.close(1000);
    } else if (mode === 'logout') {
      this.counters.loggedOut += 1;
      this.send(slot, { type: 'logout' });
      // The server closes after a logout; make sure the socket goes even if it does not.
      setTimeout(() => ws.terminate(), 2000).unref();
    } else {
      this.counters.closedAbrupt += 1;
      ws.terminate();
    }
  }

  /** Ends every client (half cleanly, half abruptly) and resolves when every socket has closed. */
  async drain(): Promise<void> {
    this.draining = true;
    clearInterval(this.timer);
    const closing: Promise<void>[] = [];
    for (const slot of this.slots) {
      slot.reconnectAt = undefined;
      const ws = slot.ws;
      if (!ws) continue;
      closing.push(new Promise((done) => ws.once('close', () => done())));
      if (!slot.open) ws.terminate();
      else if (slot.index % 2 === 0) {
        slot.ending = 'clean';
        ws.close(1000);
        setTimeout(() => ws.terminate(), 3000).unref();
      } else {
        slot.ending = 'abrupt';
        ws.terminate();
      }
    }
    await Promise.all(closing);
  }
}

if (typeof process.send === 'function' && process.argv[2]) {
  const options = JSON.parse(process.argv[2]) as ChurnOptions;
  const churn = new Churn(options);
  churn.start();
  process.on('message', (message: { churn: 'report' | 'drain'; id: number }) => {
    const reply = (): ChurnReport => ({ churnReport: message.id, counters: { ...churn.counters }, errorCodes: { ...churn.errorCodes } });
    if (message?.churn === 'report') process.send!(reply());
    else if (message?.churn === 'drain') void churn.drain().then(() => process.send!(reply()));
  });
  process.on('disconnect', () => process.exit(0));
  process.send({ churnReady: true });
}
