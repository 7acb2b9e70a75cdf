import { useEffect, useMemo, useRef, useSyncExternalStore } from 'react';

/**
 * `useSyncExternalStore` with a selector: the component re-renders only when the selected value
 * changes by `isEqual`, not whenever the store does. A selection equal to the previous one is
 * returned as the previous one (same reference), so it is also safe in effect dependencies.
 * (The technique of React's own `useSyncExternalStoreWithSelector`, without the extra package.)
 */
export function useSyncSelector<Snapshot, Selection>(
  subscribe: (onChange: () => void) => () => void,
  getSnapshot: () => Snapshot,
  select: (snapshot: Snapshot) => Selection,
  isEqual: (a: Selection, b: Selection) => boolean = Object.is,
): Selection {
  // The value last rendered, so that a new selector (an inline function) keeps an equal result.
  const committed = useRef<{ value: Selection } | null>(null);
  const getSelection = useMemo(() => {
    let memo: { snapshot: Snapshot; selection: Selection } | undefined;
    return (): Selection => {
      const snapshot = getSnapshot();
      if (memo && Object.is(memo.snapshot, snapshot)) return memo.selection;
      const next = select(snapshot);
      const previous = memo ? { value: memo.selection } : committed.current;
      const selection = previous && isEqual(previous.value, next) ? previous.value : next;
      memo = { snapshot, selection };
      return selection;
    };
  }, [getSnapshot, select, isEqual]);
  const value = useSyncExternalStore(subscribe, getSelection, getSelection);
  useEffect(() => {
    committed.current = { value };
  }, [value]);
  return value;
}

/**
 * Equality one level deep: the same value, or arrays with the same items, or plain objects with
 * the same keys and values (each compared with `Object.is`). For selectors that build a new array
 * or object from unchanged parts, e.g. `select: (p) => p.members.map((m) => m.userId)`.
 */
export function shallow(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, index) => Object.is(item, b[index]));
  }
  if (Array.isArray(b)) return false;
  const keysA = Object.keys(a);
  if (keysA.length !== Object.keys(b).length) return false;
  return keysA.every((key) => Object.hasOwn(b, key) && Object.is((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]));
}
