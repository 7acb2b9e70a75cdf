/**
 * Real Chromium for the page tests: Debian's `chromium` package, found on the PATH and driven by
 * playwright-core (which never downloads a browser). `.ci/run` installs the package when missing.
 */
import { execFileSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');

/** Screenshots and other outputs of the page tests (gitignored). */
export const ARTIFACTS = join(REPO, 'test-artifacts', 'web');
/** Where the README's pictures live; refreshed only when PRESENCE_UPDATE_SCREENSHOTS=1. */
export const DOC_IMAGES = join(REPO, 'docs', 'images');

export function chromiumPath(): string {
  let path = '';
  try {
    path = execFileSync('sh', ['-c', 'command -v chromium'], { encoding: 'utf8' }).trim();
  } catch {
    // Reported below with what to do about it.
  }
  if (!path) {
    throw new Error('The page tests need Debian\'s "chromium" on the PATH (apt-get install chromium; .ci/run does this).');
  }
  return path;
}

export async function launchChromium(): Promise<Browser> {
  await mkdir(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: chromiumPath(),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

export const WAIT_MS = 15_000;
