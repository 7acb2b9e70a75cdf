import type { Meta, Visibility } from '@presence/protocol';

/** Who a verified credential says the caller is. Produced by the token verifier. */
export interface Identity {
  userId: string;
  /** Initial user meta seeded from claims (`name`, `avatar`). */
  meta: Meta;
  /** Channel allowlist patterns from the `channels` claim; absent: every channel is allowed. */
  channels?: string[];
  /** User ids allowed to see this user when visibility is `contacts` (`contacts` claim). */
  contacts?: string[];
  /** Initial visibility from the `visibility` claim. */
  visibility?: Visibility;
  /** When the token expires, in ms since the epoch; the connection is closed with 4001 then. */
  expiresAt?: number;
}

/** Who is asking over HTTP: a trusted backend (API key, or dev mode) or one user (their JWT). */
export type Viewer = { kind: 'trusted' } | { kind: 'user'; identity: Identity };
