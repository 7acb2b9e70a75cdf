/**
 * Pusher's HTTP API under `/apps/:app_id/`, for an app's backend (the `pusher` server libraries,
 * Laravel's broadcaster): trigger events, read channels and members, end a user's connections.
 * Every request is signed as Pusher's libraries sign it (docs/pusher.md#http-api); failures are
 * answered with the server's JSON error body and stable codes, like the rest of the HTTP API.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerConfig } from '../config/config.js';
import { PresenceError, isPresenceError } from '../errors.js';
import type { Logger } from '../log.js';
import { isPlainObject } from '../presence/validation.js';
import { parseChannel, type PusherChannel } from '../protocol-pusher/channel-names.js';
import { PusherError } from '../protocol-pusher/errors.js';
import type { ChannelInfo, PusherProtocol } from '../protocol-pusher/pusher-protocol.js';
import { bodyMd5, hmacHex, requestSigningText, sameSecret } from '../protocol-pusher/signatures.js';
import { RequestAbortedError, readJsonBody } from './body.js';
import { HttpRateLimits, RateLimitedError, clientAddress } from './rate-limits.js';
import { Router, decodeParam } from './router.js';

export const PUSHER_API_PREFIX = '/apps/';

export const PUSHER_ROUTES = {
  events: '/apps/:app_id/events',
  batchEvents: '/apps/:app_id/batch_events',
  channels: '/apps/:app_id/channels',
  channel: '/apps/:app_id/channels/:channel_name',
  channelUsers: '/apps/:app_id/channels/:channel_name/users',
  terminate: '/apps/:app_id/users/:user_id/terminate_connections',
} as const;

/** Pusher's limits on one request. */
const MAX_CHANNELS_PER_EVENT = 100;
const MAX_BATCH = 10;
const MAX_EVENT_NAME_LENGTH = 200;
/** How far `auth_timestamp` may be from the server's clock, as on Pusher. */
const MAX_CLOCK_DIFFERENCE_SECONDS = 600;

export interface PusherApiDeps {
  pusher: PusherProtocol;
  config: ServerConfig;
  log: Logger;
  /** Counts every answer by route template (the HTTP request metric). */
  count(route: string, status: number): void;
  /** @default Date.now */
  now?: () => number;
}

interface Request {
  req: IncomingMessage;
  query: URLSearchParams;
  params: Record<string, string>;
  body: Record<string, unknown> | undefined;
}

type Handler = (request: Request) => unknown;

/** One event to trigger, checked. */
interface EventToSend {
  name: string;
  data: string;
  channels: PusherChannel[];
  socketId?: string;
  info: Set<string>;
}

