/**
 * Keeps the reference docs and the code together: every error code, close code, configuration
 * variable, CLI flag, HTTP route and metric the code defines must be documented, with the same
 * numbers, and the docs must not list ones the code does not have.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { CLOSE_CODES, ERRORS, type ErrorSpec } from '@presence/protocol';
import { COMMAND_LINE_FLAGS, CONFIG_VARIABLES, CONFIG_VARIABLE_DOCS, HELP_TEXT } from '../src/config/env.js';
import { ROUTES } from '../src/http/api.js';
import { Registry } from 'prom-client';
import { createPresenceMetrics, createWebhookMetrics } from '../src/metrics/index.js';

const DOCS = resolve(dirname(fileURLToPath(import.meta.url)), '../../../docs');

function readDoc(name: string): string {
  return readFileSync(join(DOCS, name), 'utf8');
}

interface Table {
  header: string[];
  rows: string[][];
}

/** Cells of a Markdown table row; `\|` inside a cell is not a separator. */
function cells(line: string): string[] {
  const inner = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  return inner.split(/(?<!\\)\|/).map((c) => c.trim());
}

/** Every Markdown table in a document: runs of lines starting with `|`, separator row dropped. */
function tables(markdown: string): Table[] {
  const out: Table[] = [];
  let block: string[] = [];
  const flush = () => {
    if (block.length >= 2 && /^\|?\s*:?-{3,}/.test(block[1].trim())) {
      out.push({ header: cells(block[0]), rows: block.slice(2).map(cells) });
    }
    block = [];
  };
  for (const line of markdown.split('\n')) {
    if (line.trim().startsWith('|')) block.push(line);
    else flush();
  }
  flush();
  return out;
}

/** The one table whose header starts with these cells. */
function tableStartingWith(markdown: string, doc: string, ...firstCells: string[]): Table {
  const found = tables(markdown).filter((t) => firstCells.every((c, i) => t.header[i] === c));
  assert.equal(found.length, 1, `${doc} must have exactly one table with header ${firstCells.join(' | ')}`);
  return found[0];
}

const code = (text: string) => `\`${text}\``;
const unticked = (cell: string) => cell.replace(/`/g, '').trim();

describe('docs/errors.md', () => {
  const doc = readDoc('errors.md');
  const errorTable = tableStartingWith(doc, 'errors.md', 'Code', 'HTTP', 'WebSocket close', 'Retryable', 'When it happens');
  const closeTable = tableStartingWith(doc, 'errors.md', 'Close code');

  it('has one row per error code with its HTTP status, close code and retryability', () => {
    for (const [name, spec] of Object.entries(ERRORS) as [string, ErrorSpec][]) {
      const rows = errorTable.rows.filter((r) => r[0] === code(name));
      assert.equal(rows.length, 1, `errors.md: exactly one row for ${name}`);
      const [, http, close, retryable, when] = rows[0];
      assert.equal(http, String(spec.http), `errors.md: HTTP status of ${name}`);
      if (spec.close === undefined) {
        assert.ok(close.startsWith('—'), `errors.md: ${name} has no close code, so its cell must start with "—" (got "${close}")`);
      } else {
        assert.ok(
          new RegExp(`^${spec.close}\\b`).test(close),
          `errors.md: close code of ${name} must be ${spec.close} (got "${close}")`,
        );
      }
      assert.equal(retryable, spec.retryable ? 'yes' : 'no', `errors.md: retryable of ${name}`);
      assert.ok(when.length > 20, `errors.md: ${name} needs a description of when it happens`);
    }
  });

  it('lists no error code the code does not have', () => {
    for (const row of errorTable.rows) {
      assert.ok(Object.hasOwn(ERRORS, unticked(row[0])), `errors.md documents unknown code ${row[0]}`);
    }
  });

  it('documents every close code the server uses', () => {
    const documented = new Set(closeTable.rows.map((r) => unticked(r[0])));
    const used = new Set<number>([
      ...Object.values(CLOSE_CODES),
      ...(Object.values(ERRORS) as ErrorSpec[]).flatMap((s) => (s.close === undefined ? [] : [s.close])),
    ]);
    for (const closeCode of used) {
      assert.ok(documented.has(String(closeCode)), `errors.md: close code ${closeCode} needs a row in the close code table`);
    }
    for (const row of closeTable.rows) {
      assert.ok(row.length >= 3 && row[2].length > 10, `errors.md: close code ${row[0]} needs advice for the client`);
    }
  });
});

describe('docs/configuration.md', () => {
  const doc = readDoc('configuration.md');
  const variableTable = tableStartingWith(doc, 'configuration.md', 'Variable', 'Default', 'Accepted values', 'Meaning');

  it('mentions every configuration variable', () => {
    for (const name of CONFIG_VARIABLES) {
      assert.ok(doc.includes(name), `configuration.md must mention ${name}`);
    }
  });

  it('lists every variable with the default the code uses', () => {
    for (const variable of CONFIG_VARIABLE_DOCS) {
      const rows = variableTable.rows.filter((r) => r[0] === code(variable.name));
      assert.equal(rows.length, 1, `configuration.md: exactly one row for ${variable.name} in the variable table`);
      assert.equal(unticked(rows[0][1]), variable.default, `configuration.md: default of ${variable.name}`);
    }
    for (const row of variableTable.rows) {
      assert.ok(CONFIG_VARIABLES.includes(unticked(row[0])), `configuration.md documents unknown variable ${row[0]}`);
    }
  });

  it('documents every command-line flag of --help', () => {
    const flags = [...HELP_TEXT.matchAll(/^\s+(?:-h, )?(--[a-z][a-z-]*)/gm)].map((m) => m[1]);
    assert.ok(flags.includes('--port') && flags.includes('--help'), 'flags were parsed from HELP_TEXT');
    for (const flag of flags) {
      assert.ok(doc.includes(`\`${flag}`), `configuration.md must document ${flag}`);
    }
  });
});

