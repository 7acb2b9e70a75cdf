import { WEBHOOK_SIGNATURE_HEADER } from '@presence/protocol';
import type { QueuedEvent, WebhookSender } from './delivery-queue.js';
import { classifyResponse, type AttemptOutcome } from './retry-schedule.js';
import { signWebhook } from './signature.js';

/*
 * The one file that speaks HTTP to webhook receivers: one POST per event, signed at the moment of
 * the attempt, with a deadline for the whole exchange. Every failure becomes an outcome the queue
 * understands; nothing here throws.
 */

/** Bytes of a receiver's answer read before the connection is let go (the body is not used). */
const MAX_ANSWER_BYTES = 64 * 1024;

export interface HttpSenderOptions {
  url: string;
  secrets: readonly string[];
  timeoutMs: number;
  /** The time the signature carries. */
  now: () => number;
  /**
   * The request of one attempt. @default Presence's own: the event as the body, `Presence-Signature`
   * with every secret, and the event's id, type and attempt number in headers
   */
  request?: (entry: QueuedEvent, attempt: number) => { body: string; headers: Record<string, string> };
}

export function createHttpSender(options: HttpSenderOptions): WebhookSender {
  const { url, secrets, timeoutMs, now } = options;
  const request =
    options.request ??
    ((entry: QueuedEvent, attempt: number) => ({
      body: entry.body,
      headers: {
        [WEBHOOK_SIGNATURE_HEADER.toLowerCase()]: signWebhook(secrets, entry.body, now()),
        'presence-event-id': entry.event.id,
        'presence-event-type': entry.event.type,
        'presence-delivery-attempt': String(attempt),
      },
    }));
  return async (entry: QueuedEvent, attempt: number, stop: AbortSignal): Promise<AttemptOutcome> => {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onStop = () => controller.abort();
    stop.addEventListener('abort', onStop);
    try {
      const { body, headers } = request(entry, attempt);
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'Presence-Webhooks/1', ...headers },
        body,
        redirect: 'manual',
        signal: controller.signal,
      });
      // The answer counts once it is complete: a receiver that stalls mid-body times out too.
      await drain(response);
      return classifyResponse(response.status, response.headers.get('retry-after'), now());
    } catch (error) {
      if (timedOut) return { kind: 'retry', reason: 'timeout' };
      if (stop.aborted) return { kind: 'retry', reason: 'aborted' };
      return { kind: 'retry', reason: networkReason(error) };
    } finally {
      clearTimeout(timer);
      stop.removeEventListener('abort', onStop);
    }
  };
}

async function drain(response: Response): Promise<void> {
  const reader = response.body?.getReader();
  if (!reader) return;
  let bytes = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    bytes += value.byteLength;
    if (bytes > MAX_ANSWER_BYTES) {
      await reader.cancel().catch(() => {});
      return;
    }
  }
}

/** `network ECONNREFUSED`, `network ECONNRESET` …: fetch hides the system error in `cause`. */
function networkReason(error: unknown): string {
  let cause: unknown = error;
  for (let depth = 0; depth < 4 && cause; depth += 1) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') return `network ${code}`;
    cause = (cause as { cause?: unknown }).cause;
  }
  return 'network error';
}

/** A bounded metrics label for a failure reason. */
export function failureLabel(reason: string): string {
  if (reason === 'timeout') return 'timeout';
  if (reason.startsWith('network')) return 'network';
  const status = /^http (\d{3})$/.exec(reason)?.[1];
  if (status === '408' || status === '429') return `http_${status}`;
  if (status) return `http_${status[0]}xx`;
  return 'other';
}
