/**
 * Memory readings for the large-payload scenarios.
 *
 * @module
 */

/**
 * Peak resident set size (VmHWM) of a process in bytes, from
 * `/proc/<pid>/status` (Linux); NaN when unavailable. The kernel tracks the
 * true peak, so nothing is missed during a long synchronous step (sampling
 * `Deno.memoryUsage()` on a timer cannot run then).
 *
 * @example
 * ```ts ignore
 * console.log(peakRss() / 1e6, "MB");
 * ```
 */
export function peakRss(pid: number | "self" = "self"): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = /VmHWM:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * Samples `Deno.memoryUsage().rss` every `intervalMs` while running, keeping
 * the maximum (a fallback where /proc is missing).
 *
 * @example
 * ```ts ignore
 * const sampler = new RssSampler();
 * await work();
 * console.log(sampler.stop());
 * ```
 */
export class RssSampler {
  #max = Deno.memoryUsage().rss;
  readonly #timer: ReturnType<typeof setInterval>;

  /** Starts sampling. */
  constructor(intervalMs = 5) {
    this.#timer = setInterval(() => this.#sample(), intervalMs);
  }

  #sample(): void {
    const rss = Deno.memoryUsage().rss;
    if (rss > this.#max) this.#max = rss;
  }

  /** Stops sampling; returns the largest RSS seen in bytes. */
  stop(): number {
    clearInterval(this.#timer);
    this.#sample();
    return this.#max;
  }
}
