/**
 * Internals of the plugins: a hook's promise bounded by `hookTimeout`.
 *
 * @module
 */
import { PluginError } from "./errors.ts";
import { MAX_TIMER_MS } from "./_timer.ts";

/**
 * `p`, or a rejection once `ms` pass first (the timer is always cleared, and
 * a late rejection of `p` is dropped: its hook has already failed). The
 * timer is also put in `holder.timer`, for whoever stops waiting for good
 * (a closing pool's call hooks) to clear: `p` then has no limit.
 */
export function settleWithin<T>(
  p: Promise<T>,
  ms: number,
  plugin: string,
  hook: string,
  holder?: { timer?: ReturnType<typeof setTimeout> | undefined },
): Promise<T> {
  // Beyond a timer's range (Infinity too): no limit, so no timer.
  if (!(ms <= MAX_TIMER_MS)) return p;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(
        new PluginError(
          `Cannot run hook ${hook} of plugin '${plugin}': it did not settle within ${ms} ms (hookTimeout)`,
          { details: { plugin, hook, timeoutMs: ms } },
        ),
      );
    }, ms);
    if (holder !== undefined) holder.timer = timer;
    p.then((value) => {
      clearTimeout(timer);
      resolve(value);
    }, (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
