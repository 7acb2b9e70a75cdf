import { connect as connectTcp, isIP, type Socket } from 'node:net';
import { connect as connectTls, type ConnectionOptions as TlsOptions } from 'node:tls';

/*
 * One pub/sub connection to one Redis server, spoken in RESP2 directly. ioredis's connection cannot
 * be used here: Redis (7.0 and later) pushes an unsolicited `sunsubscribe` to every subscriber of a
 * shard channel whose slot migrates away, and ioredis takes that push for the reply of the next
 * queued command, after which the connection's replies and commands no longer match. Here every
 * subscribe and unsubscribe reply names its channel, so an unsolicited one is recognised as what it
 * is: the topic moved to another shard.
 */

/** Where a link connects, and how it authenticates. */
export interface LinkAddress {
  host: string;
  port: number;
  username?: string;
  password?: string;
  /** TLS options (rediss://); undefined: plain TCP. */
  tls?: TlsOptions;
}

export type SubscribeKind = 'subscribe' | 'ssubscribe';

export interface LinkEvents {
  message(topic: string, payload: string): void;
  /** The server dropped a subscription by itself: a shard channel whose slot moved to another shard. */
  dropped(topic: string): void;
  /** The connection is gone (once); every subscription on it with it. */
  closed(link: SubscriberLink): void;
}

type Reply = string | number | null | ReplyError | Reply[];

export class ReplyError extends Error {
  override readonly name = 'ReplyError';
}

/** What a pending command is waiting for. */
interface Pending {
  /** For (un)subscribe commands: the topics not acknowledged yet, each with its own reply. */
  topics?: Set<string>;
  unsubscribe?: boolean;
  resolve(reply: Reply): void;
  reject(error: Error): void;
}

const CONNECT_TIMEOUT_MS = 5000;

/** Reads RESP2 replies out of the bytes a connection delivers, one whole reply at a time. */
export class RespReader {
  private buffer: Buffer = Buffer.alloc(0);
  private offset = 0;

  push(chunk: Buffer): void {
    this.buffer = this.offset < this.buffer.length ? Buffer.concat([this.buffer.subarray(this.offset), chunk]) : chunk;
    this.offset = 0;
  }

  /** The next whole reply, or undefined until more bytes arrive. */
  next(): Reply | undefined {
    const start = this.offset;
    const value = this.read();
    if (value === undefined) this.offset = start;
    return value;
  }

  private line(): string | undefined {
    const end = this.buffer.indexOf('\r\n', this.offset, 'latin1');
    if (end < 0) return undefined;
    const text = this.buffer.toString('utf8', this.offset + 1, end);
    this.offset = end + 2;
    return text;
  }

  private read(): Reply | undefined {
    if (this.offset >= this.buffer.length) return undefined;
    const type = String.fromCharCode(this.buffer[this.offset]);
    const text = this.line();
    if (text === undefined) return undefined;
    switch (type) {
      case '+':
        return text;
      case '-':
        return new ReplyError(text);
      case ':':
        return Number(text);
      case '$': {
        const length = Number(text);
        if (length < 0) return null;
        if (this.buffer.length < this.offset + length + 2) return undefined;
        const value = this.buffer.toString('utf8', this.offset, this.offset + length);
        this.offset += length + 2;
        return value;
      }
      case '*': {
        const count = Number(text);
        if (count < 0) return null;
        const items: Reply[] = [];
        for (let i = 0; i < count; i++) {
          const item = this.read();
          if (item === undefined) return undefined;
          items.push(item);
        }
        return items;
      }
      default:
        throw new Error(`not a RESP2 reply (type byte ${JSON.stringify(type)})`);
    }
  }
}

function encode(args: string[]): string {
  let out = `*${args.length}\r\n`;
  for (const arg of args) out += `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`;
  return out;
}

/**
 * A subscriber connection to one server. It does not reconnect: when it closes, its owner
 * (TopicSubscriber) decides where the topics go next, since after a failover or a slot migration
 * that is another server.
 */
export class SubscriberLink {
  /** Topics this server acknowledged and has not dropped. */
  readonly topics = new Set<string>();
  private readonly socket: Socket;
  private readonly reader = new RespReader();
  private readonly pending: Pending[] = [];
  private readonly opened: Promise<void>;
  private isClosed = false;

