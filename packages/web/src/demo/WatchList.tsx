import { useEffect, useId, useState } from 'react';
import { useUsers } from './presence.js';
import { Avatar } from './Avatar.js';
import { displayName, lastSeenText, statusLine } from './format.js';
import { useNow } from './hooks.js';
import { userIdFor } from './session.js';

const MAX_WATCHED = 20;

function storageKey(owner: string): string {
  return `presence.demo.watch.${owner}`;
}

function loadWatched(owner: string): string[] {
  try {
    const parsed = JSON.parse(localStorage.getItem(storageKey(owner)) ?? '[]') as unknown;
    return Array.isArray(parsed) ? parsed.filter((id): id is string => typeof id === 'string').slice(0, MAX_WATCHED) : [];
  } catch {
    return [];
  }
}

/** Users watched across rooms (a contacts list), by name or user id; kept per user in this browser. */
export function WatchList({ owner }: { owner: string }) {
  const [ids, setIds] = useState(() => loadWatched(owner));
  const [draft, setDraft] = useState('');
  const inputId = useId();
  const users = useUsers(ids);
  const now = useNow(5000);
  useEffect(() => localStorage.setItem(storageKey(owner), JSON.stringify(ids)), [owner, ids]);
  const known = new Map(users.map((u) => [u.userId, u]));

  return (
    <div className="watch">
      <form
        className="row"
        onSubmit={(event) => {
          event.preventDefault();
          const id = userIdFor(draft);
          if (draft.trim() && !ids.includes(id)) setIds([...ids, id].slice(-MAX_WATCHED));
          setDraft('');
        }}
      >
        <label htmlFor={inputId} className="visually-hidden">
          Name or user id to watch
        </label>
        <input id={inputId} value={draft} placeholder="Name or user id" autoComplete="off" onChange={(e) => setDraft(e.target.value)} />
        <button type="submit">Watch</button>
      </form>
      {ids.length === 0 ? (
        <p className="hint">Watch someone to see their status from any room.</p>
      ) : (
        <ul className="members" aria-label="Watched users">
          {ids.map((id) => {
            const user = known.get(id);
            return (
              <li key={id} className="member" data-user={id} data-status={user?.status ?? 'offline'}>
                <Avatar user={user ?? { userId: id, meta: {} }} status={user?.status ?? 'offline'} />
                <span className="who">
                  <span className="name">{user ? displayName(user) : id}</span>
                  <span className="status-text">
                    {!user ? 'Loading…' : user.status === 'offline' ? lastSeenText(user.lastSeen, now) : statusLine(user)}
                  </span>
                </span>
                <button type="button" className="link" aria-label={`Stop watching ${user ? displayName(user) : id}`} onClick={() => setIds(ids.filter((x) => x !== id))}>
                  Remove
                </button>
              </li>
            );
          })}
        </ul>
      )}
    </div>
  );
}
