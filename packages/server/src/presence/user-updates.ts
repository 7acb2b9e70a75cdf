import type { Meta, SelfPresence, StatusCommand } from '@presence/protocol';
import type { Identity } from '../auth/identity.js';
import { PresenceError } from '../errors.js';
import type { PresenceEngine } from './engine.js';
import type { UserPatch } from './service.js';
import type { UserState } from './state.js';
import { factsOf, selfView } from './user-presence.js';
import { assertMessage, assertMetaPatch, assertMetaWithinLimits, assertUserId, mergeMeta, parseExpiry } from './validation.js';

/** setTimeout cannot wait longer than this; longer expiries re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * What a user sets about themself, shared by the WebSocket commands and the HTTP API: manual
 * status, custom state, message and its expiry, meta, privacy, and the claims of their token. It
 * changes the user's record, saves it, and asks the announcer to tell others; sessions, channels
 * and sockets stay with the engine.
 */
export class UserUpdates {
  constructor(private readonly engine: PresenceEngine) {}


  /** Applies a status patch; announces it unless the caller has more to change (then returns whether privacy changed). */
  applyStatus(
    user: UserState,
    command: Pick<StatusCommand, 'status' | 'state' | 'message' | 'expiresAt' | 'visibility'>,
    announce = true,
  ): boolean {
    const now = this.engine.clock.now();
    const manual = { ...user.record.manual };
    // Check everything first: a refused command changes nothing.
    const checked = this.checkStatus(command, now);
    const message = checked.message === undefined ? manual.message : checked.message;
    const expiresAt = checked.expiresAt;

    if (command.status === 'online') {
      manual.status = null;
      manual.state = null;
    } else if (command.status) {
      manual.status = command.status;
    }
    if (command.state !== undefined) {
      manual.state = command.state;
      // A new state replaces away/busy (the state carries its own base), but never breaks invisibility.
      if (command.state !== null && command.status === undefined && manual.status !== 'invisible') manual.status = null;
    }
    manual.message = message;
    // Every command that sets the manual presence sets its expiry anew; one that only changes
    // visibility leaves the running expiry alone.
    const setsManual = command.status !== undefined || command.state !== undefined || command.message !== undefined || command.expiresAt !== undefined;
    if (setsManual) manual.expiresAt = manual.status || manual.state || manual.message ? expiresAt : null;

    const wasInvisible = user.record.manual.status === 'invisible';
    const becomesInvisible = manual.status === 'invisible';
    if (!wasInvisible && becomesInvisible && user.sessions.size > 0) {
      // lastSeen freezes at the moment of going invisible, exactly as it would at a disconnect.
      user.record.lastSeenAt = now;
    }
    // Back in sight: others see the user's channels as joined now (stamped in the record, so every
    // node shows the same join time however late it hears of the change).
    if (wasInvisible && !becomesInvisible) user.record.shownAt = now;
    user.record.manual = manual;
    const visibilityChanged = command.visibility !== undefined && command.visibility !== user.record.visibility;
    if (command.visibility !== undefined) user.record.visibility = command.visibility;
    this.scheduleExpiry(user);
    this.engine.save(user);
    // After the save: an activity save is written quietly (other nodes are not told), and made
    // first it would carry the status change with it, so a user back from invisible stayed
    // offline on every other node.
    if (wasInvisible && !becomesInvisible && user.sessions.size > 0) this.engine.touchActivity(user, now);
    if (announce) this.engine.announcer.announce(user, visibilityChanged);
    return visibilityChanged;
  }

  /** Validates the status fields of a command or patch; returns the parsed message and expiry. */
  checkStatus(
    command: Pick<StatusCommand, 'state' | 'message' | 'expiresAt'>,
    now: number,
  ): { message: string | null | undefined; expiresAt: number | null } {
    if (command.state !== undefined && command.state !== null && !Object.hasOwn(this.engine.config.states, command.state)) {
      throw new PresenceError('UNKNOWN_STATE', `state "${String(command.state).slice(0, 64)}" is not configured`);
    }
    const message = command.message === undefined ? undefined : assertMessage(command.message, this.engine.config.limits);
    return { message, expiresAt: parseExpiry(command.expiresAt, now) };
  }

