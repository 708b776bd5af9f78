/**
 * Internals of the runtime adapters: the process group of a pyproxy server
 * running under a wrapper, which `kill()` and `killGroup()` signal besides
 * the spawned child's (see {@linkcode ChildProcess.adoptGroup}).
 *
 * @module
 */
import type { ChildProcess } from "./types.ts";

type Signal = Parameters<ChildProcess["kill"]>[0] & string;

/**
 * One adopted process group, signalled through `kill` (the runtime's
 * `Deno.kill` or `process.kill`, given a negative pid).
 *
 * @example
 * ```ts ignore
 * const adopted = new AdoptedGroup(child.pid, (pid, s) => Deno.kill(pid, s));
 * adopted.adopt(serverPid);
 * adopted.signal("SIGKILL", true);
 * ```
 */
export class AdoptedGroup {
  #pgid: number | undefined;
  readonly #own: number;
  readonly #kill: (pid: number, signal: Signal) => void;

  /** `own`: the spawned child's pid, never adopted. */
  constructor(own: number, kill: (pid: number, signal: Signal) => void) {
    this.#own = own;
    this.#kill = kill;
  }

  /** Adopts `pgid` (ignored unless an integer above 1 other than the child's). */
  adopt(pgid: number): void {
    if (Number.isSafeInteger(pgid) && pgid > 1 && pgid !== this.#own) {
      this.#pgid = pgid;
    }
  }

  /**
   * Signals the adopted group, if any; `last`: the child has exited, and
   * this is the group's last signal (a pid freed since may be reused).
   * Never throws.
   */
  signal(signal: Signal, last = false): void {
    const pgid = this.#pgid;
    if (pgid === undefined) return;
    if (last) this.#pgid = undefined;
    try {
      this.#kill(-pgid, signal);
    } catch {
      // no process left in the group
    }
  }
}
