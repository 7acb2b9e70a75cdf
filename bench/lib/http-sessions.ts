/**
 * Users present over HTTP heartbeats (`POST /realtime/heartbeat`), held by the bench process itself
 * through a handful of keep-alive sockets. They let one node hold more users than its open-files
 * limit allows sockets: the idle-node tax needs 20,000 users on one node, and a process here may
 * open at most 20,000 files (a limit this machine does not let us raise).
 *
 * Each user sits in a channel of `channelSize` HTTP users, sends a heartbeat every half interval
 * (spread evenly, so the node sees a steady trickle, not a burst) and acknowledges what it got, as
 * `@presence/client/http` does. The server runs in development mode (`?userId=`).
 */
import { Agent, request } from 'node:http';

export interface HttpSessions {
  /** Users whose first heartbeat was answered. */
  readonly ready: number;
  /** Heartbeats that failed (status or network), after the first. */
  readonly failures: number;
  /** Heartbeats answered. */
  readonly sent: number;
  stop(): void;
}

interface Held {
  userId: string;
  channel: string;
  sessionId?: string;
  ack: Record<string, number>;
}

interface HeartbeatAnswer {
  sessionId: string;
  intervalMs: number;
  events: Array<{ type: string; channel?: string; seq?: number }>;
}

/** Opens `count` HTTP sessions on `baseUrl` (http://host:port) and keeps them alive until stopped. */
export async function startHttpSessions(baseUrl: string, options: { count: number; channelSize: number; prefix?: string; sockets?: number }): Promise<HttpSessions> {
  const agent = new Agent({ keepAlive: true, maxSockets: options.sockets ?? 4 });
  const prefix = options.prefix ?? 'http';
  const held: Held[] = Array.from({ length: options.count }, (_, i) => ({
    userId: `${prefix}-u${i}`,
    channel: `${prefix}-c${Math.floor(i / options.channelSize)}`,
    ack: {},
  }));
  let ready = 0;
  let failures = 0;
  let sent = 0;
  let intervalMs = 10_000;

  const beat = async (user: Held): Promise<boolean> => {
    try {
      const answer = await post(agent, `${baseUrl}/realtime/heartbeat?userId=${encodeURIComponent(user.userId)}`, {
        ...(user.sessionId ? { sessionId: user.sessionId } : {}),
        channels: [user.channel],
        ack: user.ack,
      });
      user.sessionId = answer.sessionId;
      intervalMs = answer.intervalMs;
      for (const event of answer.events) if (event.channel && typeof event.seq === 'number') user.ack[event.channel] = event.seq;
      sent += 1;
      return true;
    } catch {
      failures += 1;
      return false;
    }
  };

  // Open them a few at a time: as many in flight as there are sockets.
  let next = 0;
  await Promise.all(
    Array.from({ length: options.sockets ?? 4 }, async () => {
      while (next < held.length) {
        const user = held[next++];
        if (await beat(user)) ready += 1;
      }
    }),
  );
  failures = 0;

  // Then one heartbeat every half interval per user, spread over it.
  let stopped = false;
  let cursor = 0;
  const tickMs = 20;
  const timer = setInterval(() => {
    const perTick = Math.max(1, Math.round((held.length * tickMs) / (intervalMs / 2)));
    for (let i = 0; i < perTick && !stopped; i += 1) {
      void beat(held[cursor]);
      cursor = (cursor + 1) % held.length;
    }
  }, tickMs);

  return {
    get ready() {
      return ready;
    },
    get failures() {
      return failures;
    },
    get sent() {
      return sent;
    },
    stop() {
      stopped = true;
      clearInterval(timer);
      agent.destroy();
    },
  };
}

function post(agent: Agent, url: string, body: unknown): Promise<HeartbeatAnswer> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) reject(new Error(`heartbeat answered ${res.statusCode}: ${text.slice(0, 200)}`));
        else resolve(JSON.parse(text) as HeartbeatAnswer);
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('heartbeat timed out')));
    req.end(payload);
  });
}
