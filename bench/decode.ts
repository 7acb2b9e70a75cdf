/**
 * Decode cost per WebSocket command: the schema decoder the server uses (compiled from
 * `@presence/protocol/schema`) against the hand-written decoder it replaced, in the same run, on
 * the same parsed frames. `JSON.parse` of the same frames is printed for scale: it runs before
 * either decoder on every frame.
 *
 *   node --import tsx bench/decode.ts [--commands 1000000] [--rounds 7] [--out bench/results/decode.json]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { decodeCommand } from '../packages/server/src/presence/commands.js';
import { decodeCommand as legacyDecodeCommand } from '../packages/server/test/support/legacy-decoder.js';

const { values } = parseArgs({
  options: {
    commands: { type: 'string', default: '1000000' },
    rounds: { type: 'string', default: '7' },
    out: { type: 'string', default: new URL('results/decode.json', import.meta.url).pathname },
  },
});
const COMMANDS = Number(values.commands);
const ROUNDS = Number(values.rounds);

/** A mix like a busy room's: mostly cursor moves, typing and activity, some status and joins. */
const MIX: Array<[weight: number, frame: Record<string, unknown>]> = [
  [30, { type: 'channel.meta', channel: 'doc:42', meta: { cursor: { x: 120, y: 48 } } }],
  [20, { type: 'typing', channel: 'doc:42', typing: true }],
  [15, { type: 'activity' }],
  [10, { type: 'ping', ref: 17 }],
  [8, { type: 'status', status: 'busy', state: 'in-call', message: 'In a call', expiresAt: null, ref: 'r-9' }],
  [7, { type: 'join', channel: 'room:lobby', meta: { mode: 'viewing' }, ref: 3 }],
  [5, { type: 'leave', channel: 'room:lobby' }],
  [3, { type: 'watch', users: ['alice', 'bob', 'carol'], ref: 4 }],
  [2, { type: 'meta', meta: { name: 'Dana', avatar: 'https://example.com/d.png' } }],
];

function frames(count: number): string[] {
  const pool: string[] = [];
  for (const [weight, frame] of MIX) for (let i = 0; i < weight; i++) pool.push(JSON.stringify(frame));
  return Array.from({ length: count }, (_, i) => pool[(i * 7919) % pool.length]);
}

type Decoder = (value: unknown) => unknown;

/** Nanoseconds per command for one pass over `parsed`. */
function timeDecoder(decode: Decoder, parsed: unknown[]): number {
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < parsed.length; i++) if (decode(parsed[i]) !== undefined) sink++;
  const ns = Number(process.hrtime.bigint() - start);
  if (sink !== parsed.length) throw new Error('a decoder refused a valid command');
  return ns / parsed.length;
}

function timeParse(texts: string[]): number {
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < texts.length; i++) if (JSON.parse(texts[i]) !== null) sink++;
  const ns = Number(process.hrtime.bigint() - start);
  if (sink !== texts.length) throw new Error('unreachable');
  return ns / texts.length;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number) => Math.round(x * 10) / 10;

const texts = frames(COMMANDS);
// Fresh objects per round, as every frame is fresh in the server.
const samples = { legacy: [] as number[], schema: [] as number[], parse: [] as number[] };
// Warm-up: let both decoders reach optimized code before anything is counted.
timeDecoder(legacyDecodeCommand, texts.slice(0, 200_000).map((t) => JSON.parse(t)));
timeDecoder(decodeCommand, texts.slice(0, 200_000).map((t) => JSON.parse(t)));
for (let round = 0; round < ROUNDS; round++) {
  samples.parse.push(timeParse(texts));
  const parsed = texts.map((t) => JSON.parse(t) as unknown);
  // Alternate the order, so neither decoder always runs on a warmer heap.
  if (round % 2 === 0) {
    samples.legacy.push(timeDecoder(legacyDecodeCommand, parsed));
    samples.schema.push(timeDecoder(decodeCommand, parsed));
  } else {
    samples.schema.push(timeDecoder(decodeCommand, parsed));
    samples.legacy.push(timeDecoder(legacyDecodeCommand, parsed));
  }
}

const legacy = median(samples.legacy);
const schema = median(samples.schema);
const parse = median(samples.parse);
const result = {
  commands: COMMANDS,
  rounds: ROUNDS,
  node: process.version,
  nsPerCommand: { legacy: round(legacy), schema: round(schema), jsonParse: round(parse) },
  /** The fastest round of each: the least disturbed by other work on the machine. */
  nsPerCommandMin: { legacy: round(Math.min(...samples.legacy)), schema: round(Math.min(...samples.schema)), jsonParse: round(Math.min(...samples.parse)) },
  /** Schema decoder time over the hand-written one's (below 1: faster). */
  ratio: Math.round((schema / legacy) * 100) / 100,
  /** What decoding adds to parsing a frame, each way. */
  shareOfParseAndDecode: { legacy: round((legacy / (legacy + parse)) * 100), schema: round((schema / (schema + parse)) * 100) },
  samples: { legacy: samples.legacy.map(round), schema: samples.schema.map(round), jsonParse: samples.parse.map(round) },
};

console.log(`decode ${COMMANDS} commands × ${ROUNDS} rounds (median ns per command)`);
console.log('| decoder | ns/command (median) | fastest round | with JSON.parse | decode share |');
console.log('| --- | ---: | ---: | ---: | ---: |');
console.log(`| hand-written (before) | ${round(legacy)} | ${result.nsPerCommandMin.legacy} | ${round(legacy + parse)} | ${result.shareOfParseAndDecode.legacy} % |`);
console.log(`| schema, compiled (now) | ${round(schema)} | ${result.nsPerCommandMin.schema} | ${round(schema + parse)} | ${result.shareOfParseAndDecode.schema} % |`);
console.log(`| JSON.parse alone | ${round(parse)} | ${result.nsPerCommandMin.jsonParse} | | |`);
console.log(`schema / hand-written: ${result.ratio}`);
writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
console.log(`wrote ${values.out}`);
