// The examples run with `bun run` too (tests/examples_test.ts runs them with
// Deno): each exits 0, prints what it says, and leaves no temporary
// directory of its own behind (they close their pools).
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import process from "node:process";
import { waitGone } from "./_helpers.ts";

/** Runs `examples/<name>` with this Bun; its stdout, once it exited 0. */
async function runExample(name: string): Promise<string> {
  const child = Bun.spawn(
    [
      process.execPath,
      "run",
      new URL(`../../examples/${name}`, import.meta.url).pathname,
    ],
    { stdout: "pipe", stderr: "pipe" },
  );
  try {
    const [out, err, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ]);
    expect({ name, code, err: code === 0 ? "" : err }).toEqual({
      name,
      code: 0,
      err: "",
    });
    // Its pools' directories (pyproxy-<kind>-<its pid>-...) went with them.
    expect(
      readdirSync(tmpdir()).filter((n) =>
        n.startsWith("pyproxy-") && n.includes(`-${child.pid}-`)
      ),
    ).toEqual([]);
    return out;
  } finally {
    child.kill("SIGKILL");
  }
}

test("examples/quickstart.ts prints the README's results on Bun", async () => {
  const text = await runExample("quickstart.ts");
  // Bun's console.log spreads an object over lines: { y: 15 } on Deno.
  expect(text).toMatch(/\{\s*y: 15,?\s*\}/);
  expect(text).toContain("[fd 1] hello from Python");
  expect(text).toMatch(/42\n$/);
}, 30_000);

test(
  "examples/streaming_and_batching.ts streams tokens in order and answers every batched call on Bun",
  async () => {
    const text = await runExample("streaming_and_batching.ts");
    expect(text).toMatch(/^token: to\ntoken: be\ntoken: or\ntoken: not\n/);
    expect(text).toContain("error: ValueError: x must be >= 0\n");
    expect(text).toMatch(/\{\s*score: 18,\s*batch: \d+,?\s*\}/);
    expect(text).toMatch(/4 tokens, 10 scores\n$/);
  },
  30_000,
);

test(
  "examples/eval.ts streams, keeps a session, and cancels a runaway loop on Bun",
  async () => {
    const text = await runExample("eval.ts");
    expect(text).toContain("[fd 1 #0] tick 0\n[fd 1 #1] tick 1\n");
    expect(text).toContain("result: 42\n");
    expect(text).toContain("add: 5\n");
    expect(text).toMatch(/area: 12\.566/);
    expect(text).toContain(
      "spin: TimeoutError Cannot complete eval: timed out after 300 ms",
    );
    expect(text).toContain("replayed: spinning\n");
  },
  30_000,
);

test(
  "examples/bulk_scoring.ts scores a file's rows in order on Bun",
  async () => {
    const text = await runExample("bulk_scoring.ts");
    expect(text).toBe(
      "20000 rows in order: 19999 scored, 1 failed\nfailed 1234: ValueError: row 1234: income must be >= 0\n",
    );
  },
  30_000,
);

test(
  "examples/tenant_quota.ts answers a tenant over its quota with 429 on Bun",
  async () => {
    const text = await runExample("tenant_quota.ts");
    expect(text).toStartWith(
      "acme: 200\nacme: 200\nacme: 429 QuotaExceededError (Retry-After: 30)\nglobex: 200\n" +
        "acme as x-tenant: globex: 429 QuotaExceededError (Retry-After: 30)\n",
    );
  },
  30_000,
);

test(
  "examples/chat_stream_server.ts streams tokens as SSE from Bun.serve and frees the model (its GPU lock) when the reader leaves",
  async () => {
    const text = await runExample("chat_stream_server.ts");
    expect(text).toStartWith(
      'to be or not to be [end {"tokens":6}]\n' +
        'one two [error {"error":{"name":"PythonError","message":"RuntimeError: CUDA out of memory"}}]\n' +
        '[end {"tokens":0}]\n' +
        `422 {"error":{"name":"PythonError","message":"KeyError: 'prompt'"}}\n` +
        "a b c d e [left]\n",
    );
    expect(text).toMatch(
      /the GPU is free again, \d+ of the 500 tokens made\n$/,
    );
  },
  30_000,
);

test("examples/custom_plugin.ts times every call on Bun", async () => {
  const text = await runExample("custom_plugin.ts");
  expect(text).toMatch(/doubler: \{\s*calls: 10,/);
}, 30_000);

test(
  "examples/bun_client.ts runs on Bun and its workers are gone after close",
  async () => {
    const text = await runExample("bun_client.ts");
    const pids = /^bun: pool started, workers (\d+), (\d+)$/m.exec(text);
    expect(pids).not.toBeNull();
    expect(text).toMatch(/execute: \{\s*score: 10,?\s*\}/);
    expect(text).toContain("  [stdout] working 2\n");
    expect(text).toContain("eval result: 45\n");
    expect(text).toContain("  [stderr] a warning\n");
    expect(text).toMatch(/closed: true\n$/);
    expect(await waitGone([Number(pids![1]), Number(pids![2])])).toEqual([]);
  },
  30_000,
);
