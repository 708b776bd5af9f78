/**
 * Deno's signal handling set up before it can be short of file descriptors.
 *
 * Deno 2.9 sets up its signal handling (a thread and a socket pair: two
 * fds) when the process's first signal listener is registered, and panics
 * when that fails: at `EMFILE`, "Too many open files", the whole process
 * ends (`thread 'main' panicked at ext/signals/lib.rs`, `Signals::new(...)
 * .unwrap()`), the workers with it. Deno itself registers a listener late:
 * its inspector's `SIGUSR1`, about half a second after the start; and so
 * may the program (`Deno.addSignalListener`). A gateway whose workers came
 * up within that half second, its fd table then filled by connections that
 * never speak, died so (a serve without `handleSignals`; CI). Set up at
 * once, the later registrations need no fd. A listener added and removed
 * at once leaves each signal's default action as it was.
 *
 * @module
 */

/**
 * Sets up Deno's signal handling now (idempotent; a no-op where signal
 * listeners are not available).
 *
 * @example
 * ```ts
 * import { setUpDenoSignals } from "./_deno_signal_setup.ts";
 * setUpDenoSignals(); // SIGINT and SIGTERM still end the process as before
 * ```
 */
export function setUpDenoSignals(): void {
  const listener = (): void => {};
  try {
    Deno.addSignalListener("SIGINT", listener);
    Deno.removeSignalListener("SIGINT", listener);
  } catch {
    // No signal listeners here (a runtime that refuses them): none to set up.
  }
}
