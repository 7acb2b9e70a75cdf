export * from './prometheus.js';
export * from './presence-metrics.js';
export * from './webhook-metrics.js';
