/**
 * Timers for durations that come from options (internal).
 *
 * `setTimeout` and `setInterval` take a delay of at most 2^31 − 1 ms (~24.8
 * days); a longer one, `Infinity` included, fires after ~1 ms instead (with a
 * `TimeoutOverflowWarning` in Deno and Node).
 * An option of "wait at most `ms`" set that high would then cut everything
 * short at once. pyproxy's rule: a duration beyond {@linkcode MAX_TIMER_MS}
 * means no limit, so no timer is set; an interval beyond it never fires.
 *
 * @module
 */

/** The longest delay `setTimeout`/`setInterval` take: 2^31 − 1 ms (~24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `setTimeout(fn, ms)`, or no timer (`undefined`) when `ms` is beyond
 * {@linkcode MAX_TIMER_MS} (`Infinity` included): such a wait has no limit.
 * `clearTimeout(undefined)` is a no-op, so the result clears like a timer.
 * A negative or NaN delay means now, as with `setTimeout`.
 */
export function setTimeoutOrNever(
  fn: () => void,
  ms: number,
): ReturnType<typeof setTimeout> | undefined {
  return ms > MAX_TIMER_MS ? undefined : setTimeout(fn, ms);
}

/**
 * `setInterval(fn, ms)`, or no timer (`undefined`) when `ms` is beyond
 * {@linkcode MAX_TIMER_MS}: such an interval never elapses.
 */
export function setIntervalOrNever(
  fn: () => void,
  ms: number,
): ReturnType<typeof setInterval> | undefined {
  return ms > MAX_TIMER_MS ? undefined : setInterval(fn, ms);
}
