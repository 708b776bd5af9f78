/**
 * Waits for a promise up to a deadline (internal).
 *
 * @module
 */
import { setTimeoutOrNever } from "./_timer.ts";

/**
 * Resolves with the promise's value, or with `undefined` when `ms` pass first.
 * The timer is always cleared, so it never keeps the process alive. Beyond a
 * timer's range (`MAX_TIMER_MS`, ~24.8 days; `Infinity` too) there is no
 * limit: it waits for the promise.
 */
export function withTimeout<T>(
  p: Promise<T>,
  ms: number,
): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<undefined>((resolve) => {
      timer = setTimeoutOrNever(() => resolve(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
