/**
 * A SIGTERM to `deno test` (a CI job cancelled, `timeout`'s signal) while a
 * test holds a pool with `handleSignals` ends the run, as it ends one
 * without a pool. The pool's listener closed the pool and called
 * `Deno.exit(143)`, which `deno test` turns into the end of that test
 * file's isolate ("called `Deno.exit(143)` from outside any test. The
 * isolate was terminated; remaining test files will continue"): the run
 * went on with the next files and ended with status 1 (testers28).
 */
import assert from "node:assert/strict";
import { assertGone, modelsDir } from "./_pool_harness.ts";

Deno.test("a SIGTERM to `deno test` while a test holds a pool with handleSignals ends the run, workers closed, the next files not run", async () => {
  await using dir = await modelsDir();
  const pool = JSON.stringify(new URL("../src/pool.ts", import.meta.url).href);
  await Deno.writeTextFile(
    `${dir.path}/a_test.ts`,
    `import { Pool } from ${pool};
Deno.test("holds a pool", async () => {
  await using pool = await Pool.start({ workers: 1, modelsDir: ${
      JSON.stringify(dir.path)
    }, logDir: "-" });
  console.log("PIDS " + JSON.stringify(pool.status().workers.map((w) => w.pid)));
  await new Promise((r) => setTimeout(r, 60_000));
});
`,
  );
  await Deno.writeTextFile(
    `${dir.path}/b_test.ts`,
    `Deno.test("next file", () => console.log("NEXT FILE RAN"));\n`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "-A",
      "--no-check",
      "--config",
      new URL("../deno.json", import.meta.url).pathname,
      `${dir.path}/a_test.ts`,
      `${dir.path}/b_test.ts`,
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  let pids: number[] = [];
  try {
    let out = "";
    while (!/PIDS .*\n/.test(out)) {
      const { value, done } = await reader.read();
      if (done) assert.fail(`deno test ended first: ${out}${await stderr}`);
      out += value;
    }
    pids = JSON.parse(/PIDS (.*)\n/.exec(out)![1]!);
    assert.equal(pids.length, 1);
    child.kill("SIGTERM");
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    const status = await child.status;
    const why = `${out}${await stderr}`;
    assert.doesNotMatch(out, /NEXT FILE RAN/, why);
    assert.equal(status.signal, "SIGTERM", why);
    await assertGone(pids);
  } finally {
    reader.cancel().catch(() => {});
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
    await child.status;
    await stderr.catch(() => {});
    for (const pid of pids) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // gone, as it should be
      }
    }
  }
});
