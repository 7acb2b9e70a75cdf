import type { Status, UserPresence } from '@presence/client';
import { avatarUrl, colorFor, displayName, initials } from './format.js';
import type { DemoUserMeta } from './presence.js';

interface AvatarProps {
  user: Pick<UserPresence<DemoUserMeta>, 'userId' | 'meta'>;
  status: Status | 'invisible';
  size?: 'small' | 'large';
}

/** A picture or initials, with a status dot. Decorative: the name and status are written next to it. */
export function Avatar({ user, status, size = 'small' }: AvatarProps) {
  const url = avatarUrl(user);
  const name = displayName(user);
  return (
    <span className={`avatar avatar-${size}`} aria-hidden="true">
      {url ? (
        <img src={url} alt="" width={40} height={40} />
      ) : (
        <span className="initials" style={{ background: colorFor(user.userId) }}>
          {initials(name)}
        </span>
      )}
      <span className={`dot dot-${status}`} />
    </span>
  );
}
