import { useId, useState, type FormEvent } from 'react';
import type { ManualStatus, SelfPresence, StatusUpdate } from '@presence/client';
import { useMyPresence, usePresenceClient } from './presence.js';
import { STATUS_LABELS, stateLabel } from './format.js';

const EXPIRIES: { value: string; label: string; ms?: number }[] = [
  { value: 'never', label: "Don't clear" },
  { value: '30m', label: '30 minutes', ms: 30 * 60_000 },
  { value: '1h', label: '1 hour', ms: 60 * 60_000 },
  { value: '4h', label: '4 hours', ms: 4 * 60 * 60_000 },
  { value: 'today', label: 'Today' },
];

function expiryDate(choice: string): Date | null {
  if (choice === 'today') {
    const end = new Date();
    end.setHours(23, 59, 59, 0);
    return end;
  }
  const ms = EXPIRIES.find((e) => e.value === choice)?.ms;
  return ms === undefined ? null : new Date(Date.now() + ms);
}

/** `online`, a manual status, or `state:<name>` for a configured custom state. */
function currentChoice(self: SelfPresence): string {
  if (self.manualStatus === 'invisible') return 'invisible';
  if (self.state) return `state:${self.state}`;
  return self.manualStatus ?? 'online';
}

/** Sets this user's status: automatic, away, busy, invisible or a custom state, with a message and an expiry. */
export function StatusPicker() {
  const { self, setStatus } = useMyPresence();
  const client = usePresenceClient();
  const states = client.welcome?.states ?? {};
  const ids = { status: useId(), message: useId(), expiry: useId() };
  const [choice, setChoice] = useState<string | undefined>(undefined);
  const [message, setMessage] = useState<string | undefined>(undefined);
  const [expiry, setExpiry] = useState('never');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  if (!self) return <p className="hint">Connecting…</p>;

  const selected = choice ?? currentChoice(self);
  const text = message ?? self.message ?? '';

  const apply = async (update: StatusUpdate | 'online') => {
    setBusy(true);
    setError('');
    try {
      await setStatus(update);
      setChoice(undefined);
      setMessage(undefined);
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    } finally {
      setBusy(false);
    }
  };

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const expiresAt = expiryDate(expiry);
    const common = { message: text.trim() || null, expiresAt };
    if (selected.startsWith('state:')) {
      // A state does not replace `invisible` by itself (invisible must stay invisible); ask for it.
      if (self.manualStatus === 'invisible') await setStatus('online').catch(() => undefined);
      await apply({ state: selected.slice('state:'.length), ...common });
    } else {
      await apply({ status: selected as 'online' | ManualStatus, state: null, ...common });
    }
  };

  return (
    <form className="status-picker" onSubmit={(event) => void submit(event)} aria-label="Your status">
      <label htmlFor={ids.status}>Status</label>
      <select id={ids.status} value={selected} onChange={(event) => setChoice(event.target.value)}>
        <option value="online">{STATUS_LABELS.online} (automatic)</option>
        <option value="away">{STATUS_LABELS.away}</option>
        <option value="busy">{STATUS_LABELS.busy}</option>
        <option value="invisible">{STATUS_LABELS.invisible}</option>
        {Object.keys(states).length > 0 && (
          <optgroup label="Custom states">
            {Object.entries(states).map(([state, base]) => (
              <option key={state} value={`state:${state}`}>
                {stateLabel(state)} ({base})
              </option>
            ))}
          </optgroup>
        )}
      </select>

      <label htmlFor={ids.message}>Status message</label>
      <input
        id={ids.message}
        value={text}
        maxLength={256}
        placeholder="What are you up to?"
        autoComplete="off"
        onChange={(event) => setMessage(event.target.value)}
      />

      <label htmlFor={ids.expiry}>Clear after</label>
      <select id={ids.expiry} value={expiry} onChange={(event) => setExpiry(event.target.value)}>
        {EXPIRIES.map((e) => (
          <option key={e.value} value={e.value}>
            {e.label}
          </option>
        ))}
      </select>

      <div className="row">
        <button type="submit" disabled={busy}>
          Set status
        </button>
        <button
          type="button"
          className="secondary"
          disabled={busy}
          onClick={() => void apply({ status: 'online', state: null, message: null, expiresAt: null })}
        >
          Clear
        </button>
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}
