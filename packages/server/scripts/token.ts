/**
 * Prints a signed user token for trying a server with auth on: HS256 with PRESENCE_JWT_SECRET
 * from the environment (the server's own secret), or RS256/ES256 with `--private-key FILE` (the
 * private half of PRESENCE_JWT_PUBLIC_KEY). The claims are the ones the server reads
 * (src/auth/tokens.ts; docs/configuration.md, "Claims").
 *
 *   PRESENCE_JWT_SECRET=… npm run -s token -- --user ada --name Ada --channels 'room:*'
 *
 * Exit codes: 0 printed a token (or the help), 2 refused the arguments or found no key.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import { describeKey, jwtAlgorithmFor } from '../src/config/keys.js';

/** Refused arguments: printed as one line, exit code 2. */
export class TokenRequestError extends Error {}

const OPTIONS = {
  user: { type: 'string', arg: 'ID', help: 'The user id (sub), 1–128 characters. Required.' },
  name: { type: 'string', arg: 'NAME', help: 'Seeds meta.name when the user connects.' },
  avatar: { type: 'string', arg: 'URL', help: 'Seeds meta.avatar when the user connects.' },
  meta: { type: 'string', arg: 'JSON', help: 'A JSON object merged into the user\'s meta when they connect.' },
  channels: { type: 'string', arg: 'LIST', help: 'Comma list of channels (or patterns with *) the user may join; absent: any.' },
  contacts: { type: 'string', arg: 'LIST', help: 'Comma list of users who see this user under contacts visibility.' },
  visibility: { type: 'string', arg: 'V', help: 'everyone | contacts | nobody.' },
  'expires-in': { type: 'string', arg: 'SPAN', help: 'Lifetime: seconds or a span like 15m, 2h, 7d (default 1h).' },
  audience: { type: 'string', arg: 'AUD', help: 'aud claim (default: PRESENCE_JWT_AUDIENCE when set).' },
  issuer: { type: 'string', arg: 'ISS', help: 'iss claim (default: PRESENCE_JWT_ISSUER when set).' },
  'private-key': { type: 'string', arg: 'FILE', help: 'Sign with this PEM private key: RS256 for RSA, ES256 for EC P-256.' },
  help: { type: 'boolean', arg: '', help: 'Print this help and exit.' },
} as const;

export const TOKEN_HELP: string = [
  'Usage: npm run -s token -- --user ID [options]',
  '',
  'Prints a signed user token for this server on stdout. The key is PRESENCE_JWT_SECRET from the',
  'environment (HS256), or --private-key FILE (RS256/ES256) for a server configured with the',
  'matching PRESENCE_JWT_PUBLIC_KEY. Without either it refuses (exit code 2): a server without',
  'auth runs in development mode and takes ?userId= instead of a token.',
  '',
  'Options:',
  ...Object.entries(OPTIONS).map(([name, o]) => `  ${`--${name}${o.arg ? ` ${o.arg}` : ''}`.padEnd(22)}${o.help}`),
  '',
].join('\n');

const VISIBILITIES = ['everyone', 'contacts', 'nobody'];
const MAX_USER_ID_LENGTH = 128;

type Env = Record<string, string | undefined>;

export interface SignedToken {
  token: string;
  alg: 'HS256' | 'RS256' | 'ES256';
  claims: Record<string, unknown>;
}

function list(raw: string): string[] {
  return raw.split(',').map((item) => item.trim()).filter((item) => item !== '');
}

