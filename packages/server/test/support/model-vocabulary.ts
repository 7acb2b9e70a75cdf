/**
 * What both model-based tests (one engine, a cluster) generate their commands from: the few users,
 * channels, devices and states they use, and how a generated status turns into the model's patch.
 */
import fc from 'fast-check';
import type { Meta } from '@presence/protocol';
import type { StatusPatch } from './reference-model.js';

export const USERS = ['ann', 'bob', 'cid'];
export const CHANNELS = ['room', 'doc'];
export const DEVICES = ['web', 'ios'];
export const STATES = { 'in-call': 'busy', lunch: 'away', available: 'online' } as const;
export const TRUSTED = { trusted: true } as const;

export const iso = (ms: number) => new Date(ms).toISOString();

/** A status command as generated: the expiry is relative, so a shrunk sequence keeps its meaning. */
export interface StatusGen {
  status?: 'online' | 'away' | 'busy' | 'invisible';
  state?: string | null;
  message?: string | null;
  /** ms from now; 0 is in the past (refused). */
  expiresIn?: number | null;
}

/** Indices pick among what exists when the command runs, so a shrunk sequence stays meaningful. */
export const index = fc.nat({ max: 20 });
export const channel = fc.nat({ max: CHANNELS.length - 1 });

/** A meta patch of one or two of `keys`, each set to one of `values` or removed (null). */
export function metaPatch(keys: string[], values: string[]): fc.Arbitrary<Meta> {
  const value = fc.oneof(fc.constantFrom(...values), fc.integer({ min: 0, max: 3 }), fc.constant(null));
  return fc.dictionary(fc.constantFrom(...keys), value, { minKeys: 1, maxKeys: 2 }) as fc.Arbitrary<Meta>;
}

export const toPatch = (gen: StatusGen, now: number): StatusPatch => ({
  ...(gen.status !== undefined ? { status: gen.status } : {}),
  ...(gen.state !== undefined ? { state: gen.state } : {}),
  ...(gen.message !== undefined ? { message: gen.message } : {}),
  ...(gen.expiresIn !== undefined ? { expiresAt: gen.expiresIn === null ? null : now + gen.expiresIn } : {}),
});
