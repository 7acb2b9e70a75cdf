export interface BackoffOptions {
  /** Delay before the first retry. @default 500 */
  initialDelayMs?: number;
  /** Upper bound of any delay. @default 30000 */
  maxDelayMs?: number;
  /** Growth per failed attempt. @default 2 */
  factor?: number;
  /**
   * Share of each delay that is randomized (0: none, 1: anywhere from 0 to the full delay), so
   * thousands of clients dropped at once by a restart do not come back in the same millisecond.
   * @default 0.5
   */
  jitter?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  factor: 2,
  jitter: 0.5,
};

/** Exponential backoff with jitter: delay n is `min(max, initial·factorⁿ)`, minus a random share. */
export class Backoff {
  private readonly options: Required<BackoffOptions>;
  private attempt = 0;

  constructor(
    options: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.options = { ...DEFAULT_BACKOFF, ...options };
    const { initialDelayMs, maxDelayMs, factor, jitter } = this.options;
    if (!(initialDelayMs >= 0) || !(maxDelayMs >= initialDelayMs) || !(factor >= 1) || !(jitter >= 0 && jitter <= 1)) {
      throw new RangeError('backoff: need 0 ≤ initialDelayMs ≤ maxDelayMs, factor ≥ 1 and 0 ≤ jitter ≤ 1');
    }
  }

  /** Failed attempts since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /** The delay before the next attempt; each call counts one more failure. */
  next(): number {
    const { initialDelayMs, maxDelayMs, factor, jitter } = this.options;
    const ceiling = Math.min(maxDelayMs, initialDelayMs * factor ** this.attempt);
    this.attempt += 1;
    return Math.round(ceiling * (1 - jitter * this.random()));
  }

  reset(): void {
    this.attempt = 0;
  }
}
