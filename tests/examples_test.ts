/**
 * The examples the README and docs point to still run and print what they
 * say (a real subprocess: `deno run -A examples/<name>.ts`).
 */
import assert from "node:assert/strict";

async function runExample(name: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(`../examples/${name}`, import.meta.url).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(
    out.code,
    0,
    `${name} exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`,
  );
  return text;
}

Deno.test("examples/streaming_and_batching.ts streams tokens in order and answers every batched call on its own", async () => {
  const text = await runExample("streaming_and_batching.ts");
  assert.match(
    text,
    /^token: to\ntoken: be\ntoken: or\ntoken: not\n/,
  );
  assert.match(text, /error: ValueError: x must be >= 0\n/);
  assert.match(text, /\{ score: 18, batch: \d+ \}/);
  assert.match(text, /4 tokens, 10 scores\n$/);
});

Deno.test("examples/quickstart.ts prints the README's results", async () => {
  const text = await runExample("quickstart.ts");
  assert.match(text, /\{ y: 15 \}/);
  assert.match(text, /hello from Python/);
  assert.match(text, /42\n$/);
});

Deno.test("examples/bulk_scoring.ts scores a file's rows in order, with the failed row kept beside its id", async () => {
  const text = await runExample("bulk_scoring.ts");
  assert.equal(
    text,
    "20000 rows in order: 19999 scored, 1 failed\nfailed 1234: ValueError: row 1234: income must be >= 0\n",
  );
});

Deno.test("examples/tenant_quota.ts refuses a tenant's third call with 429 and Retry-After, keyed on the token (not the header), and counts per tenant", async () => {
  const text = await runExample("tenant_quota.ts");
  assert.match(
    text,
    /^acme: 200\nacme: 200\nacme: 429 QuotaExceededError \(Retry-After: 30\)\nglobex: 200\nacme as x-tenant: globex: 429 QuotaExceededError \(Retry-After: 30\)\n/,
  );
  assert.match(
    text,
    /\{ tenants: \{ acme: 2, globex: 1 \}, refused: \{ acme: 2 \} \}\n$/,
  );
});

Deno.test("examples/chat_stream_server.ts streams tokens as SSE from Deno.serve, ends a failure with an error event, and frees the model (its GPU lock) when the reader leaves", async () => {
  const text = await runExample("chat_stream_server.ts");
  assert.equal(
    text,
    [
      'to be or not to be [end {"tokens":6}]',
      'one two [error {"error":{"name":"PythonError","message":"RuntimeError: CUDA out of memory"}}]',
      '[end {"tokens":0}]',
      `422 {"error":{"name":"PythonError","message":"KeyError: 'prompt'"}}`,
      "a b c d e [left]",
      "",
    ].join("\n") + text.slice(text.lastIndexOf("the GPU")),
  );
  assert.match(
    text,
    /the GPU is free again, \d+ of the 500 tokens made\n$/,
  );
});

Deno.test("examples/tenant_quota.ts spreads a tenant's calls at its rate (a burst after a quiet spell, then one per windowMs / limit), each tenant on its own, with the wait until the next one", async () => {
  const { tenantQuota } = await import("../examples/tenant_quota.ts");
  let t = 0;
  const quota = tenantQuota({
    limit: 10,
    windowMs: 1000,
    burst: 3,
    tenants: { aaaa: "acme" },
    now: () => t,
  });
  const call = (caller: string): number | "ok" => {
    try {
      quota.onCall!({
        kind: "execute",
        model: "m",
        resolved: "m",
        msg: {},
        caller,
      }, undefined as never);
      return "ok";
    } catch (err) {
      return (err as { details: { retryAfterMs: number } }).details
        .retryAfterMs;
    }
  };
  // A burst of 3, then a call every 100 ms.
  assert.deepEqual([call("aaaa"), call("aaaa"), call("aaaa")], [
    "ok",
    "ok",
    "ok",
  ]);
  assert.equal(call("aaaa"), 100);
  assert.equal(call("bbbb"), "ok"); // another tenant's own rate
  t = 60;
  assert.equal(call("aaaa"), 40);
  t = 100;
  assert.equal(call("aaaa"), "ok");
  assert.equal(call("aaaa"), 100);
  // A quiet spell gives the burst back, never more.
  t = 10_000;
  assert.deepEqual(
    [call("aaaa"), call("aaaa"), call("aaaa"), call("aaaa")],
    ["ok", "ok", "ok", 100],
  );
  assert.deepEqual(quota.status!(), {
    tenants: { acme: 7, bbbb: 1 },
    refused: { acme: 4 },
  });
  assert.deepEqual(quota.metrics!(), [{
    name: "pyproxy_tenant_quota_refused_total",
    type: "counter",
    help: "Model calls refused for a tenant over its quota.",
    value: 4,
    labels: { tenant: "acme" },
  }]);
  assert.throws(() => tenantQuota({ limit: 1, windw: 5 } as never), /windw/);
});
