/**
 * Minimal path router for the HTTP API: a handful of fixed templates with `:param` segments.
 * Matching is by whole segments of the raw (still percent-encoded) path, so an encoded `/` inside
 * a parameter can never change which route matches; handlers decode their parameters themselves.
 */

export interface RouteMatch<H> {
  /** The template, e.g. `/realtime/users/:id/presence`: the only path form that reaches metrics. */
  template: string;
  handler: H;
  /** Raw (percent-encoded) parameter segments by name. */
  params: Record<string, string>;
}

export type MatchResult<H> =
  | ({ kind: 'found' } & RouteMatch<H>)
  /** The path exists, but not for this method. `allow` lists the methods it does take. */
  | { kind: 'method-not-allowed'; template: string; allow: string[] }
  | { kind: 'not-found' };

interface Route<H> {
  template: string;
  segments: string[];
  handlers: Map<string, H>;
}

export class Router<H> {
  private readonly routes: Route<H>[] = [];

  /** Registers `handler` for `method` on `template`; GET routes answer HEAD too. */
  add(method: string, template: string, handler: H): this {
    let route = this.routes.find((r) => r.template === template);
    if (!route) {
      route = { template, segments: splitPath(template), handlers: new Map() };
      this.routes.push(route);
    }
    route.handlers.set(method.toUpperCase(), handler);
    return this;
  }

  match(method: string, path: string): MatchResult<H> {
    const segments = splitPath(path);
    for (const route of this.routes) {
      const params = matchSegments(route.segments, segments);
      if (!params) continue;
      const upper = method.toUpperCase();
      const handler = route.handlers.get(upper) ?? (upper === 'HEAD' ? route.handlers.get('GET') : undefined);
      if (handler === undefined) {
        return { kind: 'method-not-allowed', template: route.template, allow: this.allowed(route) };
      }
      return { kind: 'found', template: route.template, handler, params };
    }
    return { kind: 'not-found' };
  }

  /** The template a path belongs to, whatever the method (for CORS preflights). */
  templateOf(path: string): { template: string; allow: string[] } | undefined {
    const segments = splitPath(path);
    const route = this.routes.find((r) => matchSegments(r.segments, segments) !== undefined);
    return route && { template: route.template, allow: this.allowed(route) };
  }

  private allowed(route: Route<H>): string[] {
    const methods = [...route.handlers.keys()];
    if (methods.includes('GET') && !methods.includes('HEAD')) methods.push('HEAD');
    return methods;
  }
}

function splitPath(path: string): string[] {
  // The leading `/` gives an empty first segment; keeping empty segments means `/a//b` and `/a/b/`
  // do not match `/a/b`, so there is exactly one spelling of each route.
  return path.split('/').slice(1);
}

function matchSegments(template: string[], path: string[]): Record<string, string> | undefined {
  if (template.length !== path.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < template.length; i++) {
    const want = template[i];
    const got = path[i];
    if (want.startsWith(':')) {
      if (got === '') return undefined;
      params[want.slice(1)] = got;
    } else if (want !== got) {
      return undefined;
    }
  }
  return params;
}

/** Percent-decodes one path parameter; undefined when the encoding is malformed (e.g. `%E0%A4`). */
export function decodeParam(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}
