import type { ActivityTarget, VisibilitySource } from '../../src/index.js';

type Listener = (event: unknown) => void;

/** An event target that counts its listeners, standing in for `window`. */
export class FakeTarget implements ActivityTarget {
  private readonly listeners = new Map<string, Set<Listener>>();

  addEventListener(type: string, listener: Listener): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)!.add(listener);
  }

  removeEventListener(type: string, listener: Listener): void {
    this.listeners.get(type)?.delete(listener);
  }

  dispatch(type: string): void {
    for (const listener of [...(this.listeners.get(type) ?? [])]) listener({ type });
  }

  get listenerCount(): number {
    let count = 0;
    for (const set of this.listeners.values()) count += set.size;
    return count;
  }
}

/** Stands in for `document`: visibility plus listeners. */
export class FakeDocument extends FakeTarget implements VisibilitySource {
  visibilityState: 'visible' | 'hidden' = 'visible';

  setVisibility(state: 'visible' | 'hidden'): void {
    this.visibilityState = state;
    this.dispatch('visibilitychange');
  }
}
