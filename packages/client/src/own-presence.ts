import type { ManualStatus, Meta, SelfPresence, StatusCommand, UserPresence, Visibility, WelcomeMessage } from '@presence/protocol';
import type { Command } from './commands.js';

/** The manual part of a user's presence that this client set, as the server confirmed it. */
interface RestorableStatus {
  manualStatus: ManualStatus | null;
  state?: string;
  message?: string;
  expiresAt?: string;
  visibility: Visibility;
}

/**
 * This user's own presence: the latest `self` from the server, and what this client set, so
 * that after a server restart (which forgets it) the client can put it back.
 *
 * Restoring never overwrites: only what the server has forgotten (no manual status, state or
 * message at all; a meta key that is missing) is sent again. A change made meanwhile on another
 * device therefore wins over this client's older one.
 */
export class OwnPresence {
  private current: SelfPresence | null = null;
  private status: RestorableStatus | undefined;
  /** Meta keys this client set, with the values the server confirmed. */
  private meta: Meta = {};

  get self(): SelfPresence | null {
    return this.current;
  }

  welcomed(welcome: WelcomeMessage): void {
    this.current = welcome.self;
  }

  statusConfirmed(self: SelfPresence): void {
    this.current = self;
    this.status = {
      manualStatus: self.manualStatus,
      ...(self.state !== undefined ? { state: self.state } : {}),
      ...(self.message !== undefined ? { message: self.message } : {}),
      ...(self.expiresAt !== undefined ? { expiresAt: self.expiresAt } : {}),
      visibility: self.visibility,
    };
  }

  metaConfirmed(self: SelfPresence, patch: Meta): void {
    this.current = self;
    for (const key of Object.keys(patch)) {
      if (patch[key] === null || !Object.hasOwn(self.meta, key)) delete this.meta[key];
      else this.meta[key] = self.meta[key];
    }
  }

  /**
   * Another view of this user arrived (as a channel member or watched user): its public fields
   * are newer than our `self` (idle → away, for example). Returns whether `self` changed.
   */
  observed(presence: UserPresence): boolean {
    const current = this.current;
    if (!current || presence.userId !== current.userId) return false;
    // While invisible others see "offline"; our own view keeps what we set.
    if (current.manualStatus === 'invisible') return false;
    const next: SelfPresence = {
      ...current,
      status: presence.status,
      meta: presence.meta,
      lastSeen: presence.lastSeen,
      devices: presence.devices,
      ...(presence.lastActive !== undefined ? { lastActive: presence.lastActive } : {}),
    };
    if (
      next.status === current.status &&
      next.lastSeen === current.lastSeen &&
      next.lastActive === current.lastActive &&
      JSON.stringify(next.meta) === JSON.stringify(current.meta) &&
      next.devices.join() === current.devices.join()
    ) {
      return false;
    }
    this.current = next;
    return true;
  }

  /** Commands that put back what a server that did not resume the session has forgotten. */
  restoreCommands(welcome: WelcomeMessage, now: number): Command[] {
    if (welcome.resumed) return [];
    const server = welcome.self;
    const commands: Command[] = [];
    const status: Omit<StatusCommand, 'type' | 'ref'> = {};
    const mine = this.status;
    if (mine) {
      const serverForgot = server.manualStatus === null && server.state === undefined && server.message === undefined;
      const expired = mine.expiresAt !== undefined && Date.parse(mine.expiresAt) <= now;
      if (serverForgot && !expired && (mine.manualStatus || mine.state !== undefined || mine.message !== undefined)) {
        if (mine.manualStatus) status.status = mine.manualStatus;
        if (mine.state !== undefined) status.state = mine.state;
        if (mine.message !== undefined) status.message = mine.message;
        if (mine.expiresAt !== undefined) status.expiresAt = mine.expiresAt;
      }
      if (mine.visibility !== 'everyone' && server.visibility === 'everyone') status.visibility = mine.visibility;
    }
    if (Object.keys(status).length > 0) commands.push({ type: 'status', ...status });
    const forgotten: Meta = {};
    for (const key of Object.keys(this.meta)) {
      if (!Object.hasOwn(server.meta, key)) forgotten[key] = this.meta[key];
    }
    if (Object.keys(forgotten).length > 0) commands.push({ type: 'meta', meta: forgotten });
    return commands;
  }

  /**
   * The confirmed manual status as connect parameters. The server applies them only if it has
   * no record of the user (it restarted), so they never overwrite a newer change.
   */
  connectHints(now: number): Record<string, string> {
    const mine = this.status;
    if (!mine || (mine.expiresAt !== undefined && Date.parse(mine.expiresAt) <= now)) return {};
    const hints: Record<string, string> = {};
    if (mine.manualStatus) hints.status = mine.manualStatus;
    if (mine.state !== undefined) hints.state = mine.state;
    if (mine.message !== undefined) hints.message = mine.message;
    if (mine.expiresAt !== undefined && Object.keys(hints).length > 0) hints.expiresAt = mine.expiresAt;
    return hints;
  }

  /** Logout: nothing to restore any more. */
  clear(): void {
    this.current = null;
    this.status = undefined;
    this.meta = {};
  }
}