  constructor(
    readonly address: LinkAddress,
    private readonly events: LinkEvents,
  ) {
    const { host, port, tls } = address;
    this.socket = tls ? connectTls({ host, port, servername: isIP(host) ? undefined : host, ...tls }) : connectTcp({ host, port });
    this.socket.setNoDelay(true);
    this.socket.setKeepAlive(true, 10_000);
    const timer = setTimeout(() => this.socket.destroy(new Error(`connect to ${host}:${port} timed out`)), CONNECT_TIMEOUT_MS);
    this.opened = new Promise<void>((resolve, reject) => {
      this.socket.once(tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        resolve();
      });
      this.socket.once('close', () => {
        clearTimeout(timer);
        reject(new Error(`connection to ${host}:${port} closed`));
      });
    });
    this.opened.catch(() => {});
    this.socket.on('data', (chunk: Buffer) => this.receive(chunk));
    this.socket.on('error', () => {
      // Followed by 'close'.
    });
    this.socket.on('close', () => this.closeNow());
    if (address.password !== undefined) {
      const auth = address.username ? ['AUTH', address.username, address.password] : ['AUTH', address.password];
      this.command(auth).catch((error: Error) => this.socket.destroy(error));
    }
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Resolves once connected (and the AUTH sent); rejects if the connection failed. */
  ready(): Promise<void> {
    return this.opened;
  }

  /** Resolves once the server acknowledged every topic; rejects with its error (MOVED, CLUSTERDOWN, …) or a closed connection. */
  async subscribe(kind: SubscribeKind, topics: string[]): Promise<void> {
    await this.command([kind.toUpperCase(), ...topics], new Set(topics), false);
    for (const topic of topics) this.topics.add(topic);
  }

  async unsubscribe(kind: SubscribeKind, topics: string[]): Promise<void> {
    for (const topic of topics) this.topics.delete(topic);
    await this.command([kind === 'ssubscribe' ? 'SUNSUBSCRIBE' : 'UNSUBSCRIBE', ...topics], new Set(topics), true);
  }

  close(): void {
    this.socket.destroy();
    this.closeNow();
  }

  private command(args: string[], topics?: Set<string>, unsubscribe?: boolean): Promise<Reply> {
    if (this.isClosed) return Promise.reject(new Error(`connection to ${this.address.host}:${this.address.port} closed`));
    return new Promise<Reply>((resolve, reject) => {
      this.pending.push({ topics, unsubscribe, resolve, reject });
      this.socket.write(encode(args));
    });
  }

  private receive(chunk: Buffer): void {
    this.reader.push(chunk);
    try {
      for (let reply = this.reader.next(); reply !== undefined; reply = this.reader.next()) this.dispatch(reply);
    } catch (error) {
      this.socket.destroy(error as Error);
    }
  }

  private dispatch(reply: Reply): void {
    if (Array.isArray(reply) && typeof reply[0] === 'string') {
      const [kind, topic, payload] = reply as [string, string, unknown];
      switch (kind) {
        case 'message':
        case 'smessage':
          this.events.message(topic, String(payload));
          return;
        case 'subscribe':
        case 'ssubscribe':
          this.acknowledge(topic, false);
          return;
        case 'unsubscribe':
        case 'sunsubscribe':
          if (!this.acknowledge(topic, true) && this.topics.delete(topic)) this.events.dropped(topic);
          return;
      }
    }
    // Any other reply (an error, AUTH's OK) answers the oldest command.
    const head = this.pending.shift();
    if (!head) return;
    if (reply instanceof ReplyError) head.reject(reply);
    else head.resolve(reply);
  }

  /** An (un)subscribe reply for the oldest command, if it waits for this topic. */
  private acknowledge(topic: string, unsubscribe: boolean): boolean {
    const head = this.pending[0];
    if (!head?.topics || head.unsubscribe !== unsubscribe || !head.topics.delete(topic)) return false;
    if (head.topics.size === 0) {
      this.pending.shift();
      head.resolve(null);
    }
    return true;
  }

  private closeNow(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    const error = new Error(`connection to ${this.address.host}:${this.address.port} closed`);
    for (const waiting of this.pending.splice(0)) waiting.reject(error);
    this.topics.clear();
    this.events.closed(this);
  }
}
