/**
 * Deno's signal handling is set up by the runtime adapter, before a full
 * fd table can make its late set-up panic (src/runtime/_deno_signal_setup.ts).
 *
 * @module
 */
import assert from "node:assert/strict";

Deno.test({
  name:
    "denoRuntime sets Deno's signal handling up at once: a first signal listener registered while the fd table is full does not panic the process",
  async fn() {
    // 64 fds: the child fills what Deno leaves of them with /dev/null.
    const child = new Deno.Command("/bin/sh", {
      args: [
        "-c",
        'ulimit -n 64 && exec "$@"',
        "sh",
        Deno.execPath(),
        "run",
        "-A",
        new URL("./_deno_signal_setup_child.ts", import.meta.url).pathname,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      const { code, stdout, stderr } = await child.output();
      const err = new TextDecoder().decode(stderr);
      assert.doesNotMatch(
        err,
        /panicked/,
        `Deno panicked: ${err.slice(0, 600)}`,
      );
      assert.equal(code, 0, err);
      assert.match(new TextDecoder().decode(stdout), /^registered with \d+/);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited
      }
    }
  },
});
