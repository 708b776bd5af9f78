/**
 * Internals of the supervisor: whether a worker's event loop is idle,
 * waiting for I/O, as the operating system sees it.
 *
 * Why: a worker that answers no ping may be wedged (model code holding the
 * GIL in a C call, a stopped process), or the reply may sit unread on the
 * host's side. Under heavy load (large messages spilled in bursts) Deno's
 * event loop was seen leaving a ready socket unread for 0.3–2 s while its
 * timers kept firing: the worker had answered in ~15 ms, and both workers
 * were killed as unresponsive at the same moment. A wedged worker's loop
 * thread never sits in `epoll_wait` (it runs, or waits for the GIL, or is
 * stopped); a healthy one waiting for its next message does.
 *
 * On Linux the main thread's wait channel (`/proc/<pid>/wchan`) names the
 * kernel function a sleeping thread waits in. Elsewhere, or where the name
 * is hidden (it reads `0`), nothing is ever seen: the answer is `false`, and
 * the caller keeps its old behaviour.
 *
 * @module
 */
import type { Runtime } from "./runtime/types.ts";

// `do_epoll_wait` (Linux 5.x and later), `ep_poll` (older kernels).
const EPOLL_WAIT = /epoll|ep_poll/;
const SAMPLE_EVERY_MS = 5;
// Looks taken however late they come: on a starved host (the case this check
// is for) each look's read and timer ran so late that a 250 ms window held
// two or three, all of which could fall on the loop's brief runs.
const LEAST_LOOKS = 8;

/**
 * Samples `/proc/<pid>/wchan` every few milliseconds for up to `withinMs`
 * and resolves `true` as soon as the process's main thread is seen waiting
 * in `epoll_wait`; `false` when it never is, or when the system cannot tell
 * (no `/proc`, no permission, a name hidden as `0`). It looks at least
 * {@linkcode LEAST_LOOKS} times, past `withinMs` when the host is too busy
 * to look that often within it. A `withinMs` that is not a positive number
 * (`NaN` too) looks once; `stop` returning true (the pool closing) ends the
 * watch early. Never throws.
 *
 * @example
 * ```ts ignore
 * if (await waitsForIO(runtime, worker.pid, 250)) console.log("its loop is idle: alive");
 * ```
 */
export async function waitsForIO(
  runtime: Runtime,
  pid: number,
  withinMs: number,
  stop?: () => boolean,
): Promise<boolean> {
  const path = `/proc/${pid}/wchan`;
  const buf = new Uint8Array(64);
  const decoder = new TextDecoder();
  // NaN (a window computed from a missing option) would never end: one look.
  const end = Date.now() + (withinMs > 0 ? withinMs : 0);
  const least = withinMs > 0 ? LEAST_LOOKS : 1;
  for (let looks = 1;; looks++) {
    let name: string;
    try {
      const file = await runtime.openRead(path);
      try {
        // Procfs files report size 0: read what there is.
        const n = await file.read(buf);
        name = n === null ? "" : decoder.decode(buf.subarray(0, n));
      } finally {
        await file.close();
      }
    } catch {
      return false; // not Linux, no such process, or no permission
    }
    if (EPOLL_WAIT.test(name)) return true;
    if ((Date.now() >= end && looks >= least) || stop?.() === true) {
      return false;
    }
    await new Promise((resolve) => setTimeout(resolve, SAMPLE_EVERY_MS));
  }
}
