#!/usr/bin/env node
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ServerConfig } from '../src/config/config.js';
import { ConfigError, HELP_TEXT, loadConfig, wantsHelp, wantsVersion } from '../src/config/env.js';
import { configSecrets, createLogger, type Logger } from '../src/log.js';
import { startServer } from '../src/server.js';

// Past this the drain is presumed stuck; orchestrators would SIGKILL soon anyway, and exiting
// ourselves leaves a log line saying why.
const SHUTDOWN_DEADLINE_MS = 30_000;

/**
 * The built demo and dashboard: `public/` of this package (the web package's build writes them
 * there, and the tarball ships them), seen from this file as compiled (`dist/bin`) or run from
 * source (`bin`); absent when the pages were not built.
 */
function webPagesDir(): string | undefined {
  for (const candidate of ['../../public/', '../public/']) {
    const dir = fileURLToPath(new URL(candidate, import.meta.url));
    if (existsSync(`${dir}index.html`)) return dir;
  }
  return undefined;
}

/** This package's version, from its package.json (seen from `dist/bin` or from `bin`). */
function serverVersion(): string {
  for (const candidate of ['../../package.json', '../package.json']) {
    const path = fileURLToPath(new URL(candidate, import.meta.url));
    if (!existsSync(path)) continue;
    const pkg = JSON.parse(readFileSync(path, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === '@presence/server' && pkg.version) return pkg.version;
  }
  return 'unknown';
}

function installCrashHandlers(log: Logger): void {
  process.on('uncaughtException', (err, origin) => {
    log.error('uncaught exception; exiting', { err, origin });
    // State may be inconsistent after an uncaught throw; a supervisor restarts us cleanly.
    process.exit(1);
  });
  process.on('unhandledRejection', (reason) => {
    // Logged, not fatal: one forgotten promise must not drop every connected user.
    log.error('unhandled promise rejection', { err: reason });
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (wantsHelp(argv)) {
    process.stdout.write(HELP_TEXT);
    // exitCode rather than exit(): lets a piped stdout flush.
    process.exitCode = 0;
    return;
  }
  if (wantsVersion(argv)) {
    process.stdout.write(`${serverVersion()}\n`);
    process.exitCode = 0;
    return;
  }

  let config: ServerConfig;
  try {
    config = loadConfig(process.env, argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`presence: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }

  const log = createLogger(config.logLevel, { format: config.logFormat, secrets: configSecrets(config) });
  installCrashHandlers(log);
  // startServer logs configWarnings(config) itself, so programmatic users get them too.

  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(config, { log, publicDir: webPagesDir() });
  } catch (err) {
    log.error('failed to start', { err });
    // Partially started resources (timers, sockets) would otherwise keep the process alive.
    process.exit(1);
  }

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn('second signal during shutdown; exiting now', { signal });
      process.exit(1);
    }
    stopping = true;
    log.info('shutting down', { signal });
    setTimeout(() => {
      log.error('shutdown did not finish in time; exiting', { deadlineMs: SHUTDOWN_DEADLINE_MS });
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    server.shutdown(signal).then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('shutdown failed', { err });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

main().catch((err: unknown) => {
  process.stderr.write(`presence: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
