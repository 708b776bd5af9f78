/**
 * Many reloads at once (a SIGHUP storm: a supervisor's loop, a script
 * signalling every second): bounded work, each caller answered, the last
 * configuration in force.
 */
import assert from "node:assert/strict";
import { resolveConfig, type ResolvedConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { tempDir } from "./_harness.ts";
import { withLogs } from "./_gateway_harness.ts";

const ECHO = new URL("../examples/models/echo.py", import.meta.url);
const T1 = "first-token-0123456789abcdef";
const T2 = "second-token-0123456789abcdef";

async function call(url: string, token: string): Promise<number> {
  const res = await fetch(`${url}/v1/models/echo/execute`, {
    method: "POST",
    body: '{"a":1}',
    headers: { authorization: `Bearer ${token}` },
  });
  await res.body?.cancel();
  return res.status;
}

Deno.test("GatewayServer.reload asked 100 times at once reads the configuration twice (the one running, and one for every ask while it ran), each ask answered", async () => {
  await using dir = await tempDir("pyproxy-reload-storm-test-");
  await Deno.mkdir(`${dir.path}/models`);
  await Deno.copyFile(ECHO, `${dir.path}/models/echo.py`);
  const config = (token: string): ResolvedConfig =>
    resolveConfig({
      cwd: dir.path,
      cli: { port: 0, workers: 1, modelsDir: "models", token },
    });
  let next = config(T1);
  let reads = 0;
  // The first reload's read waits for the test: the storm comes while it
  // runs.
  const gate = Promise.withResolvers<void>();
  const reading = Promise.withResolvers<void>();
  await withLogs(async (records) => {
    await using server = await serve(next, {
      reloadConfig: async () => {
        reads++;
        const read = next;
        if (reads === 1) {
          reading.resolve();
          await gate.promise;
        }
        return read;
      },
    });
    const first = server.reload();
    await reading.promise;
    // Asked while the first runs: what they ask for is written after it
    // read, and must be read.
    next = config(T2);
    const storm = Array.from({ length: 99 }, () => server.reload());
    gate.resolve();
    const results = await Promise.all([first, ...storm]);
    assert.equal(reads, 2);
    assert.deepEqual(results[0], { changed: [], ignored: [] });
    for (const r of results.slice(1)) {
      assert.deepEqual(r, { changed: ["token (1)"], ignored: [] });
    }
    assert.equal(
      records.filter((r) =>
        r.message.join("").startsWith("Reloaded the configuration")
      ).length,
      2,
    );
    assert.equal(await call(server.url, T2), 200);
    assert.equal(await call(server.url, T1), 401);
    // One asked once they are done reads again.
    assert.deepEqual(await server.reload(), { changed: [], ignored: [] });
    assert.equal(reads, 3);
  });
});
