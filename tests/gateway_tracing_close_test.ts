/**
 * A gateway's tracing at its end: the exporter's TLS client (Deno's
 * `createHttpClient`, made for the collector's certificates) freed, and
 * nothing left running, whatever the collector answers (a 503 with a
 * Retry-After of an hour kept a timer, and the process, alive for minutes).
 */
import assert from "node:assert/strict";
import { until } from "./_gateway_harness.ts";
import { createGateway } from "../src/gateway/app.ts";
import { resolveConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { Pool } from "../src/pool.ts";

/** Counts Deno's HTTP clients made and closed while `run` runs. */
async function countingClients(
  run: (counts: { made: number; closed: number }) => Promise<void>,
): Promise<void> {
  const counts = { made: 0, closed: 0 };
  const create = Deno.createHttpClient;
  Deno.createHttpClient = ((options: Deno.CreateHttpClientOptions) => {
    const client = create(options);
    counts.made++;
    const close = client.close.bind(client);
    client.close = () => {
      counts.closed++;
      close();
    };
    return client;
  }) as typeof Deno.createHttpClient;
  try {
    await run(counts);
  } finally {
    Deno.createHttpClient = create;
  }
}

/** A collector that answers every POST 503 with `Retry-After: 3600`. */
function busyCollector() {
  let posts = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      await req.arrayBuffer();
      posts++;
      return new Response("busy", {
        status: 503,
        headers: { "retry-after": "3600" },
      });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}/v1/traces`,
    get posts() {
      return posts;
    },
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

const call = () =>
  new Request("http://127.0.0.1:8000/v1/models/echo/execute", {
    method: "POST",
    headers: { host: "127.0.0.1:8000", "content-type": "application/json" },
    body: '{"x": 1}',
  });

Deno.test("createGateway's tracing with certificates frees its HTTP client at stopSignal, and keeps no timer for a collector's Retry-After: 20 gateways made and stopped over one pool leave none", async () => {
  await using collector = busyCollector();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: new URL("../examples/models/", import.meta.url).pathname,
    handleSignals: false,
  });
  await pool.addModel("echo", { file: "echo.py" });
  await countingClients(async (counts) => {
    for (let i = 0; i < 20; i++) {
      const stop = new AbortController();
      const app = createGateway(pool, {
        stopSignal: stop.signal,
        // `tls: {}`: a client of Deno's, with no certificate of its own.
        tracing: { endpoint: collector.url, batchIntervalMs: 10, tls: {} },
      });
      const res = await app.fetch(call());
      assert.equal(res.status, 200);
      await res.body?.cancel();
      if (i === 0) {
        // Its span was refused with an hour's Retry-After: kept for then.
        await until(
          () => Promise.resolve(collector.posts === 1 || undefined),
          "the first POST",
        );
      }
      stop.abort();
      await until(
        () => Promise.resolve(counts.closed === i + 1 || undefined),
        `gateway ${i}'s client to be closed`,
      );
      // A call answered after the stop: its span is dropped, not queued
      // behind the collector's Retry-After on a timer (which the test's
      // sanitizer would find).
      const late = await app.fetch(call());
      assert.equal(late.status, 200);
      await late.body?.cancel();
      const metrics = await (await app.fetch(
        new Request("http://127.0.0.1:8000/metrics", {
          headers: { host: "127.0.0.1:8000" },
        }),
      )).text();
      assert.match(metrics, /^pyproxy_trace_spans_dropped_total 2$/m);
    }
    assert.equal(counts.made, 20);
  });
});

Deno.test("serve's shutdown frees its tracing's HTTP client", async () => {
  await using collector = busyCollector();
  await countingClients(async (counts) => {
    const config = resolveConfig({
      cwd: Deno.cwd(),
      cli: {
        port: 0,
        workers: 1,
        modelsDir: new URL("../examples/models/", import.meta.url).pathname,
        models: [{ name: "echo", file: "echo.py" }],
        tracing: { endpoint: collector.url, batchIntervalMs: 10 },
      },
    });
    const server = await serve(
      { ...config, tracing: { ...config.tracing!, tls: {} } },
      { handleSignals: false },
    );
    try {
      const res = await fetch(`${server.url}/v1/models/echo/execute`, {
        method: "POST",
        body: '{"x": 1}',
      });
      assert.equal(res.status, 200);
      await res.body?.cancel();
      await until(
        () => Promise.resolve(collector.posts >= 1 || undefined),
        "the first POST",
      );
    } finally {
      await server.shutdown();
    }
    assert.deepEqual(counts, { made: 1, closed: 1 });
  });
});
