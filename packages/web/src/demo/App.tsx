import { useEffect, useId, useMemo, useRef, useState } from 'react';
import type { PresenceClientOptions } from '@presence/client';
import { PresenceProvider, useConnectionStatus, useMyPresence, usePresenceClient } from './presence.js';
import { AVATAR_PICTURES, avatarPath } from '../shared/avatars.js';
import { Avatar } from './Avatar.js';
import { displayName, statusLine } from './format.js';
import { Room } from './Room.js';
import { StatusPicker } from './StatusPicker.js';
import { WatchList } from './WatchList.js';
import { ROOMS, loadSession, realtimeUrl, saveSession, userIdFor, type DemoSession } from './session.js';

export function App() {
  const [session, setSession] = useState<DemoSession | null>(() => loadSession());
  const [notice, setNotice] = useState('');
  const update = (next: DemoSession | null) => {
    saveSession(next);
    setSession(next);
  };
  const options = useMemo((): PresenceClientOptions | undefined => {
    if (!session) return undefined;
    const base = { url: realtimeUrl(), device: 'web' };
    if (session.token) return { ...base, getToken: () => session.token! };
    const params: Record<string, string> = { name: session.name };
    if (session.avatar) params.avatar = session.avatar;
    return { ...base, userId: userIdFor(session.name), params };
    // A new client only for a new identity; switching rooms keeps the session.
  }, [session?.name, session?.avatar, session?.token]);

  if (!session || !options) {
    return (
      <>
        <TopBar />
        <SignIn
          notice={notice}
          onJoin={(next) => {
            setNotice('');
            update(next);
          }}
        />
      </>
    );
  }
  // One provider, and so one client and one session, per identity; it closes the client on unmount.
  return (
    <PresenceProvider key={`${userIdFor(session.name)} ${session.avatar ?? ''} ${session.token ?? ''}`} options={options}>
      <TopBar connection />
      <Shell
        session={session}
        onRoom={(room) => update({ ...session, room })}
        onSignOut={(reason) => {
          setNotice(reason ?? '');
          update(null);
        }}
      />
    </PresenceProvider>
  );
}

function TopBar({ connection = false }: { connection?: boolean }) {
  return (
    <header className="topbar">
      <h1>Presence demo</h1>
      {connection && <ConnectionBadge />}
      <a className="nav-link" href="dashboard">
        Dashboard
      </a>
    </header>
  );
}

function ConnectionBadge() {
  const status = useConnectionStatus();
  return (
    <p className={`connection connection-${status}`} role="status">
      {status}
    </p>
  );
}