function privateKey(file: string): { key: KeyObject; alg: 'RS256' | 'ES256' } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TokenRequestError(`--private-key ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: text, format: 'pem' });
  } catch (err) {
    throw new TokenRequestError(`--private-key ${file} is not a PEM private key (${(err as Error).message})`);
  }
  const alg = jwtAlgorithmFor(createPublicKey(key));
  if (!alg) throw new TokenRequestError(`--private-key ${file} must be an RSA key (RS256) or an EC P-256 key (ES256), got ${describeKey(key)}`);
  return { key, alg };
}

/** Signs the token the arguments ask for; throws TokenRequestError for anything it refuses. */
export async function signUserToken(argv: readonly string[], env: Env): Promise<SignedToken> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: Object.fromEntries(Object.entries(OPTIONS).map(([name, o]) => [name, { type: o.type }])),
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TokenRequestError(`${(err as Error).message} (see --help)`);
  }
  const text = (name: keyof typeof OPTIONS): string | undefined => {
    const value = values[name];
    if (typeof value !== 'string') return undefined;
    if (value.trim() === '') throw new TokenRequestError(`--${name} needs a value`);
    return value;
  };

  const user = text('user');
  if (user === undefined) throw new TokenRequestError('--user ID is required: the user id the token is for');
  if (user.length > MAX_USER_ID_LENGTH) throw new TokenRequestError(`--user must be at most ${MAX_USER_ID_LENGTH} characters (the server refuses a longer sub)`);

  const claims: Record<string, unknown> = {};
  for (const field of ['name', 'avatar'] as const) {
    const value = text(field);
    if (value !== undefined) claims[field] = value;
  }
  const meta = text('meta');
  if (meta !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(meta);
    } catch {
      throw new TokenRequestError('--meta must be a JSON object, e.g. --meta \'{"team":"core"}\'');
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new TokenRequestError('--meta must be a JSON object, e.g. --meta \'{"team":"core"}\'');
    claims.meta = parsed;
  }
  for (const field of ['channels', 'contacts'] as const) {
    const value = values[field];
    // An empty list is meaningful for channels: no channel at all.
    if (typeof value === 'string') claims[field] = list(value);
  }
  const visibility = text('visibility');
  if (visibility !== undefined) {
    if (!VISIBILITIES.includes(visibility)) throw new TokenRequestError(`--visibility must be one of ${VISIBILITIES.join(', ')} (got "${visibility}")`);
    claims.visibility = visibility;
  }

  const signer = new SignJWT(claims).setSubject(user).setIssuedAt();
  const expiresIn = text('expires-in') ?? '1h';
  try {
    signer.setExpirationTime(/^\d+$/.test(expiresIn) ? Math.floor(Date.now() / 1000) + Number(expiresIn) : expiresIn);
  } catch {
    throw new TokenRequestError(`--expires-in must be seconds or a span like 15m, 2h, 7d (got "${expiresIn}")`);
  }
  const audience = text('audience') ?? (env.PRESENCE_JWT_AUDIENCE?.trim() || undefined);
  if (audience !== undefined) signer.setAudience(audience);
  const issuer = text('issuer') ?? (env.PRESENCE_JWT_ISSUER?.trim() || undefined);
  if (issuer !== undefined) signer.setIssuer(issuer);

  const keyFile = text('private-key');
  if (keyFile !== undefined) {
    const { key, alg } = privateKey(keyFile);
    signer.setProtectedHeader({ alg, typ: 'JWT' });
    try {
      return { token: await signer.sign(key), alg, claims };
    } catch (err) {
      throw new TokenRequestError(`--private-key ${keyFile} cannot sign ${alg} tokens (${(err as Error).message})`);
    }
  }
  // Verbatim, as the server takes it: a trailing space is part of the secret.
  const secret = env.PRESENCE_JWT_SECRET;
  if (secret === undefined || secret.trim() === '') {
    throw new TokenRequestError(
      'no signing key: set PRESENCE_JWT_SECRET (HS256, the secret the server has) or pass --private-key FILE ' +
        '(RS256/ES256, the private half of the server\'s PRESENCE_JWT_PUBLIC_KEY). ' +
        'A server with neither runs in development mode: connect with ?userId=' + user + ' instead of a token',
    );
  }
  signer.setProtectedHeader({ alg: 'HS256', typ: 'JWT' });
  return { token: await signer.sign(new TextEncoder().encode(secret)), alg: 'HS256', claims };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(TOKEN_HELP);
    return;
  }
  try {
    const { token, alg } = await signUserToken(argv, process.env);
    process.stdout.write(`${token}\n`);
    // Only a terminal gets the note: `TOKEN=$(npm run -s token -- …)` wants the token alone.
    if (process.stderr.isTTY) process.stderr.write(`(${alg}; connect with ws://localhost:8080/realtime?token=…)\n`);
  } catch (err) {
    if (!(err instanceof TokenRequestError)) throw err;
    process.stderr.write(`token: ${err.message}\n`);
    process.exitCode = 2;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