describe('the configuration in step: docs/configuration.md, --help, the code and the README', () => {
  const doc = readDoc('configuration.md');
  const documented = tableStartingWith(doc, 'configuration.md', 'Variable', 'Default', 'Accepted values', 'Meaning').rows.map((r) => unticked(r[0]));
  const inHelp = [...HELP_TEXT.split('\nEnvironment:\n')[1].matchAll(/^ {2}([A-Z][A-Z0-9_]*) \(default: /gm)].map((m) => m[1]);
  const sorted = (names: readonly string[]) => [...names].sort();

  it('the variable table, the Environment section of --help and the code name the same variables', () => {
    assert.ok(inHelp.length >= 30, `variables were parsed from HELP_TEXT (${inHelp.length})`);
    assert.deepEqual(sorted(documented), sorted(CONFIG_VARIABLES), 'configuration.md table vs CONFIG_VARIABLES');
    assert.deepEqual(sorted(inHelp), sorted(CONFIG_VARIABLES), '--help vs CONFIG_VARIABLES');
  });

  it('the flag table names every flag of --help with its variable, and no other', () => {
    const flagTable = tableStartingWith(doc, 'configuration.md', 'Flag', 'Same as');
    const inHelp = [...HELP_TEXT.split('\nEnvironment:')[0].matchAll(/^ {2}(?:-[a-z], )?(--[a-z][a-z-]*)/gm)].map((m) => m[1]);
    const rows = new Map(flagTable.rows.map((r) => [(/--[a-z][a-z-]*/.exec(r[0]) ?? [''])[0], r]));
    assert.deepEqual(sorted([...rows.keys()]), sorted(inHelp), 'configuration.md flag table vs --help');
    for (const { flag, env, arg } of COMMAND_LINE_FLAGS) {
      assert.equal(rows.get(flag)?.[0], code(`${flag} ${arg}`), `configuration.md: ${flag} ${arg}`);
      assert.equal(rows.get(flag)?.[1], code(env), `configuration.md: ${flag} is the same as ${env}`);
      const variableRow = doc.split('\n').find((line) => line.startsWith(`| ${code(env)} |`));
      assert.ok(variableRow?.includes(`Flag: ${code(flag)}`), `configuration.md: the row of ${env} names its flag ${flag}`);
    }
  });

  it("the README's configuration table names only variables the code reads", () => {
    const readme = readFileSync(join(DOCS, '..', 'README.md'), 'utf8');
    const table = tableStartingWith(readme, 'README.md', 'variable', 'default', 'meaning');
    const names = table.rows.flatMap((r) => [...r[0].matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1]));
    assert.ok(names.length >= 15, `variables were read from the README's table (${names.length})`);
    for (const name of names) assert.ok(CONFIG_VARIABLES.includes(name), `README.md lists ${name}, which the server does not read`);
  });
});

