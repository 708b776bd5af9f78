/**
 * The floor of `tokenFileInterval`: the shortest time between two polls of
 * the token files a configuration may set (besides `0`, no polling).
 *
 * @module
 */
import { ConfigError } from "../errors.ts";

/**
 * The shortest `tokenFileInterval`, in ms. A poll reads (and stats) one or
 * two small files on the runtime's blocking pool: every 100 ms that is
 * nothing, every millisecond it is a core's steady work, for nothing (the
 * kubelet takes up to a minute to update a mounted secret). Private: the
 * tests lower it (`ms`) to poll every few ms; users cannot.
 */
export const TOKEN_FILE_INTERVAL_FLOOR: { ms: number } = { ms: 100 };

/**
 * What is wrong with `ms` as a `tokenFileInterval` (`undefined`: nothing),
 * as a config error's text: `expected ...`.
 */
export function tokenFileIntervalProblem(ms: number): string | undefined {
  return ms === 0 ||
      (ms >= TOKEN_FILE_INTERVAL_FLOOR.ms && ms <= MAX_TIMER_MS)
    ? undefined
    : ms > MAX_TIMER_MS
    ? `expected at most ${MAX_TIMER_MS} ms (about 24.8 days, a timer's longest: the runtimes run a longer one after 1 ms, a poll every millisecond)`
    : `expected 0 (read on a reload only) or at least ${TOKEN_FILE_INTERVAL_FLOOR.ms} ms (a poll that often costs CPU, and a secret takes longer to change)`;
}

/** The longest delay `setTimeout` takes as given (2^31 - 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Throws the {@linkcode ConfigError} of a `tokenFileInterval` or a
 * `tlsFileInterval` below the floor: the schema checks `pyproxy.json`'s and
 * the flags', `serve` a configuration built by hand (at start and on a
 * reload). The TLS files' poll has the same floor and range (it reads two
 * small files as the token files' reads one or two).
 */
export function checkTokenFileInterval(
  config: {
    tokenFileInterval?: number;
    tlsFileInterval?: number;
    configPath?: string;
  },
): void {
  for (const name of ["tokenFileInterval", "tlsFileInterval"] as const) {
    const ms = config[name];
    const problem = ms === undefined ? undefined : tokenFileIntervalProblem(ms);
    if (problem !== undefined) {
      throw new ConfigError(
        `${name}: ${problem} (at ${config.configPath ?? "config"}: ${name})`,
        { details: { path: name } },
      );
    }
  }
}