  applyMeta(user: UserState, patch: Meta, announce = true): void {
    const next = mergeMeta(user.record.meta, patch, this.engine.config.limits);
    if (sameJson(next, user.record.meta)) return;
    user.record.meta = next;
    this.engine.save(user);
    if (announce) this.engine.announcer.announce(user);
  }

  scheduleExpiry(user: UserState, lastInLine = false): void {
    this.engine.clock.clearTimer(user.expiryTimer);
    user.expiryTimer = undefined;
    const at = user.record.manual.expiresAt;
    if (at === null) return;
    const delay = at - this.engine.clock.now();
    user.expiryTimer = this.engine.clock.setTimer(lastInLine ? 0 : Math.min(delay, MAX_TIMER_MS), () => {
      user.expiryTimer = undefined;
      if (user.record.manual.expiresAt !== at) return;
      if (this.engine.clock.now() < at || !lastInLine) {
        // Due now: cleared after everything else due at this instant, so an offline delay that
        // ends at the same moment ends first (else the user would flash into sight and out).
        this.scheduleExpiry(user, this.engine.clock.now() >= at);
        return;
      }
      const wasInvisible = user.record.manual.status === 'invisible';
      user.record.manual = { status: null, state: null, message: null, expiresAt: null };
      // The expiry time itself, not this timer's: every node that clears it stamps the same moment.
      if (wasInvisible) user.record.shownAt = at;
      this.engine.save(user, 'expiry');
      // After the save, as in applyStatus: a quiet activity save must not carry the cleared status.
      if (wasInvisible && user.sessions.size > 0) this.engine.touchActivity(user, this.engine.clock.now());
      this.engine.announcer.announce(user);
      this.engine.releaseIfUnused(user);
    });
  }

  applyIdentity(user: UserState, identity: Identity): void {
    let changed = false;
    if (Object.keys(identity.meta).length > 0) {
      // Token claims (name, avatar) are the issuer's word and win over stored values.
      const next = mergeMeta(user.record.meta, identity.meta, this.engine.config.limits);
      if (!sameJson(next, user.record.meta)) {
        user.record.meta = next;
        changed = true;
      }
    }
    if (identity.contacts) {
      user.record.contacts = [...identity.contacts];
      changed = true;
    }
    if (identity.visibility && identity.visibility !== user.record.visibility) {
      user.record.visibility = identity.visibility;
      changed = true;
    }
    if (changed) this.engine.save(user);
  }

  /** `POST /realtime/presence/update`: the patch as if the user sent it; works for offline users too. */
  updateUser(userId: string, patch: UserPatch): SelfPresence {
    assertUserId(userId, this.engine.config.limits);
    const meta = patch.meta === undefined ? undefined : assertMetaPatch(patch.meta);
    if (meta) assertMetaWithinLimits(meta, this.engine.config.limits);
    for (const id of patch.contacts ?? []) assertUserId(id, this.engine.config.limits);
    const status = patch.status === 'offline' ? undefined : patch.status;
    const touchesStatus =
      status !== undefined || patch.state !== undefined || patch.message !== undefined || patch.expiresAt !== undefined || patch.visibility !== undefined;
    // Check the whole patch before changing anything, so a refused request changes nothing.
    if (touchesStatus) this.checkStatus(patch, this.engine.clock.now());
    const user = this.engine.userState(userId);
    if (meta) mergeMeta(user.record.meta, meta, this.engine.config.limits);
    // Released below, not here: the rest of the patch still applies to this object.
    if (patch.status === 'offline') {
      this.engine.replication.publish({ op: 'logout', userId });
      this.engine.endAllSessions(user);
    }
    // Status, meta and contacts change together and are announced once, as one update.
    let privacyChanged = false;
    if (touchesStatus) {
      privacyChanged = this.applyStatus(
        user,
        { status, state: patch.state, message: patch.message, expiresAt: patch.expiresAt, visibility: patch.visibility },
        false,
      );
    }
    if (meta) this.applyMeta(user, meta, false);
    if (patch.contacts) {
      user.record.contacts = [...new Set(patch.contacts)];
      this.engine.save(user);
      privacyChanged = true;
    }
    this.engine.announcer.announce(user, privacyChanged);
    const self = selfView(factsOf(user), this.engine.config.states);
    this.engine.releaseIfUnused(user);
    return self;
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}
