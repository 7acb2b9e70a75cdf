import type { KeyObject } from 'node:crypto';

/*
 * What a configured public key is good for. Configuration checks it at start (a clear message
 * naming the variable); token verification picks the algorithm from it.
 */

/** The JWT algorithm a public key verifies, or undefined for a key the server does not accept. */
export function jwtAlgorithmFor(key: KeyObject): 'RS256' | 'ES256' | undefined {
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  return undefined;
}

export function describeKey(key: KeyObject): string {
  return key.asymmetricKeyType === 'ec'
    ? `EC ${key.asymmetricKeyDetails?.namedCurve ?? 'unknown curve'}`
    : (key.asymmetricKeyType ?? 'unknown');
}
