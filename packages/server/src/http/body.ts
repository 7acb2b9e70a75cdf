import type { IncomingMessage } from 'node:http';
import { PresenceError } from '../errors.js';

/**
 * Whether a Content-Type header names JSON. Parameters are allowed, but a charset other than
 * UTF-8 is refused: JSON on the wire is UTF-8 (RFC 8259), and decoding anything else as UTF-8
 * would silently corrupt names and messages.
 */
export function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  const [mediaType, ...params] = header.split(';');
  if (mediaType.trim().toLowerCase() !== 'application/json') return false;
  for (const param of params) {
    const [name, value = ''] = param.split('=');
    if (name.trim().toLowerCase() !== 'charset') continue;
    const charset = value.trim().replace(/^"(.*)"$/, '$1').toLowerCase();
    if (charset !== 'utf-8' && charset !== 'utf8') return false;
  }
  return true;
}

/** Thrown when the client went away mid-body: there is nobody left to answer. */
export class RequestAbortedError extends Error {
  constructor() {
    super('request aborted by the client');
    this.name = 'RequestAbortedError';
  }
}

/**
 * Reads and parses a JSON request body of at most `maxBytes` (UTF-8, whatever the Content-Type says
 * when `anyContentType` is set).
 *
 * Rejects with PresenceError UNSUPPORTED_MEDIA_TYPE, FRAME_TOO_LARGE or INVALID_JSON. An oversized
 * body is refused as soon as it is known to be too large — from Content-Length before reading
 * anything, or at the chunk that crosses the limit — and the rest is never buffered; the caller
 * should answer with `Connection: close` so the connection does not stay busy with the remainder.
 */
export function readJsonBody(
  req: IncomingMessage,
  maxBytes: number,
  options: { anyContentType?: boolean; /** Handed the body's bytes, for a signature over them. */ raw?: (bytes: Buffer) => void } = {},
): Promise<unknown> {
  // `anyContentType`: the unload beacon, which `navigator.sendBeacon` sends as text/plain.
  if (!options.anyContentType && !isJsonContentType(req.headers['content-type'])) {
    return Promise.reject(new PresenceError('UNSUPPORTED_MEDIA_TYPE', 'The request body must be application/json (UTF-8).'));
  }
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes) {
    return Promise.reject(tooLarge(maxBytes));
  }

  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let settled = false;

    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
      req.off('close', onClose);
    };
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      cleanup();
      chunks.length = 0;
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > maxBytes) {
        fail(tooLarge(maxBytes));
        // Keep the stream flowing with nothing listening, so the remainder is discarded as it
        // arrives instead of piling up in the socket's buffer until the connection closes.
        req.resume();
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      if (settled) return;
      settled = true;
      cleanup();
      const bytes = Buffer.concat(chunks, received);
      options.raw?.(bytes);
      let text: string;
      try {
        // Fatal decoding: invalid UTF-8 is a malformed body, not something to paper over with U+FFFD.
        text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        reject(new PresenceError('INVALID_JSON', 'The request body is not valid UTF-8.'));
        return;
      }
      try {
        resolve(JSON.parse(text));
      } catch (error) {
        reject(new PresenceError('INVALID_JSON', `The request body is not valid JSON: ${(error as Error).message}`));
      }
    };
    const onError = () => fail(new RequestAbortedError());
    const onAborted = () => fail(new RequestAbortedError());
    const onClose = () => {
      // `close` before `end` means the body was cut off.
      if (!req.complete) fail(new RequestAbortedError());
    };

    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
    req.on('close', onClose);
  });
}

function tooLarge(maxBytes: number): PresenceError {
  return new PresenceError('FRAME_TOO_LARGE', `The request body is larger than ${maxBytes} bytes.`);
}