describe('docs/http-api.md', () => {
  const doc = readDoc('http-api.md');

  it('documents every route', () => {
    const routeTable = tableStartingWith(doc, 'http-api.md', 'Method', 'Path');
    for (const template of Object.values(ROUTES)) {
      assert.ok(
        routeTable.rows.some((r) => r[1] === code(template)),
        `http-api.md: route ${template} needs a row in the route table`,
      );
      assert.ok(
        new RegExp(`^#{2,4} [A-Z]+ ${template.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm').test(doc),
        `http-api.md: route ${template} needs its own section`,
      );
    }
  });

  it('documents every metric the registry renders, with its type', async () => {
    const registry = new Registry();
    const metrics = createPresenceMetrics(registry, () => ({ connections: 1, sessions: 2, onlineUsers: 1, channels: 1 }));
    try {
      // Labelled series render no samples until they are used.
      metrics.commandReceived('join');
      metrics.messageSent('welcome');
      metrics.errorSent('RATE_LIMITED');
      metrics.connectionOpened();
      metrics.connectionClosed(1000);
      metrics.observeFanout(0.001);
      metrics.httpRequests.inc({ route: '/healthz', status: '200' });
      // The webhook metrics, rendered once a URL is configured.
      const webhooks = createWebhookMetrics(registry, () => [{ url: 'https://example.com/hook', backlog: 1, oldestPendingSeconds: 2 }]);
      webhooks.observerFor('https://example.com/hook').failedAttempt('http 503');
      const text = await registry.metrics();

      const types = new Map<string, string>();
      for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1], m[2]);
      const names = new Set(
        [...text.matchAll(/^presence_\w+/gm)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')),
      );
      for (const name of types.keys()) names.add(name);
      assert.ok(names.size >= 10, `expected the full metric set, got ${[...names].join(', ')}`);

      const metricTable = tableStartingWith(doc, 'http-api.md', 'Metric', 'Type');
      for (const name of names) {
        assert.ok(doc.includes(name), `http-api.md must mention metric ${name}`);
        const row = metricTable.rows.find((r) => r[0] === code(name));
        assert.ok(row, `http-api.md: metric ${name} needs a row in the metrics table`);
        assert.equal(row[1], types.get(name), `http-api.md: type of ${name}`);
      }
      for (const row of metricTable.rows) {
        assert.ok(names.has(unticked(row[0])), `http-api.md documents unknown metric ${row[0]}`);
      }
    } finally {
      metrics.close();
    }
  });
});

describe('links between the reference docs', () => {
  const own = ['configuration.md', 'errors.md', 'http-api.md'];

  /** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
  function anchors(markdown: string): Set<string> {
    const out = new Set<string>();
    for (const m of markdown.matchAll(/^#{1,6} (.+)$/gm)) {
      out.add(
        m[1]
          .trim()
          .toLowerCase()
          .replace(/[^\p{L}\p{N} _-]/gu, '')
          .replace(/ /g, '-'),
      );
    }
    return out;
  }

  it('point at files that exist, and at headings that exist in docs/', () => {
    for (const name of own) {
      const doc = readDoc(name);
      for (const m of doc.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1];
        if (/^[a-z]+:/.test(target)) continue; // external
        const [file, anchor] = target.split('#');
        const path = file === '' ? join(DOCS, name) : resolve(DOCS, file);
        assert.ok(existsSync(path), `${name}: link target ${target} does not exist`);
        const targetName = file === '' ? name : file;
        // Anchors are checked in every doc of docs/, not only these three: the rules for a field
        // may live in protocol.md and be linked from here.
        if (anchor !== undefined && (file === '' || dirname(path) === DOCS) && targetName.endsWith('.md')) {
          assert.ok(anchors(readDoc(targetName)).has(anchor), `${name}: no heading for #${anchor} in ${targetName}`);
        }
      }
    }
  });
});
