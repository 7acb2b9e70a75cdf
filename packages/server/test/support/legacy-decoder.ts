/**
 * The hand-written command decoder the server used before the protocol schemas (frozen copy).
 * Kept for two checks only: the parity test (the schema decoder must answer every frame with the
 * same code and message) and the decode micro-benchmark (bench/decode.ts), which compares the two
 * in one run. Not used by the server.
 */
import { CLIENT_MESSAGE_TYPES, type ClientMessage, type ClientMessageType, type Ref } from '@presence/protocol';
import { PresenceError } from '../../src/errors.js';
import { isPlainObject } from '../../src/presence/validation.js';

const KNOWN_TYPES = new Set<string>(CLIENT_MESSAGE_TYPES);
const STATUS_VALUES = new Set(['online', 'away', 'busy', 'invisible']);
const HTTP_STATUS_VALUES = new Set([...STATUS_VALUES, 'offline']);
const VISIBILITY_VALUES = new Set(['everyone', 'contacts', 'nobody']);
const MAX_REF_LENGTH = 64;

function invalid(message: string): PresenceError {
  return new PresenceError('INVALID_MESSAGE', message);
}

function requireString(value: Record<string, unknown>, field: string, type: string): void {
  if (typeof value[field] !== 'string') throw invalid(`${type}: "${field}" must be a string`);
}

function requireObject(value: Record<string, unknown>, field: string, type: string, optional = false): void {
  if (optional && value[field] === undefined) return;
  if (!isPlainObject(value[field])) throw invalid(`${type}: "${field}" must be an object`);
}

function optionalNullableString(value: Record<string, unknown>, field: string, type: string): void {
  const v = value[field];
  if (v !== undefined && v !== null && typeof v !== 'string') throw invalid(`${type}: "${field}" must be a string or null`);
}

/**
 * Shape of the status fields shared by the `status` command and `POST /realtime/presence/update`
 * (which also accepts `status: "offline"`). Values are checked by the model.
 */
export function assertStatusFields(value: Record<string, unknown>, context: string, allowOffline = false): void {
  const statuses = allowOffline ? HTTP_STATUS_VALUES : STATUS_VALUES;
  if (value.status !== undefined && !statuses.has(value.status as string)) {
    throw invalid(`${context}: "status" must be one of ${[...statuses].join(', ')}`);
  }
  optionalNullableString(value, 'state', context);
  optionalNullableString(value, 'message', context);
  optionalNullableString(value, 'expiresAt', context);
  if (value.visibility !== undefined && !VISIBILITY_VALUES.has(value.visibility as string)) {
    throw invalid(`${context}: "visibility" must be one of everyone, contacts, nobody`);
  }
}

/** The `ref` of a frame, if it has a usable one: errors echo it even when the rest is invalid. */
export function refOf(value: unknown): Ref | undefined {
  if (!isPlainObject(value)) return undefined;
  const ref = value.ref;
  if (typeof ref === 'number' && Number.isFinite(ref)) return ref;
  if (typeof ref === 'string' && ref.length <= MAX_REF_LENGTH) return ref;
  return undefined;
}

/**
 * Checks the shape of a parsed frame and narrows it to a command. Semantic checks (channel names,
 * meta limits, configured states) belong to the model, which also serves the HTTP API.
 */
export function decodeCommand(value: unknown): ClientMessage {
  if (!isPlainObject(value)) throw invalid('a command must be a JSON object');
  const type = value.type;
  if (typeof type !== 'string') throw invalid('"type" must be a string');
  if (!KNOWN_TYPES.has(type)) throw new PresenceError('UNKNOWN_TYPE', `unknown message type "${type.slice(0, 64)}"`);
  if (value.ref !== undefined && refOf(value) === undefined) {
    throw invalid(`"ref" must be a finite number or a string of at most ${MAX_REF_LENGTH} characters`);
  }
  switch (type as ClientMessageType) {
    case 'join':
      requireString(value, 'channel', type);
      requireObject(value, 'meta', type, true);
      break;
    case 'leave':
      requireString(value, 'channel', type);
      break;
    case 'status':
      assertStatusFields(value, type);
      break;
    case 'meta':
      requireObject(value, 'meta', type);
      break;
    case 'channel.meta':
      requireString(value, 'channel', type);
      requireObject(value, 'meta', type);
      break;
    case 'typing':
      requireString(value, 'channel', type);
      if (typeof value.typing !== 'boolean') throw invalid('typing: "typing" must be a boolean');
      break;
    case 'watch':
    case 'unwatch':
      if (!Array.isArray(value.users) || !value.users.every((user) => typeof user === 'string')) {
        throw invalid(`${type}: "users" must be an array of user id strings`);
      }
      break;
    case 'activity':
    case 'idle':
    case 'ping':
    case 'logout':
      break;
  }
  return value as unknown as ClientMessage;
}