function SignIn({ onJoin, notice }: { onJoin: (session: DemoSession) => void; notice: string }) {
  const ids = { name: useId(), room: useId(), token: useId() };
  const [name, setName] = useState('');
  const [avatar, setAvatar] = useState('');
  const [room, setRoom] = useState<string>(ROOMS[0]);
  const [token, setToken] = useState('');
  return (
    <main className="signin">
      <form
        className="card"
        aria-labelledby="signin-heading"
        onSubmit={(event) => {
          event.preventDefault();
          if (!name.trim()) return;
          onJoin({ name: name.trim(), room, ...(avatar ? { avatar } : {}), ...(token.trim() ? { token: token.trim() } : {}) });
        }}
      >
        <h2 id="signin-heading">Join a room</h2>
        <p className="hint">Open this page in a second window under another name to see presence from both sides.</p>
        {notice && (
          <p className="error" role="alert">
            {notice}
          </p>
        )}
        <label htmlFor={ids.name}>Your name</label>
        <input id={ids.name} value={name} required maxLength={64} autoComplete="nickname" autoFocus onChange={(e) => setName(e.target.value)} />

        <fieldset className="avatars">
          <legend>Avatar</legend>
          <label className="avatar-choice">
            <input type="radio" name="avatar" value="" checked={avatar === ''} onChange={() => setAvatar('')} />
            <Avatar user={{ userId: userIdFor(name || 'guest'), meta: { name: name || '?' } }} status="online" />
            <span>Initials</span>
          </label>
          {AVATAR_PICTURES.map((picture) => (
            <label key={picture.id} className="avatar-choice">
              <input type="radio" name="avatar" value={avatarPath(picture.id)} checked={avatar === avatarPath(picture.id)} onChange={() => setAvatar(avatarPath(picture.id))} />
              <Avatar user={{ userId: picture.id, meta: { avatar: avatarPath(picture.id) } }} status="online" />
              <span>{picture.label}</span>
            </label>
          ))}
        </fieldset>

        <label htmlFor={ids.room}>Room</label>
        <select id={ids.room} value={room} onChange={(e) => setRoom(e.target.value)}>
          {ROOMS.map((r) => (
            <option key={r} value={r}>
              #{r}
            </option>
          ))}
        </select>

        <details>
          <summary>The server requires a token?</summary>
          <label htmlFor={ids.token}>User token (JWT)</label>
          <textarea id={ids.token} value={token} rows={3} onChange={(e) => setToken(e.target.value)} />
          <p className="hint">
            Without a token the demo uses development mode (<code>?userId=</code>), which only a server without auth accepts.
          </p>
        </details>

        <button type="submit">Join</button>
      </form>
    </main>
  );
}

interface ShellProps {
  session: DemoSession;
  onRoom: (room: string) => void;
  onSignOut: (reason?: string) => void;
}

function Shell({ session, onRoom, onSignOut }: ShellProps) {
  const client = usePresenceClient();
  const { self, setMeta } = useMyPresence();
  const signingOut = useRef(false);
  const signOut = useRef(onSignOut);
  signOut.current = onSignOut;

  // A token's claims may name the user otherwise; the name picked here wins for the demo.
  useEffect(() => {
    if (!self) return;
    const avatar = session.avatar ?? null;
    if (self.meta.name !== session.name || (self.meta.avatar ?? null) !== avatar) {
      setMeta({ name: session.name, avatar }).catch(() => undefined);
    }
  }, [self, session.name, session.avatar, setMeta]);

  useEffect(
    () =>
      client.on('ended', (reason) => {
        if (signingOut.current) return;
        signOut.current(
          reason.code === 'LOGGED_OUT' ? 'You were signed out on another device.' : `The server ended the connection: ${reason.message} (${reason.code}).`,
        );
      }),
    [client],
  );

  return (
    <main className="layout">
      <aside className="sidebar">
        <section className="card" aria-labelledby="me-heading">
          <h2 id="me-heading">You</h2>
          {self ? (
            <div className="member me">
              <Avatar user={self} status={self.manualStatus === 'invisible' ? 'invisible' : self.status} size="large" />
              <span className="who">
                <span className="name">{displayName(self)}</span>
                <span className="status-text">{statusLine(self, self.manualStatus)}</span>
              </span>
            </div>
          ) : (
            <p className="hint">Connecting…</p>
          )}
          <StatusPicker />
          <button type="button" className="secondary signout" onClick={() => {
              signingOut.current = true;
              void client.logout().finally(() => onSignOut());
            }}>
            Sign out
          </button>
        </section>
        <section className="card" aria-labelledby="watch-heading">
          <h2 id="watch-heading">Watch list</h2>
          <WatchList owner={client.userId ?? userIdFor(session.name)} />
        </section>
      </aside>
      <div className="main">
        <nav className="rooms" aria-label="Rooms">
          {ROOMS.map((room) => (
            <button key={room} type="button" className={room === session.room ? 'room-tab active' : 'room-tab'} aria-pressed={room === session.room} onClick={() => onRoom(room)}>
              #{room}
            </button>
          ))}
        </nav>
        <Room key={session.room} room={session.room} />
      </div>
    </main>
  );
}