export function createPusherApi(deps: PusherApiDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { pusher, config, log } = deps;
  const app = pusher.config;
  const now = deps.now ?? Date.now;
  const limits = config.limits;
  const rateLimits = new HttpRateLimits(limits, now);

  const channel = (name: unknown): PusherChannel => {
    try {
      return parseChannel(name, limits.maxChannelNameLength);
    } catch (error) {
      if (error instanceof PusherError) throw new PresenceError('INVALID_CHANNEL', error.message);
      throw error;
    }
  };

  const info = (channelInfo: ChannelInfo, wanted: Set<string>): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    if (wanted.has('user_count') && channelInfo.userCount !== undefined) out.user_count = channelInfo.userCount;
    if (wanted.has('subscription_count')) out.subscription_count = channelInfo.subscriptionCount;
    return out;
  };

  const send = async (event: EventToSend): Promise<Record<string, unknown> | undefined> => {
    pusher.trigger(
      event.channels.map((c) => c.name),
      event.name,
      event.data,
      event.socketId,
    );
    if (event.info.size === 0) return undefined;
    const channels: Record<string, unknown> = {};
    for (const c of event.channels) channels[c.name] = info(await pusher.channelInfo(c), event.info);
    return channels;
  };

  const router = new Router<Handler>()
    .add('POST', PUSHER_ROUTES.events, async ({ body }) => {
      const event = parseEvent(body!, channel, 'the body');
      const channels = await send(event);
      return channels ? { channels } : {};
    })
    .add('POST', PUSHER_ROUTES.batchEvents, async ({ body }) => {
      const batch = body!.batch;
      if (!Array.isArray(batch) || batch.length === 0 || batch.length > MAX_BATCH) {
        throw new PresenceError('INVALID_MESSAGE', `"batch" must be an array of 1–${MAX_BATCH} events`);
      }
      // Every event is checked before any is sent: a refused batch sends nothing.
      const events = batch.map((item, i) => {
        if (!isPlainObject(item)) throw new PresenceError('INVALID_MESSAGE', `batch[${i}] must be an object`);
        return parseEvent(item, channel, `batch[${i}]`);
      });
      const answers: unknown[] = [];
      for (const event of events) {
        const channels = await send(event);
        answers.push(channels ? Object.values(channels)[0] : {});
      }
      return events.some((e) => e.info.size > 0) ? { batch: answers } : {};
    })
    .add('GET', PUSHER_ROUTES.channels, async ({ query }) => {
      const prefix = query.get('filter_by_prefix') ?? '';
      const wanted = infoAttributes(query.get('info'));
      if (wanted.has('subscription_count')) throw new PresenceError('INVALID_MESSAGE', 'info=subscription_count is for one channel (GET /channels/:name)');
      if (wanted.has('user_count') && !prefix.startsWith('presence-')) {
        throw new PresenceError('INVALID_MESSAGE', 'info=user_count needs filter_by_prefix=presence-');
      }
      const channels: Record<string, unknown> = {};
      const names = await pusher.occupiedChannels(prefix);
      const infos = wanted.size === 0 ? [] : await Promise.all(names.map((name) => pusher.channelInfo(channel(name))));
      names.forEach((name, i) => (channels[name] = wanted.size === 0 ? {} : info(infos[i], wanted)));
      return { channels };
    })
    .add('GET', PUSHER_ROUTES.channel, async ({ params, query }) => {
      const target = channel(decodeParam(params.channel_name));
      const wanted = infoAttributes(query.get('info'));
      if (wanted.has('user_count') && target.kind !== 'presence') throw new PresenceError('INVALID_MESSAGE', 'info=user_count is for presence channels');
      const found = await pusher.channelInfo(target);
      return { occupied: found.occupied, ...info(found, wanted) };
    })
    .add('GET', PUSHER_ROUTES.channelUsers, async ({ params }) => {
      const target = channel(decodeParam(params.channel_name));
      if (target.kind !== 'presence') throw new PresenceError('INVALID_MESSAGE', 'only presence channels have users');
      return { users: (await pusher.members(target.base)).map((id) => ({ id })) };
    })
    .add('POST', PUSHER_ROUTES.terminate, ({ params }) => {
      const userId = decodeParam(params.user_id);
      if (!userId || userId.length > limits.maxUserIdLength) throw new PresenceError('INVALID_USER_ID');
      pusher.terminate(userId);
      return {};
    });

  /** Checks Pusher's request signature; throws UNAUTHORIZED. */
  function verify(method: string, path: string, query: URLSearchParams, body: Buffer | undefined): void {
    const refuse = (why: string) => new PresenceError('UNAUTHORIZED', why);
    const key = query.get('auth_key');
    const timestamp = query.get('auth_timestamp');
    const signature = query.get('auth_signature');
    if (key === null || timestamp === null || signature === null) throw refuse('sign the request: auth_key, auth_timestamp, auth_version and auth_signature (Pusher\'s server libraries do)');
    if (key !== app.key) throw refuse('unknown auth_key');
    const version = query.get('auth_version');
    if (version !== null && version !== '1.0') throw refuse('auth_version must be 1.0');
    if (!/^\d{1,12}$/.test(timestamp) || Math.abs(now() / 1000 - Number(timestamp)) > MAX_CLOCK_DIFFERENCE_SECONDS) {
      throw refuse(`auth_timestamp must be within ${MAX_CLOCK_DIFFERENCE_SECONDS} s of the server's clock`);
    }
    if (body !== undefined && body.length > 0 && query.get('body_md5') !== bodyMd5(body)) throw refuse('body_md5 does not match the body');
    if (!sameSecret(signature, hmacHex(app.secret, requestSigningText(method, path, query)))) throw refuse('invalid auth_signature');
  }

  async function handle(req: IncomingMessage, res: ServerResponse, state: { route: string }): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
    const method = (req.method ?? 'GET').toUpperCase();
    const match = router.match(method, path);
    if (match.kind === 'not-found') throw new PresenceError('NOT_FOUND', 'No such route of the Pusher HTTP API.');
    state.route = match.template;
    if (match.kind === 'method-not-allowed') {
      res.setHeader('Allow', match.allow.join(', '));
      throw new PresenceError('METHOD_NOT_ALLOWED', `${match.template} accepts ${match.allow.join(', ')}.`);
    }
    let raw: Buffer | undefined;
    let body: Record<string, unknown> | undefined;
    try {
      if (method === 'POST') {
        const parsed = await readJsonBody(req, limits.maxFrameBytes, { raw: (bytes) => (raw = bytes) });
        if (!isPlainObject(parsed)) throw new PresenceError('INVALID_MESSAGE', 'The request body must be a JSON object.');
        body = parsed;
      }
      verify(method, path, query, raw);
      if (decodeParam(match.params.app_id) !== app.appId) throw new PresenceError('NOT_FOUND', 'No app with this id on this server.');
    } catch (error) {
      // Failed credentials cost the client's address, as on the rest of the API.
      if (isPresenceError(error)) rateLimits.take('ip', clientAddress(req, config.trustProxyHops));
      throw error;
    }
    rateLimits.take('key', 'pusher-app');
    const json = JSON.stringify(await match.handler({ req, query, params: match.params, body }));
    reply(res, 200, json, state.route);
  }

  function reply(res: ServerResponse, status: number, body: string, route: string, headers: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return;
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    res.statusCode = status;
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.setHeader('Cache-Control', 'no-store');
    deps.count(route, status);
    res.end(body);
  }

  return (req, res) => {
    req.on('error', () => {});
    const state = { route: 'unmatched' };
    handle(req, res, state).catch((error: unknown) => {
      if (error instanceof RequestAbortedError) {
        if (!res.headersSent) res.destroy();
        return;
      }
      let failure: PresenceError;
      if (isPresenceError(error)) {
        failure = error;
      } else {
        log.error('Pusher HTTP API request failed', { err: error, route: state.route });
        failure = new PresenceError('INTERNAL', 'Internal server error.');
      }
      const headers: Record<string, string> = {};
      if (failure instanceof RateLimitedError) headers['Retry-After'] = String(failure.retryAfterSeconds);
      if (failure.code === 'FRAME_TOO_LARGE') headers.Connection = 'close';
      reply(res, failure.httpStatus, JSON.stringify({ error: { code: failure.code, message: failure.message } }), state.route, headers);
    });
  };
}

