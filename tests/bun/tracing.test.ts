// Tracing under Bun: a gateway call's span reaches a collector (Bun.serve
// standing in for it) as OTLP/JSON, under the client's traceparent, and the
// model reads the gateway's span as its parent (host.trace_context()).
import { expect, test } from "bun:test";
import { withGateway } from "./_helpers.ts";
import { otelEnv } from "../../src/gateway/_otel_env.ts";
import { bunRuntime } from "../../src/runtime/bun.ts";
import { HAS_OPENSSL, selfSignedCert } from "../_self_signed_cert.ts";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const TRACED = `from pyproxy import host


class Traced:
    def execute(self, msg):
        return {"trace": host.trace_context()}
`;

const PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

type Span = {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
};

test("Gateway on Bun: a traced call's span goes to the collector, its context to the model", async () => {
  const spans: Span[] = [];
  const collector = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const body = await req.json() as {
        resourceSpans: Array<{ scopeSpans: Array<{ spans: Span[] }> }>;
      };
      for (const rs of body.resourceSpans) {
        for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      }
      return Response.json({});
    },
  });
  try {
    await withGateway(
      { "traced.py": TRACED },
      {
        tracing: {
          endpoint: `http://127.0.0.1:${collector.port}/v1/traces`,
          batchIntervalMs: 20,
        },
      },
      async (server) => {
        const res = await fetch(`${server.url}/v1/models/traced/execute`, {
          method: "POST",
          headers: { "content-type": "application/json", traceparent: PARENT },
          body: "{}",
        });
        expect(res.status).toBe(200);
        const { trace } = await res.json() as {
          trace: { traceparent: string };
        };
        const deadline = Date.now() + 10_000;
        while (spans.length === 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        expect(spans.length).toBe(1);
        const span = spans[0]!;
        expect(span.name).toBe("POST /v1/models/{name}/execute");
        expect(span.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
        expect(span.parentSpanId).toBe("00f067aa0ba902b7");
        expect(trace.traceparent).toBe(
          `00-4bf92f3577b34da6a3ce929d0e0e4736-${span.spanId}-01`,
        );
      },
    );
  } finally {
    collector.stop(true);
  }
});

test("OTEL_EXPORTER_OTLP_HEADERS on Bun: a header named __proto__ is kept (Bun has the __proto__ setter Deno removed)", () => {
  const env: Record<string, string> = {
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:4318/v1/traces",
    OTEL_EXPORTER_OTLP_HEADERS: "__proto__=p1,api-key=k",
  };
  const headers = otelEnv((name) => env[name], () => {})?.headers ?? {};
  expect(Object.keys(headers)).toEqual(["__proto__", "api-key"]);
  expect(Object.getOwnPropertyDescriptor(headers, "__proto__")?.value).toBe(
    "p1",
  );
  expect(Object.getPrototypeOf(headers)).toBe(Object.prototype);
});

test("Runtime.tlsFetch on Bun: trusts the given CA and presents the client's certificate (the exporter's OTEL_EXPORTER_OTLP_CERTIFICATE and client certificate)", async () => {
  if (!HAS_OPENSSL) return;
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-otlp-tls-"));
  try {
    const server = await selfSignedCert(dir, "collector");
    const client = await selfSignedCert(dir, "client");
    const srv = https.createServer({
      cert: server.pem,
      key: await readFile(server.key, "utf8"),
      requestCert: true,
      rejectUnauthorized: true,
      ca: [client.pem],
    }, (_req, res) => res.end("ok"));
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    const url = `https://127.0.0.1:${(srv.address() as AddressInfo).port}/`;
    try {
      const rt = bunRuntime();
      const key = await readFile(client.key, "utf8");
      const tls = rt.tlsFetch!({ ca: server.pem, cert: client.pem, key });
      const res = await tls.fetch(url);
      tls.close();
      expect(await res.text()).toBe("ok");
      // Without the client's certificate, the collector refuses.
      let refused = false;
      await rt.tlsFetch!({ ca: server.pem }).fetch(url).then(
        (r) => r.text(),
        () => refused = true,
      );
      expect(refused).toBe(true);
    } finally {
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
