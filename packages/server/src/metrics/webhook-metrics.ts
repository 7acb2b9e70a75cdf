/**
 * Webhook metrics, one series per configured URL (labelled by the URL without its query string:
 * configuration, so the series are bounded). Counters are fed by the delivery queues; the backlog
 * gauges are read at scrape time.
 */
import type { DeliveryObserver } from '../webhooks/delivery-queue.js';
import { failureLabel } from '../webhooks/http-sender.js';
import { Counter, Gauge, type Registry } from 'prom-client';

export interface WebhookMetrics {
  /** The observer the queue of one URL reports to. */
  observerFor(url: string): DeliveryObserver;
}

export interface WebhookQueueFigures {
  url: string;
  backlog: number;
  /** Seconds the oldest waiting event has waited; 0 when none waits. */
  oldestPendingSeconds: number;
}

export function createWebhookMetrics(registry: Registry, figures: () => WebhookQueueFigures[]): WebhookMetrics {
  const delivered = new Counter({
    registers: [registry],
    name: 'presence_webhook_delivered_total',
    help: 'Webhook events a URL accepted with a 2xx answer.',
    labelNames: ['url'],
  });
  const failedAttempts = new Counter({
    registers: [registry],
    name: 'presence_webhook_failed_attempts_total',
    help: 'Webhook attempts that failed, by reason (timeout, network, http_408, http_429, http_4xx, http_5xx, http_3xx, other).',
    labelNames: ['url', 'reason'],
  });
  const retries = new Counter({
    registers: [registry],
    name: 'presence_webhook_retries_total',
    help: 'Webhook retries scheduled after a failed attempt.',
    labelNames: ['url'],
  });
  const deadLettered = new Counter({
    registers: [registry],
    name: 'presence_webhook_dead_letters_total',
    help: 'Webhook events given up on: retried until the give-up age, or refused with a 4xx that is not retried.',
    labelNames: ['url'],
  });
  const dropped = new Counter({
    registers: [registry],
    name: 'presence_webhook_dropped_total',
    help: 'Webhook events dropped unsent because the URL\'s backlog was full (the oldest waiting event goes first).',
    labelNames: ['url'],
  });
  new Gauge({
    registers: [registry],
    name: 'presence_webhook_backlog',
    help: 'Webhook events waiting for a URL, including those being sent or waiting for a retry.',
    labelNames: ['url'],
    // Read at scrape time from the queues.
    collect() {
      for (const row of figures()) this.set({ url: row.url }, row.backlog);
    },
  });
  new Gauge({
    registers: [registry],
    name: 'presence_webhook_oldest_pending_seconds',
    help: 'How long the oldest webhook event waiting for a URL has waited (0 when none waits).',
    labelNames: ['url'],
    collect() {
      for (const row of figures()) this.set({ url: row.url }, row.oldestPendingSeconds);
    },
  });
  return {
    observerFor(url) {
      // Every series of the URL exists from the start, so rates and alerts see zeros, not gaps.
      for (const counter of [delivered, retries, deadLettered, dropped]) counter.labels({ url }).inc(0);
      return {
        delivered: () => delivered.inc({ url }),
        failedAttempt: (reason) => failedAttempts.inc({ url, reason: failureLabel(reason) }),
        retried: () => retries.inc({ url }),
        deadLettered: () => deadLettered.inc({ url }),
        dropped: () => dropped.inc({ url }),
      };
    },
  };
}
