/**
 * `pyproxy_token_files_refused`: 1 while the token file on disk cannot be
 * used (the gateway keeps the tokens in force), 0 once it can. In the
 * on-call walkthrough a malformed token file showed in one log line and
 * nowhere else, while a restart would have failed on it. Through a real
 * gateway polling a real file.
 */
import assert from "node:assert/strict";
import { startGateway, until } from "./_gateway_harness.ts";

Deno.test("a token file that cannot be used shows in /metrics as pyproxy_token_files_refused 1 until it is fixed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-token-refused-" });
  try {
    const file = `${dir}/token`;
    const token = "a-valid-token-of-some-length";
    await Deno.writeTextFile(file, `${token}\n`, { mode: 0o600 });
    await using gw = await startGateway({
      tokenFile: file,
      tokenFileInterval: 100,
    });
    const refused = async () =>
      (await (await gw.fetch("/metrics", {
        headers: { authorization: `Bearer ${token}` },
      })).text()).split("\n").find((l) =>
        l.startsWith("pyproxy_token_files_refused ")
      );
    assert.equal(await refused(), "pyproxy_token_files_refused 0");
    await Deno.writeTextFile(file, "abc\n");
    await until(
      async () => (await refused()) === "pyproxy_token_files_refused 1",
      "the malformed file refused",
    );
    // The token in force still works (it answered the scrape above).
    await Deno.writeTextFile(file, `${token}\n`);
    await until(
      async () => (await refused()) === "pyproxy_token_files_refused 0",
      "the file usable again",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("without token files /metrics has no pyproxy_token_files_refused", async () => {
  await using gw = await startGateway({});
  const text = await (await gw.fetch("/metrics")).text();
  assert.equal(text.includes("pyproxy_token_files_refused"), false);
});
