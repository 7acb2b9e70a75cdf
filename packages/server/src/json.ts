/*
 * Facts about JSON values that every layer needs (auth reads token claims, the model checks
 * commands): kept at the bottom so no layer imports another for them.
 */

/** A JSON object as `JSON.parse` makes it: not an array, not a class instance, not null. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
