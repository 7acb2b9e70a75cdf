export * from './registry.js';
export * from './presence-metrics.js';
export * from './webhook-metrics.js';
