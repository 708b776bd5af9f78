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

// The step of withinRunningTime, in ms.
const RUNNING_TIME_STEP_MS = 25;

/**
 * As `withTimeout`, with `ms` counted in the host's own running time: waited
 * in short steps, each counting for what it asked, not for the wall time it
 * took. A host that stalled (a busy machine left it unscheduled, a debugger
 * paused it) fires its overdue timer before I/O the system already reported
 * is read: one wait of `ms` took a worker process killed from outside
 * (`kill -9`) for alive, and its exit's reason was lost ("connection lost"
 * instead of "killed by SIGKILL"). After a late step the next one lets that
 * I/O be read first. For rare waits (a lost connection): a timer per step.
 */
export async function withinRunningTime<T>(
  p: Promise<T>,
  ms: number,
): Promise<T | undefined> {
  for (let waited = 0; waited < ms; waited += RUNNING_TIME_STEP_MS) {
    const step = Math.min(RUNNING_TIME_STEP_MS, ms - waited);
    const got = await withTimeout(p, step);
    if (got !== undefined) return got;
  }
  return undefined;
}
