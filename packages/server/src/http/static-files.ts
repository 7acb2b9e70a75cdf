/**
 * Serves a built directory of web pages (the demo and the dashboard) on the server's own port.
 *
 * Deliberately narrow: GET and HEAD only, a fixed table of file types, paths made of plain
 * segments (no `..`, no dot-files, no percent-encoding, no backslashes), no directory listings.
 * Anything it does not serve falls through to the HTTP API, which answers 404 or 405 as JSON.
 */
import { readFile, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, resolve, sep } from 'node:path';

/** The only files served, by extension. */
export const STATIC_CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * Pages run only the bundled code from this server and talk only to it; images may also come
 * from https URLs, because users' avatars (`meta.avatar`) are often hosted elsewhere.
 */
export const PAGE_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: https:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** One or more segments of letters, digits, `_`, `-` and inner dots; `/` alone is the index. */
const SAFE_PATH = /^(?:\/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*\/?$/;

export interface StaticFilesOptions {
  /** The directory to serve (e.g. the web package's `dist`). */
  root: string;
  /** Path prefixes that belong to someone else (the API); they are never looked up as files. */
  reserved?: readonly string[];
}

/**
 * Returns a handler that serves the file for a request and resolves `true`, or resolves `false`
 * (having written nothing) when the request is not for a file it has.
 *
 * `/` serves `index.html`, and a path without an extension serves that path plus `.html`
 * (`/dashboard` → `dashboard.html`), so pages have clean URLs without any directory handling.
 */
export function createStaticFiles(options: StaticFilesOptions): (req: IncomingMessage, res: ServerResponse) => Promise<boolean> {
  const root = resolve(options.root);
  const reserved = options.reserved ?? [];

  return async (req, res) => {
    // A client reset while the file is read must not surface as an unhandled 'error' event.
    req.on('error', noop);
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') return false;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (!SAFE_PATH.test(path)) return false;
    if (reserved.some((prefix) => path === prefix || path.startsWith(`${prefix}/`))) return false;
    if (path.endsWith('/') && path !== '/') return false;

    const relative = path === '/' ? 'index.html' : extname(path) === '' ? `${path.slice(1)}.html` : path.slice(1);
    const type = STATIC_CONTENT_TYPES[extname(relative)];
    if (!type) return false;
    const file = join(root, relative);
    // SAFE_PATH already rules out `..`; this is the second lock on the same door.
    if (!file.startsWith(root + sep)) return false;

    let body: Buffer;
    let etag: string;
    try {
      const info = await stat(file);
      if (!info.isFile()) return false;
      etag = `W/"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
      body = await readFile(file);
    } catch {
      return false;
    }
    if (res.headersSent || res.destroyed) return true;

    res.setHeader('Content-Type', type);
    res.setHeader('ETag', etag);
    // File names are fixed (no content hashes), so browsers revalidate every time; a 304 is cheap.
    res.setHeader('Cache-Control', 'no-cache');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    if (type.startsWith('text/html')) {
      res.setHeader('Content-Security-Policy', PAGE_CONTENT_SECURITY_POLICY);
      res.setHeader('X-Frame-Options', 'DENY');
    }
    if (req.headers['if-none-match'] === etag) {
      res.statusCode = 304;
      res.end();
      return true;
    }
    res.statusCode = 200;
    res.setHeader('Content-Length', body.byteLength);
    res.end(method === 'HEAD' ? undefined : body);
    return true;
  };
}

function noop(): void {}
