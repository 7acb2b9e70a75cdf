/**
 * `expiresAt` values for the WebSocket and HTTP tests, which must accept and refuse the same ones.
 * Years are chosen from today so every value lies in the future: a refusal can then only come from
 * the value itself, never from "not in the future".
 */

const thisYear = new Date().getUTCFullYear();
const isLeap = (year: number) => year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
const nextYear = (test: (year: number) => boolean) => {
  let year = thisYear + 1;
  while (!test(year)) year += 1;
  return year;
};
/** A year ahead without 29 February, and one with it. */
const common = nextYear((y) => !isLeap(y));
const leap = nextYear(isLeap);
const year = thisYear + 1;

/**
 * Shaped like ISO 8601 with a zone, but naming no real time. `Date.parse` rolls most of them over
 * (30 February becomes 2 March, 24:00 the next midnight) or stretches the offset beyond ±14:00.
 */
export const IMPOSSIBLE_EXPIRIES: readonly (readonly [what: string, value: string])[] = [
  ['30 February', `${year}-02-30T10:00:00Z`],
  ['31 February', `${year}-02-31T10:00:00Z`],
  ['31 April', `${year}-04-31T10:00:00Z`],
  ['31 June', `${year}-06-31T10:00:00Z`],
  ['29 February of a common year', `${common}-02-29T10:00:00Z`],
  ['month 13', `${year}-13-01T10:00:00Z`],
  ['month 00', `${year}-00-10T10:00:00Z`],
  ['day 00', `${year}-03-00T10:00:00Z`],
  ['day 32', `${year}-01-32T10:00:00Z`],
  ['hour 24 without seconds', `${year}-06-01T24:00Z`],
  ['hour 24 with seconds', `${year}-06-01T24:00:00Z`],
  ['hour 25', `${year}-06-01T25:00:00Z`],
  ['minute 60', `${year}-06-01T10:60Z`],
  ['second 60 (a leap second)', `${year}-06-30T23:59:60Z`],
  ['offset +14:01', `${year}-06-01T10:00:00+14:01`],
  ['offset +15:00', `${year}-06-01T10:00:00+15:00`],
  ['offset -14:30', `${year}-06-01T10:00:00-14:30`],
  ['offset -23:59', `${year}-06-01T10:00:00-23:59`],
  ['offset minutes 60', `${year}-06-01T10:00:00+05:60`],
];

/** Malformed: not the accepted shape at all. */
export const MALFORMED_EXPIRIES: readonly (readonly [what: string, value: string])[] = [
  ['no zone', `${year}-06-01T10:00:00`],
  ['date only', `${year}-06-01`],
  ['lower-case t and z', `${year}-06-01t10:00:00z`],
  ['space for T', `${year}-06-01 10:00:00Z`],
  ['offset without colon', `${year}-06-01T10:00:00+0200`],
  ['ten fraction digits', `${year}-06-01T10:00:00.1234567890Z`],
];

/** Real times at the edges of what is accepted, with the UTC instant the server must store. */
export const VALID_EXPIRIES: readonly (readonly [what: string, value: string, utc: string])[] = [
  ['29 February of a leap year', `${leap}-02-29T10:00:00Z`, `${leap}-02-29T10:00:00.000Z`],
  ['31 December, last millisecond', `${year}-12-31T23:59:59.999Z`, `${year}-12-31T23:59:59.999Z`],
  ['midnight as 00:00', `${year}-03-01T00:00Z`, `${year}-03-01T00:00:00.000Z`],
  ['offset +14:00 (Kiribati)', `${year}-07-01T10:00+14:00`, `${year}-06-30T20:00:00.000Z`],
  ['offset -14:00', `${year}-07-01T10:00-14:00`, `${year}-07-02T00:00:00.000Z`],
  ['offset -12:00', `${year}-07-01T10:00:00-12:00`, `${year}-07-01T22:00:00.000Z`],
  ['offset +05:45 (Nepal)', `${year}-07-01T10:00:00+05:45`, `${year}-07-01T04:15:00.000Z`],
  ['offset across the day, 28 February of a common year', `${common}-02-28T20:00+14:00`, `${common}-02-28T06:00:00.000Z`],
  ['offset -00:00 is UTC', `${year}-07-01T10:00:00-00:00`, `${year}-07-01T10:00:00.000Z`],
  ['nanoseconds are cut to milliseconds', `${year}-07-01T10:00:00.123456789Z`, `${year}-07-01T10:00:00.123Z`],
];
