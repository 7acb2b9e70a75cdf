import type { ClientMessage, Ref } from '@presence/protocol';
import { COMMANDS, Ref as RefSchema } from '@presence/protocol/schema';
import type { TObject } from '@sinclair/typebox';
import { PresenceError } from '../errors.js';
import { compile, expected, invalidField } from '../schema-checks.js';
import { isPlainObject } from './validation.js';

/** The compiled check of each command, by type: a valid frame costs one lookup and one check. */
const COMMAND_CHECKS = new Map<unknown, (value: unknown) => boolean>(
  Object.entries(COMMANDS).map(([type, schema]) => [type, compile(schema as TObject)]),
);
const isRef = compile(RefSchema);
/** Reported before the command's own fields, in their own words. */
const ENVELOPE = new Set(['type', 'ref']);

function invalid(message: string): PresenceError {
  return new PresenceError('INVALID_MESSAGE', message);
}

/** The `ref` of a frame, if it has a usable one: errors echo it even when the rest is invalid. */
export function refOf(value: unknown): Ref | undefined {
  if (!isPlainObject(value)) return undefined;
  const ref = value.ref;
  return isRef(ref) ? ref : undefined;
}

/**
 * Checks the shape of a parsed frame against its command's schema and narrows it to a command.
 * Semantic checks (channel names, meta limits, configured states) belong to the model, which
 * also serves the HTTP API.
 */
export function decodeCommand(value: unknown): ClientMessage {
  if (isPlainObject(value)) {
    const check = COMMAND_CHECKS.get(value.type);
    if (check !== undefined && check(value)) return value as unknown as ClientMessage;
  }
  throw commandError(value);
}

/** Why a frame is not a command: the first thing wrong, in the order a reader would check. */
function commandError(value: unknown): PresenceError {
  if (!isPlainObject(value)) return invalid('a command must be a JSON object');
  const type = value.type;
  if (typeof type !== 'string') return invalid('"type" must be a string');
  if (!Object.hasOwn(COMMANDS, type)) return new PresenceError('UNKNOWN_TYPE', `unknown message type "${type.slice(0, 64)}"`);
  if (value.ref !== undefined && !isRef(value.ref)) return invalid(`"ref" must be ${expected(RefSchema)}`);
  const schema = COMMANDS[type as keyof typeof COMMANDS] as TObject;
  const failure = invalidField(schema, value, ENVELOPE);
  return invalid(failure ? `${type}: "${failure.field}" must be ${failure.expected}` : `${type}: invalid command`);
}
