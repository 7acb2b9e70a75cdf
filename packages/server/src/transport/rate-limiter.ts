/**
 * Token bucket for inbound commands: `ratePerSecond` sustained, `burst` at once. A client that
 * keeps sending into an empty bucket (more than `burst` refusals without the bucket recovering)
 * is flooding, and the connection should be closed rather than answered forever.
 */
export class RateLimiter {
  private tokens: number;
  private refusedInARow = 0;
  private updatedAt: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number,
  ) {
    this.tokens = burst;
    this.updatedAt = now();
  }

  /** 'ok' to run the command, 'refuse' to answer RATE_LIMITED, 'close' when the flood goes on. */
  take(): 'ok' | 'refuse' | 'close' {
    const now = this.now();
    const elapsed = now - this.updatedAt;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
      this.updatedAt = now;
    }
    if (this.tokens >= 1) {
      this.tokens -= 1;
      this.refusedInARow = 0;
      return 'ok';
    }
    this.refusedInARow += 1;
    return this.refusedInARow > this.burst ? 'close' : 'refuse';
  }
}
