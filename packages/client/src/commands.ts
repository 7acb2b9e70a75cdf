import type { AckMessage, ClientMessage, ErrorMessage, PresencePageMessage, Ref } from '@presence/protocol';
import { PresenceError } from './errors.js';

/** A command as the application builds it; the queue adds the `ref`. */
export type Command = ClientMessage extends infer M ? (M extends ClientMessage ? Omit<M, 'ref'> : never) : never;

/**
 * How a command behaves when there is no connection:
 * - `durable` commands (join, leave, status, meta, channel.meta, watch, unwatch, logout) wait in
 *   the outbox and are sent after the next reconnect; when the connection drops before their
 *   answer, they are sent again (each of them is idempotent).
 * - `ephemeral` signals (typing, activity, idle) only make sense now: they fail with NOT_CONNECTED.
 */
export type Delivery = 'durable' | 'ephemeral';

interface Pending {
  command: Command;
  delivery: Delivery;
  ref?: Ref;
  resolve(ack: AckMessage): void;
  reject(error: PresenceError): void;
}

/**
 * Matches commands with their `ack`/`error` by `ref`, and holds commands while disconnected.
 * Ordering: commands are sent in the order they were submitted, after whatever the client sends
 * to restore the session on reconnect (see `sendNow`).
 */
export class CommandQueue {
  private nextRef = 1;
  private readonly inFlight = new Map<Ref, Pending>();
  private outbox: Pending[] = [];
  private ready = false;

  /** `transmit` sends one message if the socket is open, and says whether it did. */
  constructor(private readonly transmit: (message: ClientMessage) => boolean) {}

  /** Commands waiting for a connection or for their answer. */
  get pendingCount(): number {
    return this.inFlight.size + this.outbox.length;
  }

  /** Whether a durable command of this shape is still waiting to be sent. */
  hasQueued(match: (command: Command) => boolean): boolean {
    return this.outbox.some((pending) => match(pending.command));
  }

  submit(command: Command, delivery: Delivery): Promise<AckMessage> {
    return new Promise((resolve, reject) => {
      const pending: Pending = { command, delivery, resolve, reject };
      if (this.ready && this.dispatch(pending)) return;
      if (delivery === 'ephemeral') {
        reject(new PresenceError('NOT_CONNECTED', `"${command.type}" was not sent: there is no connection`));
        return;
      }
      this.outbox.push(pending);
    });
  }

  /** Sends ahead of the outbox: the client's own restore commands right after `welcome`. */
  sendNow(command: Command): Promise<AckMessage> {
    return new Promise((resolve, reject) => {
      const pending: Pending = { command, delivery: 'ephemeral', resolve, reject };
      if (!this.dispatch(pending)) reject(new PresenceError('NOT_CONNECTED', `"${command.type}" was not sent: there is no connection`));
    });
  }

  /** The connection is usable and restored: send everything that waited, in order. */
  open(): void {
    const waiting = this.outbox;
    this.outbox = [];
    this.ready = true;
    for (let i = 0; i < waiting.length; i += 1) {
      if (!this.dispatch(waiting[i])) {
        // The socket went away while flushing: keep the rest, in order, for the next connection.
        this.ready = false;
        this.outbox = [...waiting.slice(i), ...this.outbox];
        return;
      }
    }
  }

  /**
   * The connection is gone. Durable commands still waiting for an answer go back to the front of
   * the outbox (their answer was lost with the socket); ephemeral ones fail.
   */
  connectionLost(): void {
    this.ready = false;
    const unanswered = [...this.inFlight.values()];
    this.inFlight.clear();
    const resend: Pending[] = [];
    for (const pending of unanswered) {
      if (pending.delivery === 'durable') {
        delete pending.ref;
        resend.push(pending);
      } else {
        pending.reject(new PresenceError('NOT_CONNECTED', `the connection was lost before "${pending.command.type}" was answered`));
      }
    }
    this.outbox = [...resend, ...this.outbox];
  }

  /** Fails every pending command (the client was closed, or the connection ended for good). */
  failAll(error: PresenceError): void {
    this.ready = false;
    const all = [...this.inFlight.values(), ...this.outbox];
    this.inFlight.clear();
    this.outbox = [];
    for (const pending of all) pending.reject(error);
  }

  /** Settles the command an `ack` or `error` (or the `presence.page` of `members`) answers; false when the ref is not ours. */
  answer(message: AckMessage | ErrorMessage | PresencePageMessage): boolean {
    if (message.ref === undefined) return false;
    const pending = this.inFlight.get(message.ref);
    if (!pending) return false;
    this.inFlight.delete(message.ref);
    if (message.type !== 'error') pending.resolve(message as AckMessage);
    else pending.reject(new PresenceError(message.code as PresenceError['code'], message.message, { ref: message.ref }));
    return true;
  }

  private dispatch(pending: Pending): boolean {
    const ref = this.nextRef++;
    if (!this.transmit({ ...pending.command, ref } as ClientMessage)) return false;
    pending.ref = ref;
    this.inFlight.set(ref, pending);
    return true;
  }
}
