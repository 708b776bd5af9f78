// The exporter's certificate variables (docs/gateway.md, "Tracing"):
// OTEL_EXPORTER_OTLP_CERTIFICATE (a private CA), ..._CLIENT_CERTIFICATE and
// ..._CLIENT_KEY (mutual TLS), read and checked at start, and a real gateway
// whose spans reach an HTTPS collector that trusts only that client.
import assert from "node:assert/strict";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { ConfigError } from "../src/errors.ts";
import { loadConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { until, withLogs } from "./_gateway_harness.ts";
import { createGateway } from "../src/gateway/app.ts";
import { MAX_PEM_FILE_BYTES } from "../src/gateway/_pem_file.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

/** The config `loadConfig` makes with these variables (no file). */
function load(vars: Record<string, string>, cli = {}) {
  const base = defaultRuntime();
  const runtime: Runtime = {
    ...base,
    env: (name) => name.startsWith("OTEL_") ? vars[name] : base.env(name),
  };
  return loadConfig({ runtime, cli: { modelsDir: ".", ...cli } });
}

/** An HTTPS collector that takes only clients with `clientPem`'s certificate. */
async function mtlsCollector(
  server: { cert: string; key: string },
  clientPem: string,
) {
  const spans: string[] = [];
  const srv = https.createServer({
    cert: await Deno.readTextFile(server.cert),
    key: await Deno.readTextFile(server.key),
    requestCert: true,
    rejectUnauthorized: true,
    ca: [clientPem],
  }, (req, res) => {
    let body = "";
    req.on("data", (chunk) => body += chunk);
    req.on("end", () => {
      for (const rs of JSON.parse(body).resourceSpans) {
        for (const ss of rs.scopeSpans) {
          for (const s of ss.spans) spans.push(s.name);
        }
      }
      res.setHeader("content-type", "application/json");
      res.end("{}");
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as AddressInfo;
  return {
    spans,
    base: `https://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => srv.close(() => resolve())),
  };
}

Deno.test({
  name:
    "OTEL_EXPORTER_OTLP_CERTIFICATE and the client certificate variables: spans reach an HTTPS collector with a private CA that asks for the client's certificate",
  ignore: !HAS_OPENSSL,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-otlp-tls-" });
    try {
      const server = await selfSignedCert(dir, "collector");
      const client = await selfSignedCert(dir, "client");
      const collector = await mtlsCollector(server, client.pem);
      try {
        await Deno.copyFile(
          new URL("../examples/models/echo.py", import.meta.url),
          `${dir}/echo.py`,
        );
        const config = await load({
          OTEL_EXPORTER_OTLP_ENDPOINT: collector.base,
          OTEL_EXPORTER_OTLP_CERTIFICATE: server.cert,
          OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE: client.cert,
          OTEL_EXPORTER_OTLP_CLIENT_KEY: client.key,
        }, {
          port: 0,
          workers: 1,
          modelsDir: dir,
          models: [{ name: "echo", file: "echo.py" }],
          tracing: { batchIntervalMs: 20 },
        });
        assert.equal(config.tracing?.tls?.ca, server.pem);
        assert.equal(config.tracing?.tls?.cert, client.pem);
        const gw = await serve(config, { handleSignals: false });
        try {
          const res = await fetch(`${gw.url}/v1/models/echo/execute`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: '{"a":1}',
          });
          assert.equal(res.status, 200);
          await res.arrayBuffer();
          await until(
            () => Promise.resolve(collector.spans.length > 0 || undefined),
            "the span at the collector",
          );
          assert.deepEqual(collector.spans, ["POST /v1/models/{name}/execute"]);
        } finally {
          await gw.shutdown();
        }
      } finally {
        await collector.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "The certificate variables are checked at start when tracing is on: a file missing, not PEM, a key without its certificate or not its key is a config error naming the variable",
  ignore: !HAS_OPENSSL,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-otlp-tls-" });
    try {
      const a = await selfSignedCert(dir, "a");
      const b = await selfSignedCert(dir, "b");
      const endpoint = {
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://127.0.0.1:4318/v1/traces",
      };
      const refused = async (
        vars: Record<string, string>,
        pattern: RegExp,
      ) => {
        const err = await load({ ...endpoint, ...vars }).then(
          () => undefined,
          (e) => e,
        );
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, pattern);
      };
      await refused(
        { OTEL_EXPORTER_OTLP_CERTIFICATE: `${dir}/none.crt` },
        /^OTEL_EXPORTER_OTLP_CERTIFICATE: .*none\.crt cannot be read/,
      );
      await refused(
        { OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: a.key },
        /^OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: .* is not a PEM certificate/,
      );
      await refused(
        { OTEL_EXPORTER_OTLP_CLIENT_KEY: a.key },
        /^OTEL_EXPORTER_OTLP_CLIENT_KEY: .* without a client certificate/,
      );
      await refused(
        {
          OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: a.cert,
          OTEL_EXPORTER_OTLP_CLIENT_KEY: b.key,
        },
        /^OTEL_EXPORTER_OTLP_CLIENT_KEY: .* is not the private key of the client certificate/,
      );
      // Tracing off: the variables are not read.
      assert.equal(
        (await load({ OTEL_EXPORTER_OTLP_CLIENT_KEY: a.key })).tracing,
        undefined,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "The certificate variables refuse a CA or client key another user owns or could replace, and take a client certificate of theirs (needs root to chown: ignored otherwise)",
  ignore: !HAS_OPENSSL || Deno.build.os === "windows" || Deno.uid() !== 0,
  async fn() {
    // Only read and parsed: a CA of another user's (theirs to swap for one
    // of their own, and a collector of theirs in between gets the spans and
    // the exporter's headers) or a client key of theirs (the gateway's
    // identity to the collector) was used (security25).
    const OTHER = 4242;
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-otlp-tls-owner-" });
    try {
      const a = await selfSignedCert(dir, "a");
      const endpoint = {
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://127.0.0.1:4318/v1/traces",
      };
      const loaded = (vars: Record<string, string>) =>
        load({ ...endpoint, ...vars }).then(() => undefined, (e) => e);
      const theirs = async (from: string, name: string) => {
        await Deno.copyFile(from, `${dir}/${name}`);
        await Deno.chown(`${dir}/${name}`, OTHER, OTHER);
        return `${dir}/${name}`;
      };
      const ca = await loaded({
        OTEL_EXPORTER_OTLP_CERTIFICATE: await theirs(a.cert, "ca.crt"),
      });
      assert.ok(ca instanceof ConfigError, String(ca));
      assert.match(
        ca.message,
        /^OTEL_EXPORTER_OTLP_CERTIFICATE: .*ca\.crt cannot be used: it belongs to another user \(uid 4242\), and whoever owns or can replace it chooses the collector/,
      );
      const key = await loaded({
        OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: a.cert,
        OTEL_EXPORTER_OTLP_CLIENT_KEY: await theirs(a.key, "client.key"),
      });
      assert.ok(key instanceof ConfigError, String(key));
      assert.match(
        key.message,
        /^OTEL_EXPORTER_OTLP_CLIENT_KEY: .*client\.key cannot be used: it belongs to another user \(uid 4242\), and whoever owns or can replace it can pass for this gateway/,
      );
      // The client certificate is public (and checked against the key).
      assert.equal(
        await loaded({
          OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: await theirs(
            a.cert,
            "client.crt",
          ),
          OTEL_EXPORTER_OTLP_CLIENT_KEY: a.key,
        }),
        undefined,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("The certificate variables refuse a FIFO, a device, a directory and a file larger than a PEM file holds, rather than hang the start or read without end", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-otlp-tls-" });
  try {
    const fifo = `${dir}/fifo.pem`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output()
      .then((o) => o.success, () => false);
    const big = `${dir}/big.pem`;
    await Deno.writeFile(big, new Uint8Array(MAX_PEM_FILE_BYTES + 1));
    const endpoint = {
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://127.0.0.1:4318/v1/traces",
    };
    const cases: Array<[string, RegExp]> = [
      ["/dev/zero", /\/dev\/zero is not a regular file/],
      [dir, /cannot be read|is not a regular file/],
      [big, /big\.pem is larger than a PEM file holds/],
      ...(made
        ? [[fifo, /fifo\.pem is not a regular file/] as [string, RegExp]]
        : []),
    ];
    for (const [path, pattern] of cases) {
      const err = await load({
        ...endpoint,
        OTEL_EXPORTER_OTLP_CERTIFICATE: path,
      }).then(() => undefined, (e) => e);
      assert.ok(err instanceof ConfigError, `${path}: ${err}`);
      assert.match(err.message, /^OTEL_EXPORTER_OTLP_CERTIFICATE: /);
      assert.match(err.message, pattern);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Tracing with certificates and an http:// endpoint warns that they are not used (the spans and headers go in clear text)", async () => {
  await withLogs((records) => {
    const stop = new AbortController();
    createGateway({} as unknown as Parameters<typeof createGateway>[0], {
      stopSignal: stop.signal,
      tracing: { endpoint: "http://127.0.0.1:1/v1/traces", tls: {} },
    });
    stop.abort();
    const warned = records.filter((r) =>
      r.level === "warning" &&
      r.message.join("").includes("travel in clear text")
    );
    assert.equal(warned.length, 1, records.map((r) => r.message).join("\n"));
    assert.match(
      warned[0]!.message.join(""),
      /endpoint "?http:\/\/127\.0\.0\.1:1\/v1\/traces"? is http:\/\//,
    );
    return Promise.resolve();
  });
});