/** `info=user_count,subscription_count`: the attributes asked for. */
function infoAttributes(raw: string | null): Set<string> {
  const wanted = new Set((raw ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  for (const attribute of wanted) {
    if (attribute !== 'user_count' && attribute !== 'subscription_count') {
      throw new PresenceError('INVALID_MESSAGE', `info: unknown attribute ${JSON.stringify(attribute.slice(0, 32))} (user_count, subscription_count)`);
    }
  }
  return wanted;
}

/** One event of `POST /events` or of a batch: `{name, data, channel | channels, socket_id?, info?}`. */
function parseEvent(body: Record<string, unknown>, channel: (name: unknown) => PusherChannel, where: string): EventToSend {
  const { name, data, socket_id: socketId } = body;
  if (typeof name !== 'string' || name === '' || name.length > MAX_EVENT_NAME_LENGTH) {
    throw new PresenceError('INVALID_MESSAGE', `${where}: "name" must be a string of 1–${MAX_EVENT_NAME_LENGTH} characters`);
  }
  if (name.startsWith('pusher:') || name.startsWith('pusher_internal:')) {
    throw new PresenceError('INVALID_MESSAGE', `${where}: event names starting with pusher: are the protocol's own`);
  }
  if (typeof data !== 'string') throw new PresenceError('INVALID_MESSAGE', `${where}: "data" must be a string (JSON-encode objects)`);
  let names: unknown[];
  if (body.channels !== undefined) {
    if (!Array.isArray(body.channels) || body.channels.length === 0 || body.channels.length > MAX_CHANNELS_PER_EVENT) {
      throw new PresenceError('INVALID_MESSAGE', `${where}: "channels" must be an array of 1–${MAX_CHANNELS_PER_EVENT} channel names`);
    }
    names = body.channels;
  } else if (body.channel !== undefined) {
    names = [body.channel];
  } else {
    throw new PresenceError('INVALID_MESSAGE', `${where}: "channel" or "channels" is required`);
  }
  if (socketId !== undefined && (typeof socketId !== 'string' || !/^\d+\.\d+$/.test(socketId))) {
    throw new PresenceError('INVALID_MESSAGE', `${where}: "socket_id" must look like 1234.5678`);
  }
  if (body.info !== undefined && typeof body.info !== 'string') throw new PresenceError('INVALID_MESSAGE', `${where}: "info" must be a string`);
  const event: EventToSend = { name, data, channels: names.map(channel), info: infoAttributes((body.info as string | undefined) ?? null) };
  if (socketId !== undefined) event.socketId = socketId as string;
  if (event.info.has('user_count') && event.channels.some((c) => c.kind !== 'presence')) {
    throw new PresenceError('INVALID_MESSAGE', `${where}: info=user_count is for presence channels`);
  }
  return event;
}
