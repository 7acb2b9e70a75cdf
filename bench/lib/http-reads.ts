/**
 * Latency of the HTTP API's reads on one node: channel members, one user's presence, a bulk query,
 * a user's channels and a page of the online list. On a node whose clients see the users asked
 * about, the answer comes from memory; on a node without clients it is read from Redis first
 * (issue 14, point 7). Requests go one at a time over one keep-alive socket, so each figure is
 * the node's own time plus one loopback round trip, not a queue.
 */
import { Agent, request } from 'node:http';
import { newHistogram, summarize, type LatencySummary } from './histogram.js';

export type ReadKind = 'channel members' | 'user presence' | 'bulk query (50 users)' | "user's channels" | 'online list (page of 100)';

export interface HttpReadFigures {
  kind: ReadKind;
  requests: number;
  /** Answers other than 200 (none expected). */
  errors: number;
  latency: LatencySummary;
}

/**
 * `users` and `channels` name what exists (the bench's `u<i>` users in `g<k>` channels); each
 * request asks about a random one, so a node that reads through does not answer from one warm entry.
 */
export async function measureHttpReads(baseUrl: string, options: { users: number; channelSize: number; requests: number }): Promise<HttpReadFigures[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const channels = Math.max(1, Math.floor(options.users / options.channelSize));
  const pick = (n: number) => Math.floor(Math.random() * n);
  const kinds: Array<[ReadKind, () => { method: string; path: string; body?: unknown }]> = [
    ['channel members', () => ({ method: 'GET', path: `/realtime/channels/g${pick(channels)}/presence` })],
    ['user presence', () => ({ method: 'GET', path: `/realtime/users/u${pick(options.users)}/presence` })],
    ['bulk query (50 users)', () => ({ method: 'POST', path: '/realtime/presence/query', body: { userIds: Array.from({ length: 50 }, () => `u${pick(options.users)}`) } })],
    ["user's channels", () => ({ method: 'GET', path: `/realtime/users/u${pick(options.users)}/channels` })],
    ['online list (page of 100)', () => ({ method: 'GET', path: '/realtime/presence/online?limit=100' })],
  ];
  const results: HttpReadFigures[] = [];
  try {
    for (const [kind, next] of kinds) {
      const histogram = newHistogram();
      let errors = 0;
      for (let i = 0; i < options.requests; i += 1) {
        const { method, path, body } = next();
        const started = performance.now();
        const status = await send(agent, `${baseUrl}${path}`, method, body);
        histogram.recordValue(Math.max(1, Math.round((performance.now() - started) * 1000)));
        if (status !== 200) errors += 1;
      }
      results.push({ kind, requests: options.requests, errors, latency: summarize(histogram) });
    }
  } finally {
    agent.destroy();
  }
  return results;
}

function send(agent: Agent, url: string, method: string, body: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string | number> = payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
    const req = request(url, { method, agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.end(payload);
  });
}
