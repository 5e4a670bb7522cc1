export interface BackoffOptions {
  /** The first retry waits up to this long (default 500 ms). */
  initialMs?: number;
  /** No wait exceeds this (default 30 s). */
  maxMs?: number;
}

/**
 * Exponential backoff with full jitter: a uniform wait in [0, min(max, initial · 2^attempt)], so
 * that clients cut off together (a broker restart) do not come back together.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const initial = options.initialMs ?? 500;
  const max = options.maxMs ?? 30_000;
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
