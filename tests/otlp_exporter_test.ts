// The OTLP/HTTP exporter against misbehaving collectors (real sockets, no
// Python): a collector is not trusted with the gateway's memory, nor with
// the exporter's headers (API keys) beyond the configured endpoint.
import assert from "node:assert/strict";
import { OtlpExporter } from "../src/gateway/_otlp_exporter.ts";
import { GatewayTracing } from "../src/gateway/_gateway_tracing.ts";
import type { Logger } from "../src/logger.ts";

function recorder(): { logger: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const none = () => {};
  const logger: Logger = {
    trace: none,
    debug: none,
    info: none,
    warn: (message, properties) => {
      warnings.push(
        message.replace(/\{(\w+)\}/g, (_, k) => String(properties?.[k])),
      );
    },
    error: none,
    fatal: none,
  };
  return { logger, warnings };
}

const SPAN = {
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  name: "POST /v1/models/{name}/execute",
  kind: 2,
  startMs: 1_700_000_000_000,
  endMs: 1_700_000_000_001,
  attributes: {},
};

Deno.test("OtlpExporter reads no more than a little of a collector's answer (an endless 200 body is not buffered)", async () => {
  let sent = 0;
  let cancelled!: () => void;
  const done = new Promise<void>((r) => cancelled = r);
  const chunk = new Uint8Array(64 * 1024);
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      await req.arrayBuffer();
      // An answer that never ends: it is cancelled once the exporter stops.
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          sent += chunk.byteLength;
          controller.enqueue(chunk);
        },
        cancel() {
          cancelled();
        },
      });
      return new Response(body, { status: 200 });
    },
  );
  const { logger, warnings } = recorder();
  const exporter = new OtlpExporter({
    endpoint: `http://127.0.0.1:${server.addr.port}/v1/traces`,
    logger,
    intervalMs: 60_000,
    timeoutMs: 3000,
  });
  exporter.add(SPAN);
  await exporter.flush(3000);
  assert.deepEqual(warnings, []);
  assert.equal(exporter.exported, 1);
  assert.equal(exporter.dropped, 0);
  await done;
  // A few chunks in flight at most, not 3 s of a loopback's throughput.
  assert.ok(sent < 16 * 1024 * 1024, `${sent} bytes sent`);
});

Deno.test("OtlpExporter follows no redirect: its headers (API keys) and spans go to the endpoint only", async () => {
  const elsewhere: Headers[] = [];
  await using other = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      await req.arrayBuffer();
      elsewhere.push(req.headers);
      return Response.json({});
    },
  );
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      await req.arrayBuffer();
      // Another origin (localhost vs 127.0.0.1): what a hijacked or
      // misconfigured collector could send.
      return new Response(null, {
        status: 307,
        headers: {
          location: `http://localhost:${other.addr.port}/v1/traces`,
        },
      });
    },
  );
  const { logger, warnings } = recorder();
  const exporter = new OtlpExporter({
    endpoint: `http://127.0.0.1:${server.addr.port}/v1/traces`,
    headers: { "x-api-key": "collector-secret", authorization: "Bearer k" },
    logger,
    intervalMs: 60_000,
  });
  exporter.add(SPAN);
  await exporter.flush(3000);
  assert.deepEqual(elsewhere, []);
  assert.equal(exporter.exported, 0);
  assert.equal(exporter.dropped, 1);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /HTTP 307 redirect to .* not followed/);
});

Deno.test("OtlpExporter logs a failed export's endpoint without the credentials or query it holds", async () => {
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      await req.arrayBuffer();
      return new Response("down", { status: 503 });
    },
  );
  const { logger, warnings } = recorder();
  const exporter = new OtlpExporter({
    endpoint:
      `http://tenant:key-in-url@127.0.0.1:${server.addr.port}/v1/traces?api_key=key-in-query`,
    logger,
    intervalMs: 60_000,
  });
  exporter.add(SPAN);
  await exporter.flush(3000);
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0]!,
    new RegExp(
      `^Cannot export 1 spans to http://\\*\\*\\*@127\\.0\\.0\\.1:${server.addr.port}/v1/traces\\?\\*\\*\\*: `,
    ),
  );
  assert.doesNotMatch(warnings[0]!, /key-in-url|key-in-query|tenant/);
});

Deno.test("OtlpExporter waits the Retry-After of a collector's 429 or 503 before its next POST", async () => {
  const posts: number[] = [];
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      await req.arrayBuffer();
      posts.push(performance.now());
      return posts.length === 1
        ? Response.json({ error: "slow down" }, {
          status: 429,
          headers: { "retry-after": "1" },
        })
        : Response.json({});
    },
  );
  const { logger, warnings } = recorder();
  const exporter = new OtlpExporter({
    endpoint: `http://127.0.0.1:${server.addr.port}/v1/traces`,
    logger,
    intervalMs: 10,
  });
  exporter.add(SPAN);
  // The first POST is answered 429; a span that comes after it is sent
  // once the collector's second has passed, not at the next interval.
  while (posts.length === 0 || warnings.length === 0) {
    await new Promise((r) => setTimeout(r, 5));
  }
  exporter.add({ ...SPAN, spanId: "00f067aa0ba902b8" });
  while (exporter.exported === 0) {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(posts.length, 2);
  assert.ok(posts[1]! - posts[0]! >= 900, `${posts[1]! - posts[0]!} ms`);
  assert.match(warnings[0]!, /HTTP 429 .*slow down/);
  assert.equal(exporter.dropped, 1);
  await exporter.flush(1000);
});

Deno.test("OtlpExporter backs off after a failed POST even when no span waited then", async () => {
  const posts: number[] = [];
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      await req.arrayBuffer();
      posts.push(performance.now());
      return Response.json({ error: "down" }, { status: 500 });
    },
  );
  const { logger, warnings } = recorder();
  const exporter = new OtlpExporter({
    endpoint: `http://127.0.0.1:${server.addr.port}/v1/traces`,
    logger,
    intervalMs: 200,
  });
  exporter.add(SPAN);
  while (warnings.length === 0) await new Promise((r) => setTimeout(r, 5));
  // The queue was empty when the POST failed: the next span's POST waits
  // the doubled interval (400 ms), not the plain one.
  exporter.add({ ...SPAN, spanId: "00f067aa0ba902b8" });
  while (warnings.length === 1) await new Promise((r) => setTimeout(r, 5));
  assert.equal(posts.length, 2);
  assert.ok(posts[1]! - posts[0]! >= 390, `${posts[1]! - posts[0]!} ms`);
  assert.equal(exporter.dropped, 2);
});

Deno.test("GatewayTracing refuses headers that fetch would refuse at every POST", () => {
  const { logger } = recorder();
  for (
    const headers of [{ "bad name": "x" }, { "x-é": "x" }, { a: "x\ny" }, {
      a: "✓",
    }]
  ) {
    assert.throws(
      () =>
        new GatewayTracing({
          endpoint: "http://127.0.0.1:4318/v1/traces",
          headers,
        }, logger),
      (err: unknown) =>
        err instanceof RangeError &&
        /^Cannot create gateway: tracing\.headers /.test(err.message),
    );
  }
});
