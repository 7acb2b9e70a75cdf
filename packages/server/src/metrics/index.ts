export * from './prometheus.js';
export * from './presence-metrics.js';
export * from './webhook-metrics.js';
export * from './event-loop-window.js';
