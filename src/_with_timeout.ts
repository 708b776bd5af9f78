/**
 * Waits for a promise up to a deadline (internal).
 *
 * @module
 */

/**
 * Resolves with the promise's value, or with `undefined` when `ms` pass first.
 * The timer is always cleared, so it never keeps the process alive.
 */
export function withTimeout<T>(
  p: Promise<T>,
  ms: number,
): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
