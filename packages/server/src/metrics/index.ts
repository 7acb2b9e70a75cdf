export * from './registry.js';
export * from './presence-metrics.js';
