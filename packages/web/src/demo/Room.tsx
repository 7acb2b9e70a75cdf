import { useState } from 'react';
import type { Member } from '@presence/client';
import { Avatar } from './Avatar.js';
import { displayName, lastSeenText, statusLine, typingLine } from './format.js';
import { useNow, useRecentlyLeft } from './hooks.js';
import { usePresence, usePresenceClient, useTyping, type DemoChannelMeta, type DemoUserMeta } from './presence.js';

/** One room: its members, who just left, who is typing, and a message field that drives typing. */
export function Room({ room }: { room: string }) {
  const name = `room:${room}`;
  const client = usePresenceClient();
  const { status, members } = usePresence(name, { meta: { mode: 'viewing' } });
  const { typing, onInput, stop } = useTyping(name);
  const left = useRecentlyLeft(name);
  const now = useNow(5000);
  const [draft, setDraft] = useState('');
  const [sent, setSent] = useState<string[]>([]);

  const byId = new Map(members.map((m) => [m.userId, m]));
  const typingNames = typing.map((id) => (byId.has(id) ? displayName(byId.get(id)!) : id));

  return (
    <section className="room card" aria-labelledby="room-heading">
      <div className="room-head">
        <h2 id="room-heading">#{room}</h2>
        <p className="count">{members.length === 1 ? '1 member' : `${members.length} members`}</p>
      </div>

      <ul className="members" aria-label={`Members of #${room}`}>
        {members.map((member) => (
          <MemberRow key={member.userId} member={member} self={member.userId === client.userId} />
        ))}
      </ul>
      {status === 'joining' && <p className="hint">Joining…</p>}
      {status === 'error' && (
        <p className="error" role="alert">
          Could not join #{room}.
        </p>
      )}

      <p className="typing" role="status" aria-live="polite" data-testid="typing">
        {typingLine(typingNames)}
      </p>

      <form
        className="composer"
        onSubmit={(event) => {
          event.preventDefault();
          stop();
          if (draft.trim()) setSent((list) => [draft.trim(), ...list].slice(0, 5));
          setDraft('');
        }}
      >
        <label htmlFor="draft">Message to #{room}</label>
        <div className="row">
          <input
            id="draft"
            value={draft}
            autoComplete="off"
            maxLength={500}
            onChange={(event) => {
              setDraft(event.target.value);
              onInput();
            }}
            onBlur={stop}
          />
          <button type="submit">Send</button>
        </div>
        <p className="hint">Others see that you are typing. Messages stay on this page: Presence carries presence, not chat.</p>
      </form>
      {sent.length > 0 && (
        <ul className="sent" aria-label="Your messages">
          {sent.map((text, i) => (
            <li key={`${i}-${text}`}>{text}</li>
          ))}
        </ul>
      )}

      {left.length > 0 && (
        <section className="left" aria-labelledby="left-heading">
          <h3 id="left-heading">Recently left</h3>
          <ul aria-label="Recently left">
            {left.map(({ member, lastSeen }) => (
              <li key={member.userId} data-user={member.userId}>
                <Avatar user={member} status="offline" />
                <span>
                  <span className="name">{displayName(member)}</span> <span className="muted">{lastSeenText(lastSeen, now)}</span>
                </span>
              </li>
            ))}
          </ul>
        </section>
      )}
    </section>
  );
}

function MemberRow({ member, self }: { member: Member<DemoUserMeta, DemoChannelMeta>; self: boolean }) {
  return (
    <li className="member" data-user={member.userId} data-status={member.status}>
      <Avatar user={member} status={member.status} />
      <span className="who">
        <span className="name">
          {displayName(member)}
          {self && <span className="muted"> (you)</span>}
        </span>
        <span className="status-text">{statusLine(member)}</span>
      </span>
      {member.devices.some((d) => d !== 'unknown') && <span className="devices">{member.devices.filter((d) => d !== 'unknown').join(', ')}</span>}
    </li>
  );
}
