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

Deno.test("OtlpExporter waits the Retry-After of a collector's 429 or 503 before its next POST, and sends that batch again", async () => {
  const posts: number[] = [];
  const sent: string[][] = [];
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const body = await req.json();
      sent.push(
        body.resourceSpans[0].scopeSpans[0].spans.map((s: { spanId: string }) =>
          s.spanId
        ),
      );
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
  assert.match(warnings[0]!, /HTTP 429 .*slow down.*POST 1 of at most 5/);
  // The batch the collector could not take then is sent again, first.
  assert.deepEqual(sent[1], [SPAN.spanId]);
  assert.equal(exporter.dropped, 0);
  await exporter.flush(1000);
  assert.equal(exporter.exported, 2);
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

Deno.test("OtlpExporter sends a batch a collector answers 503 at most 5 times, then drops it; a 400 is not sent again", async () => {
  let status = 503;
  const posts: string[][] = [];
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const body = await req.json();
      posts.push(
        body.resourceSpans[0].scopeSpans[0].spans.map((s: { spanId: string }) =>
          s.spanId
        ),
      );
      return new Response("busy", { status });
    },
  );
  const { logger, warnings } = recorder();
  const exporter = new OtlpExporter({
    endpoint: `http://127.0.0.1:${server.addr.port}/v1/traces`,
    logger,
    intervalMs: 5,
  });
  exporter.add(SPAN);
  await until(() => exporter.dropped === 1, "the batch dropped");
  assert.equal(posts.length, 5);
  assert.ok(posts.every((ids) => ids.join() === SPAN.spanId));
  assert.equal(warnings.length, 5);
  assert.match(warnings[3]!, /HTTP 503 busy \(POST 4 of at most 5/);
  assert.match(warnings[4]!, /HTTP 503 busy \(1 spans dropped so far\)/);
  // Not a retryable status: dropped at its first failure.
  status = 400;
  exporter.add({ ...SPAN, spanId: "00f067aa0ba902b8" });
  await until(() => exporter.dropped === 2, "the second batch dropped");
  assert.equal(posts.length, 6);
  await exporter.flush(1000);
});

/** Polls `check` every 5 ms, for up to 10 s. */
async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

for (
  const [collector, answer] of [
    ["unreachable", undefined],
    ["answering 503", 503],
  ] as const
) {
  Deno.test(`OtlpExporter holds at most maxQueue spans and a batch with the collector ${collector}, over 10^5 spans`, async () => {
    // A port nothing listens on (taken, then released), or a collector
    // that is always busy (each batch kept for its retries).
    let server: Deno.HttpServer<Deno.NetAddr> | undefined;
    let port: number;
    if (answer === undefined) {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      port = (listener.addr as Deno.NetAddr).port;
      listener.close();
    } else {
      server = Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen: () => {} },
        async (req) => {
          await req.arrayBuffer();
          return new Response("busy", { status: answer });
        },
      );
      port = server.addr.port;
    }
    try {
      const { logger } = recorder();
      const exporter = new OtlpExporter({
        endpoint: `http://127.0.0.1:${port}/v1/traces`,
        logger,
        intervalMs: 1,
        maxQueue: 1000,
        batchSize: 100,
      });
      let most = 0;
      for (let i = 0; i < 100_000; i++) {
        exporter.add(SPAN);
        most = Math.max(most, exporter.held);
        // Let the POSTs fail meanwhile, now and then.
        if (i % 1000 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      assert.ok(most <= 1100, `held ${most}`);
      assert.equal(exporter.exported, 0);
      assert.equal(exporter.dropped + exporter.held, 100_000);
      await exporter.flush(2000);
    } finally {
      await server?.shutdown();
    }
  });
}

/**
 * A collector that answers 200 to each POST, then closes the connection
 * before the body its Content-Length announced (as a TLS collector closing
 * without close_notify, or one that crashes right after taking a batch):
 * reading the answer fails, after the collector took the spans.
 */
function truncatingCollector(): {
  port: number;
  posts: () => number;
  [Symbol.asyncDispose](): Promise<void>;
} {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let posts = 0;
  const conns = new Set<Deno.Conn>();
  const serve = async (conn: Deno.Conn) => {
    conns.add(conn);
    try {
      const buf = new Uint8Array(64 * 1024);
      let text = "";
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) return;
        text += new TextDecoder().decode(buf.subarray(0, n));
        const end = text.indexOf("\r\n\r\n");
        if (end < 0) continue;
        const length = Number(/content-length: *(\d+)/i.exec(text)?.[1] ?? 0);
        if (text.length - end - 4 >= length) break;
      }
      posts++;
      await conn.write(new TextEncoder().encode(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{}",
      ));
    } catch {
      // The exporter gave up on the connection: nothing to answer.
    } finally {
      conns.delete(conn);
      conn.close();
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) serve(conn);
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    posts: () => posts,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) conn.close();
      await accepting.catch(() => {});
    },
  };
}

