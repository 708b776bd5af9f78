/**
 * Test helper (tests/deno_signal_setup_test.ts): a process that makes the
 * Deno runtime adapter, fills its fd table, then registers its first signal
 * listener of its own. Prints `registered` when that worked (a Deno whose
 * signal handling was not set up yet panics there instead).
 *
 * @module
 */
import { denoRuntime } from "../src/runtime/deno.ts";

denoRuntime();
const files: Deno.FsFile[] = [];
let full: unknown;
try {
  for (;;) files.push(Deno.openSync("/dev/null"));
} catch (err) {
  full = err;
}
if (!String(full).includes("Too many open files")) {
  throw new Error(`Cannot fill the fd table: ${full}`);
}
// A late first listener, as Deno's inspector registers SIGUSR1 half a
// second after the start, while every fd is taken.
const listener = () => {};
Deno.addSignalListener("SIGUSR2", listener);
Deno.removeSignalListener("SIGUSR2", listener);
for (const file of files) file.close();
console.log(`registered with ${files.length} files open`);
