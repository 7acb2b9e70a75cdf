export * from './messages.js';
export * from './errors.js';
