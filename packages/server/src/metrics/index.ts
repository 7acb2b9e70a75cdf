export * from './prometheus.js';
export * from './presence-metrics.js';