Deno.test("OtlpExporter counts a batch the collector answered 200 as exported, even when the answer's body cannot be read", async () => {
  await using collector = truncatingCollector();
  const { logger, warnings } = recorder();
  const exporter = new OtlpExporter({
    endpoint: `http://127.0.0.1:${collector.port}/v1/traces`,
    logger,
    intervalMs: 60_000,
  });
  exporter.add(SPAN);
  await exporter.flush(3000);
  exporter.add(SPAN);
  await exporter.flush(3000);
  assert.equal(collector.posts(), 2);
  assert.deepEqual(warnings, []);
  assert.equal(exporter.exported, 2);
  assert.equal(exporter.dropped, 0);
  exporter.close();
});

Deno.test("OtlpExporter logs why a POST could not reach the collector (the fetch error's cause), not only 'fetch failed'", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close();
  const { logger, warnings } = recorder();
  const exporter = new OtlpExporter({
    endpoint: `http://127.0.0.1:${port}/v1/traces`,
    logger,
    intervalMs: 60_000,
  });
  exporter.add(SPAN);
  await exporter.flush(3000);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /Connection refused/i);
  assert.equal(exporter.dropped, 1);
  exporter.close();
});

Deno.test("OtlpExporter with compression gzip sends its POSTs gzipped, Content-Encoding: gzip, and none without it", async () => {
  const posts: Array<{ encoding: string | null; raw: number; spans: number }> =
    [];
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const encoding = req.headers.get("content-encoding");
      const raw = new Uint8Array(await req.arrayBuffer());
      const text = encoding === "gzip"
        ? await new Response(
          new Blob([raw]).stream().pipeThrough(
            new DecompressionStream("gzip"),
          ),
        ).text()
        : new TextDecoder().decode(raw);
      const body = JSON.parse(text);
      posts.push({
        encoding,
        raw: raw.byteLength,
        spans: body.resourceSpans[0].scopeSpans[0].spans.length,
      });
      return Response.json({});
    },
  );
  for (const compression of ["gzip", "none", undefined] as const) {
    const { logger, warnings } = recorder();
    const exporter = new OtlpExporter({
      endpoint: `http://127.0.0.1:${server.addr.port}/v1/traces`,
      logger,
      intervalMs: 60_000,
      ...(compression === undefined ? {} : { compression }),
    });
    for (let i = 0; i < 50; i++) exporter.add({ ...SPAN, name: `span ${i}` });
    await exporter.flush(3000);
    exporter.close();
    assert.deepEqual(warnings, []);
    assert.equal(exporter.exported, 50);
  }
  assert.deepEqual(posts.map((p) => [p.encoding, p.spans]), [
    ["gzip", 50],
    [null, 50],
    [null, 50],
  ]);
  // Fifty like spans: a tenth of the bytes, or less.
  assert.ok(posts[0]!.raw * 10 < posts[1]!.raw, JSON.stringify(posts));
});

Deno.test("OtlpExporter with compression gzip names the setting when the collector refuses the body's encoding (415)", async () => {
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      await req.arrayBuffer();
      return req.headers.get("content-encoding") === null
        ? Response.json({})
        : new Response("unsupported Content-Encoding: gzip", { status: 415 });
    },
  );
  const { logger, warnings } = recorder();
  const exporter = new OtlpExporter({
    endpoint: `http://127.0.0.1:${server.addr.port}/v1/traces`,
    logger,
    intervalMs: 60_000,
    compression: "gzip",
  });
  exporter.add(SPAN);
  await exporter.flush(3000);
  exporter.close();
  assert.equal(exporter.dropped, 1);
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0]!,
    /HTTP 415 unsupported Content-Encoding: gzip \(the collector may not take gzipped bodies: set tracing\.compression to none\)/,
  );
});
