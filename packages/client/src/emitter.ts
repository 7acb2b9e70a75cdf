/** Listener signatures by event name (an interface of methods works). */
export type EventMap<T> = { [K in keyof T]: (...args: never[]) => void };

/**
 * A small typed event emitter. `on` returns the function that removes the listener, which is
 * what `useSyncExternalStore` and effects want. A throwing listener does not stop the others.
 */
export class Emitter<Events extends EventMap<Events>> {
  /** Carries the event map in the type, for helpers that infer it; never set at runtime. */
  protected declare readonly eventTypes: Events;
  private readonly listeners = new Map<keyof Events, Set<Events[keyof Events]>>();

  on<E extends keyof Events>(event: E, listener: Events[E]): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  off<E extends keyof Events>(event: E, listener: Events[E]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    set.delete(listener);
    if (set.size === 0) this.listeners.delete(event);
  }

  /** Listeners currently registered, for one event or all. */
  listenerCount(event?: keyof Events): number {
    if (event !== undefined) return this.listeners.get(event)?.size ?? 0;
    let count = 0;
    for (const set of this.listeners.values()) count += set.size;
    return count;
  }

  protected emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as (...a: Parameters<Events[E]>) => void)(...args);
      } catch (error) {
        // An application bug in one listener must not break the client's own bookkeeping.
        reportListenerError(error);
      }
    }
  }
}

function reportListenerError(error: unknown): void {
  // Rethrown outside our call stack, where the host reports uncaught errors as usual.
  queueMicrotask(() => {
    throw error;
  });
}
