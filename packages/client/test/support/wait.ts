import type { Emitter } from '../../src/emitter.js';

/**
 * Waiting without timing assertions: a test waits for a condition or an event; the timeout only
 * turns a hang into a readable failure.
 */
export async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The event map of an emitter (client, channel, …). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type EventsOf<S> = S extends Emitter<infer Events> ? Events : never;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyEmitter = Emitter<any>;
type ArgsOf<S, E extends keyof EventsOf<S>> = EventsOf<S>[E] extends (...args: infer A) => void ? A : never;

/** The next emission of `event` whose arguments satisfy `match`. */
export function nextEvent<S extends AnyEmitter, E extends keyof EventsOf<S> & string>(
  source: S,
  event: E,
  match: (...args: ArgsOf<S, E>) => boolean = () => true,
  timeoutMs = 8000,
): Promise<ArgsOf<S, E>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for event "${event}"`));
    }, timeoutMs);
    const off = source.on(event, (...args: ArgsOf<S, E>) => {
      if (!match(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args);
    });
  });
}

/** Records every emission of some events, for "nothing else happened" checks. */
export function record<S extends AnyEmitter>(source: S, events: (keyof EventsOf<S> & string)[]): { log: { event: string; args: unknown[] }[]; stop(): void } {
  const log: { event: string; args: unknown[] }[] = [];
  const offs = events.map((event) => source.on(event, (...args: unknown[]) => log.push({ event, args })));
  return { log, stop: () => offs.forEach((off) => off()) };
}
