/**
 * Webhook metrics, one series per configured URL (labelled by the URL without its query string:
 * configuration, so the series are bounded). Counters are fed by the delivery queues; the backlog
 * gauges are read at scrape time.
 */
import type { DeliveryObserver } from '../webhooks/delivery-queue.js';
import { failureLabel } from '../webhooks/http-sender.js';
import type { MetricsRegistry } from './registry.js';

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

export function createWebhookMetrics(registry: MetricsRegistry, figures: () => WebhookQueueFigures[]): WebhookMetrics {
  const delivered = registry.counter({
    name: 'presence_webhook_delivered_total',
    help: 'Webhook events a URL accepted with a 2xx answer.',
    labelNames: ['url'],
  });
  const failedAttempts = registry.counter({
    name: 'presence_webhook_failed_attempts_total',
    help: 'Webhook attempts that failed, by reason (timeout, network, http_408, http_429, http_4xx, http_5xx, http_3xx, other).',
    labelNames: ['url', 'reason'],
  });
  const retries = registry.counter({
    name: 'presence_webhook_retries_total',
    help: 'Webhook retries scheduled after a failed attempt.',
    labelNames: ['url'],
  });
  const deadLettered = registry.counter({
    name: 'presence_webhook_dead_letters_total',
    help: 'Webhook events given up on: retried until the give-up age, or refused with a 4xx that is not retried.',
    labelNames: ['url'],
  });
  const dropped = registry.counter({
    name: 'presence_webhook_dropped_total',
    help: 'Webhook events dropped unsent because the URL\'s backlog was full (the oldest waiting event goes first).',
    labelNames: ['url'],
  });
  const backlog = registry.gauge({
    name: 'presence_webhook_backlog',
    help: 'Webhook events waiting for a URL, including those being sent or waiting for a retry.',
    labelNames: ['url'],
  });
  const oldest = registry.gauge({
    name: 'presence_webhook_oldest_pending_seconds',
    help: 'How long the oldest webhook event waiting for a URL has waited (0 when none waits).',
    labelNames: ['url'],
  });
  registry.onCollect(() => {
    for (const row of figures()) {
      backlog.set({ url: row.url }, row.backlog);
      oldest.set({ url: row.url }, row.oldestPendingSeconds);
    }
  });

  return {
    observerFor(url) {
      // Every series of the URL exists from the start, so rates and alerts see zeros, not gaps.
      for (const counter of [delivered, retries, deadLettered, dropped]) counter.inc({ url }, 0);
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
