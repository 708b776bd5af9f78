// The OpenTelemetry SDK's environment variables the gateway's tracing reads
// (docs/gateway.md, "Tracing"): parsed as the OTel specification says,
// checked at start (a ConfigError naming the variable, never repeating a
// header's text), under the flags and the file; and a real gateway whose
// spans reach a fake collector with the variables' endpoint and headers.
import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import { loadConfig, resolveConfig } from "../src/gateway/config.ts";
import { type GatewayServer, serve } from "../src/gateway/serve.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { attr, Collector } from "./_otlp_collector.ts";
import { until } from "./_gateway_harness.ts";

/** The config `loadConfig` makes with these variables (no file). */
function load(vars: Record<string, string>, cli = {}) {
  const base = defaultRuntime();
  const runtime: Runtime = {
    ...base,
    // None of the machine's own OTEL_* variables.
    env: (name) => name.startsWith("OTEL_") ? vars[name] : base.env(name),
  };
  return loadConfig({ runtime, cli: { modelsDir: ".", ...cli } });
}

/**
 * A gateway (`serve`, one worker) of the echo example model, configured by
 * the variables `vars` under `cli`, given to `fn`; shut down after it, its
 * models directory removed.
 */
async function withEchoGateway(
  vars: Record<string, string>,
  cli: Record<string, unknown>,
  fn: (server: GatewayServer) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-otel-env-" });
  try {
    await Deno.copyFile(
      new URL("../examples/models/echo.py", import.meta.url),
      `${dir}/echo.py`,
    );
    const config = await load(vars, {
      port: 0,
      workers: 1,
      modelsDir: dir,
      models: [{ name: "echo", file: "echo.py" }],
      ...cli,
    });
    const server = await serve(config, { handleSignals: false });
    try {
      await fn(server);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** `POST /v1/models/echo/execute` of `{}` with `headers`; its body read. */
async function echo(
  server: GatewayServer,
  headers: Record<string, string> = {},
): Promise<void> {
  const res = await fetch(`${server.url}/v1/models/echo/execute`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: "{}",
  });
  await res.arrayBuffer();
}

async function refused(vars: Record<string, string>): Promise<string> {
  const err = await load(vars).then(() => undefined, (e) => e);
  assert.ok(err instanceof ConfigError, String(err));
  return err.message;
}

Deno.test("OTEL_EXPORTER_OTLP_HEADERS: comma-separated key=value, values URL-decoded; the traces' own wins whole", async () => {
  const endpoint = "http://127.0.0.1:4318/v1/traces";
  const config = await load({
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
    OTEL_EXPORTER_OTLP_HEADERS:
      " api-key = abc%20def%2C1 ,X-Tenant=t%3D1,, empty= ",
  });
  assert.deepEqual(config.tracing, {
    endpoint,
    headers: { "api-key": "abc def,1", "x-tenant": "t=1", empty: "" },
  });
  const traces = await load({
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
    OTEL_EXPORTER_OTLP_HEADERS: "api-key=generic,other=1",
    OTEL_EXPORTER_OTLP_TRACES_HEADERS: "api-key=traces",
  });
  assert.deepEqual(traces.tracing?.headers, { "api-key": "traces" });
  // A header named __proto__ is a header like any other (an object's
  // "__proto__" assignment would set its prototype and drop it: on Bun,
  // tests/bun/tracing.test.ts; Deno has no such setter).
  const proto = await load({
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
    OTEL_EXPORTER_OTLP_HEADERS: "__proto__=p1,api-key=k",
  });
  const headers = proto.tracing?.headers ?? {};
  assert.deepEqual(Object.keys(headers), ["__proto__", "api-key"]);
  assert.equal(
    Object.getOwnPropertyDescriptor(headers, "__proto__")?.value,
    "p1",
  );
  // The file's (or the flags') headers win over the variables'.
  const file = resolveConfig({
    cwd: "/",
    file: { tracing: { endpoint, headers: { "x-file": "1" } } },
    otelEnv: { headers: { "api-key": "env" } },
  });
  assert.deepEqual(file.tracing?.headers, { "x-file": "1" });
});

Deno.test("OTEL_RESOURCE_ATTRIBUTES: the resource's attributes under the file's, key by key; its service.name under OTEL_SERVICE_NAME; a wrong one fails only a gateway that uses it", async () => {
  const endpoint = "http://127.0.0.1:4318/v1/traces";
  const config = await load({
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
    OTEL_RESOURCE_ATTRIBUTES:
      " deployment.environment = prod%2Ceu ,k8s.pod.name=scorer-0,,service.name=from-attributes",
  });
  assert.deepEqual(config.tracing, {
    endpoint,
    serviceName: "from-attributes",
    resourceAttributes: {
      "deployment.environment": "prod,eu",
      "k8s.pod.name": "scorer-0",
    },
  });
  const named = await load({
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
    OTEL_RESOURCE_ATTRIBUTES: "service.name=from-attributes",
    OTEL_SERVICE_NAME: "from-env",
  });
  assert.deepEqual(named.tracing, { endpoint, serviceName: "from-env" });
  // The file's attributes win key by key; its serviceName over all.
  const file = resolveConfig({
    cwd: "/",
    file: {
      tracing: {
        endpoint,
        serviceName: "file",
        resourceAttributes: { "k8s.pod.name": "file-pod", team: "ml" },
      },
    },
    otelEnv: {
      serviceName: "env",
      resourceAttributes: { "k8s.pod.name": "env-pod", region: "eu" },
    },
  });
  assert.equal(file.tracing?.serviceName, "file");
  assert.deepEqual(file.tracing?.resourceAttributes, {
    "k8s.pod.name": "file-pod",
    region: "eu",
    team: "ml",
  });
  // Wrong: an entry without "=", a stray %, a control character.
  for (
    const [value, why] of [
      ["a=1,b", /entry 2 has no key=value/],
      ["a=%zz", /entry 1 has a value that is not URL-encoded/],
      ["a=x%0Ay", /entry 1 has a control character/],
    ] as const
  ) {
    const message = await refused({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
      OTEL_RESOURCE_ATTRIBUTES: value,
    });
    assert.match(message, /^OTEL_RESOURCE_ATTRIBUTES: /);
    assert.match(message, why);
  }
  // Without tracing it is not used.
  assert.equal(
    (await load({ OTEL_RESOURCE_ATTRIBUTES: "a=1,b" })).tracing,
    undefined,
  );
  // With the file's attributes it is (under them, key by key): a wrong one
  // still fails; its entries were dropped without a word.
  const problem = new ConfigError("OTEL_RESOURCE_ATTRIBUTES: entry 2 ...");
  assert.throws(
    () =>
      resolveConfig({
        cwd: "/",
        file: { tracing: { endpoint, resourceAttributes: { team: "ml" } } },
        otelEnv: { problems: { resourceAttributes: problem } },
      }),
    (err: unknown) => err === problem,
  );
  // An empty service.name names nothing (the default), as an empty
  // OTEL_SERVICE_NAME: the service was named "".
  const unnamed = await load({
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
    OTEL_RESOURCE_ATTRIBUTES: "service.name=,team=ml",
  });
  assert.deepEqual(unnamed.tracing, {
    endpoint,
    resourceAttributes: { team: "ml" },
  });
});

Deno.test("OTEL_EXPORTER_OTLP_HEADERS that fetch would refuse fail the start, naming the variable and the entry, never its text", async () => {
  const endpoint = "http://127.0.0.1:4318/v1/traces";
  const secret = "s3cr3t-key-0123456789";
  for (
    const [value, why] of [
      [`api-key:${secret}`, /entry 1 has no key=value/],
      [`a=1,${secret}`, /entry 2 has no key=value/],
      [`api-key=${secret}%zz`, /entry 1 has a value that is not URL-encoded/],
      [`api key=${secret}`, /entry 1 has a key that is not a header name/],
      [`api-key=${secret}%0A`, /entry 1 has a value with CR, LF, NUL/],
      [`api-key=${secret}%E2%9C%93`, /beyond Latin-1/],
    ] as const
  ) {
    for (
      const variable of [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
      ]
    ) {
      const message = await refused({
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
        [variable]: value,
      });
      assert.ok(message.startsWith(`${variable}: `), message);
      assert.match(message, why);
      assert.ok(!message.includes(secret), message);
      assert.ok(!message.includes("s3cr3t"), message);
    }
  }
});

Deno.test("OTEL_EXPORTER_OTLP_ENDPOINT is a base URL (/v1/traces appended); OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as it is and wins", async () => {
  const endpoint = async (vars: Record<string, string>) =>
    (await load(vars)).tracing?.endpoint;
  assert.equal(
    await endpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }),
    "http://collector:4318/v1/traces",
  );
  assert.equal(
    await endpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: "https://otel.example/p/" }),
    "https://otel.example/p/v1/traces",
  );
  assert.equal(
    await endpoint({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://traces:4318/custom",
    }),
    "http://traces:4318/custom",
  );
  // The flag's, then the file's, over both.
  assert.equal(
    (await load({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }, {
      tracing: { endpoint: "http://flag:4318/v1/traces" },
    })).tracing?.endpoint,
    "http://flag:4318/v1/traces",
  );
  assert.match(
    await refused({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }),
    /^tracing\.endpoint: expected an http\(s\) URL .*OTEL_EXPORTER_OTLP_ENDPOINT/,
  );
  // OTLP over gRPC is not what the gateway sends: refused, not a silent
  // failure of every POST.
  assert.match(
    await refused({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4317",
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
    }),
    /^OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" is not supported/,
  );
  assert.match(
    await refused({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4317",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "grpc",
    }),
    /^OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: /,
  );
  for (const protocol of ["http/json", "http/protobuf"]) {
    assert.equal(
      await endpoint({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
        OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
      }),
      "http://collector:4318/v1/traces",
    );
  }
});

Deno.test("OTEL_TRACES_SAMPLER sets sampleRatio for the parent-based samplers only; OTEL_SDK_DISABLED turns tracing off", async () => {
  const base = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" };
  const ratio = async (vars: Record<string, string>, cli = {}) =>
    (await load({ ...base, ...vars }, cli)).tracing?.sampleRatio;
  assert.equal(await ratio({}), undefined);
  assert.equal(
    await ratio({ OTEL_TRACES_SAMPLER: "parentbased_always_on" }),
    1,
  );
  assert.equal(
    await ratio({ OTEL_TRACES_SAMPLER: "parentbased_always_off" }),
    0,
  );
  assert.equal(
    await ratio({
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0.25",
    }),
    0.25,
  );
  // The spec's default argument.
  assert.equal(
    await ratio({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio" }),
    1,
  );
  // The file's (or flags') sampleRatio wins.
  assert.equal(
    await ratio({ OTEL_TRACES_SAMPLER: "parentbased_always_off" }, {
      tracing: { sampleRatio: 0.5 },
    }),
    0.5,
  );
  for (const sampler of ["always_on", "always_off", "traceidratio", "xray"]) {
    assert.match(
      await refused({ ...base, OTEL_TRACES_SAMPLER: sampler }),
      /^OTEL_TRACES_SAMPLER: ".*" is not supported: the gateway's sampling is parent-based/,
    );
  }
  for (const arg of ["2", "-0.1", "half"]) {
    assert.match(
      await refused({
        ...base,
        OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG: arg,
      }),
      /^OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1/,
    );
  }
  // Disabled: off, whatever sets the endpoint (the flag too).
  for (const value of ["true", "TRUE", " True "]) {
    assert.equal(
      (await load({ ...base, OTEL_SDK_DISABLED: value }, {
        tracing: { endpoint: "http://flag:4318/v1/traces" },
      })).tracing,
      undefined,
    );
  }
  assert.ok((await load({ ...base, OTEL_SDK_DISABLED: "false" })).tracing);
  // Disabled, the other variables are not read: those set for other
  // services (what the sampler's error suggests instead) start the gateway.
  const others = {
    ...base,
    OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
    OTEL_TRACES_SAMPLER: "always_off",
    OTEL_TRACES_SAMPLER_ARG: "half",
    OTEL_EXPORTER_OTLP_HEADERS: "api-key=%zz",
  };
  await refused(others);
  assert.equal(
    (await load({ ...others, OTEL_SDK_DISABLED: "true" })).tracing,
    undefined,
  );
});

Deno.test("A wrong OTEL_TRACES_SAMPLER or OTEL_EXPORTER_OTLP_HEADERS fails only a gateway that traces with it (an environment made for other services' SDKs)", async () => {
  const wrong = {
    OTEL_TRACES_SAMPLER: "always_on",
    OTEL_EXPORTER_OTLP_HEADERS: "api-key=%zz",
  };
  // No endpoint anywhere: no tracing, and the start goes on.
  assert.equal((await load(wrong)).tracing, undefined);
  // The file's (or the flags') fields win: the variables are unused.
  const cli = {
    tracing: {
      endpoint: "http://flag:4318/v1/traces",
      sampleRatio: 1,
      headers: { "x-api-key": "k" },
    },
  };
  assert.equal((await load(wrong, cli)).tracing?.sampleRatio, 1);
  // Tracing on with them: each still fails the start, named.
  const on = { tracing: { endpoint: "http://flag:4318/v1/traces" } };
  for (
    const [vars, pattern] of [
      [{ OTEL_TRACES_SAMPLER: "always_on" }, /^OTEL_TRACES_SAMPLER: /],
      [
        { OTEL_EXPORTER_OTLP_HEADERS: "api-key=%zz" },
        /OTEL_EXPORTER_OTLP_HEADERS/,
      ],
    ] as const
  ) {
    const err = await load(vars, on).then(() => undefined, (e) => e);
    assert.ok(err instanceof ConfigError, String(err));
    assert.match(err.message, pattern);
  }
});

Deno.test("A gateway configured by OTEL_* variables alone sends its spans to OTEL_EXPORTER_OTLP_ENDPOINT with the traces' headers", async () => {
  await using collector = new Collector();
  await withEchoGateway(
    {
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.base,
      OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=generic",
      OTEL_EXPORTER_OTLP_TRACES_HEADERS:
        "x-api-key=k%2B1%3D%3D,x-team=ml,__proto__=p1",
      OTEL_TRACES_SAMPLER: "parentbased_always_off",
      OTEL_SERVICE_NAME: "from-env",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test,service.name=x",
    },
    { tracing: { batchIntervalMs: 60_000 } },
    async (server) => {
      // parentbased_always_off: no span without a sampled parent.
      await echo(server, { "x-request-id": "e-none" });
      await echo(server, {
        "x-request-id": "e-parent",
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      });
    },
  );
  assert.equal(collector.requests.length, 1);
  const { headers, body } = collector.requests[0]!;
  assert.equal(headers.get("x-api-key"), "k+1==");
  assert.equal(headers.get("x-team"), "ml");
  assert.equal(headers.get("__proto__"), "p1");
  assert.deepEqual(
    collector.spans.map((s) => attr(s, "pyproxy.request_id")),
    ["e-parent"],
  );
  const resource = (body as {
    resourceSpans: Array<{
      resource: { attributes: Array<{ key: string; value: unknown }> };
    }>;
  }).resourceSpans[0]!.resource;
  assert.deepEqual(
    resource.attributes.find((a) => a.key === "service.name")?.value,
    { stringValue: "from-env" },
  );
  assert.deepEqual(
    resource.attributes.filter((a) => a.key === "service.name").length,
    1,
  );
  assert.deepEqual(
    resource.attributes.find((a) => a.key === "deployment.environment")
      ?.value,
    { stringValue: "test" },
  );
});

Deno.test("OTEL_BSP_* and the exporter's timeouts set maxQueue, batchIntervalMs, batchSize and exportTimeoutMs, under the file's; a wrong one fails only a gateway that uses it", async () => {
  const endpoint = "http://127.0.0.1:4318/v1/traces";
  const vars = {
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
    OTEL_BSP_MAX_QUEUE_SIZE: "100",
    OTEL_BSP_SCHEDULE_DELAY: "250",
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "10",
    OTEL_EXPORTER_OTLP_TIMEOUT: "4000",
    OTEL_BSP_EXPORT_TIMEOUT: "30000",
  };
  assert.deepEqual((await load(vars)).tracing, {
    endpoint,
    maxQueue: 100,
    batchIntervalMs: 250,
    batchSize: 10,
    exportTimeoutMs: 4000,
  });
  // The traces' own timeout wins over the generic one; the processor's,
  // smaller, cuts both (an SDK's export is bounded by each).
  assert.equal(
    (await load({
      ...vars,
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "2000",
    })).tracing?.exportTimeoutMs,
    2000,
  );
  assert.equal(
    (await load({ ...vars, OTEL_BSP_EXPORT_TIMEOUT: "1500" })).tracing
      ?.exportTimeoutMs,
    1500,
  );
  // The file's (or the flags') fields win, field by field.
  const fromFile = await load(vars, {
    tracing: { maxQueue: 7, exportTimeoutMs: 900 },
  });
  assert.equal(fromFile.tracing?.maxQueue, 7);
  assert.equal(fromFile.tracing?.exportTimeoutMs, 900);
  assert.equal(fromFile.tracing?.batchSize, 10);
  // Wrong: a config error naming the variable, when tracing uses it.
  for (
    const [name, value] of [
      ["OTEL_BSP_MAX_QUEUE_SIZE", "10k"],
      ["OTEL_BSP_SCHEDULE_DELAY", "0"],
      ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1"],
      ["OTEL_EXPORTER_OTLP_TIMEOUT", "1.5"],
      ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "9999999"],
      ["OTEL_BSP_EXPORT_TIMEOUT", "soon"],
    ] as const
  ) {
    const message = await refused({ ...vars, [name]: value });
    assert.match(message, new RegExp(`^${name}: expected an integer from `));
    // Without an endpoint, nothing traces: no error.
    const { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: _, ...off } = vars;
    assert.equal((await load({ ...off, [name]: value })).tracing, undefined);
  }
  // Set by the file, the variable is unused, and not checked.
  const unused = await load({ ...vars, OTEL_BSP_MAX_QUEUE_SIZE: "lots" }, {
    tracing: { maxQueue: 5 },
  });
  assert.equal(unused.tracing?.maxQueue, 5);
});

Deno.test("OTEL_EXPORTER_OTLP_TIMEOUT bounds each POST to the collector, and OTEL_BSP_MAX_EXPORT_BATCH_SIZE the spans in it", async () => {
  // A collector that never answers its first POST (until the test ends).
  const posts: number[] = [];
  const held = Promise.withResolvers<void>();
  const collector = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const body = await req.json();
      posts.push(body.resourceSpans[0].scopeSpans[0].spans.length);
      if (posts.length === 1) await held.promise;
      return Response.json({});
    },
  );
  try {
    await withEchoGateway(
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.addr.port}`,
        OTEL_EXPORTER_OTLP_TIMEOUT: "300",
        OTEL_BSP_SCHEDULE_DELAY: "60000",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2",
      },
      {},
      async (server) => {
        try {
          // Two spans: a full batch, sent at once (not after the 60 s delay,
          // nor the default 5 s).
          await echo(server);
          await echo(server);
          await until(
            () => Promise.resolve(posts.length === 1 || undefined),
            "a POST",
            4000,
          );
          assert.deepEqual(posts, [2]);
          // That POST is cut after 300 ms (not the 10 s default): its spans
          // are counted as dropped.
          await until(
            async () => {
              const text = await (await fetch(`${server.url}/metrics`)).text();
              return /^pyproxy_trace_spans_dropped_total 2$/m.test(text) ||
                undefined;
            },
            "the timed-out POST's spans counted as dropped",
            3000,
          );
        } finally {
          held.resolve();
        }
      },
    );
  } finally {
    held.resolve();
    await collector.shutdown();
  }
});

Deno.test("OTEL_EXPORTER_OTLP_COMPRESSION sets compression (the traces' own first), under the file's; a value other than gzip or none fails only a gateway that uses it", async () => {
  const endpoint = "http://127.0.0.1:4318/v1/traces";
  const vars = {
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
    OTEL_EXPORTER_OTLP_COMPRESSION: "gzip",
  };
  assert.deepEqual((await load(vars)).tracing, {
    endpoint,
    compression: "gzip",
  });
  assert.equal(
    (await load({ ...vars, OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: "none" }))
      .tracing?.compression,
    "none",
  );
  assert.equal(
    (await load(vars, { tracing: { compression: "none" } })).tracing
      ?.compression,
    "none",
  );
  for (
    const name of [
      "OTEL_EXPORTER_OTLP_COMPRESSION",
      "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    ]
  ) {
    assert.equal(
      await refused({ ...vars, [name]: "br" }),
      `${name}: "br" is not supported: expected gzip or none`,
    );
    const { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: _, ...off } = vars;
    assert.equal((await load({ ...off, [name]: "br" })).tracing, undefined);
  }
  // The file's field is checked as the others are.
  const err = await load({}, {
    tracing: { endpoint, compression: "zstd" },
  }).then(() => undefined, (e) => e);
  assert.ok(err instanceof ConfigError, String(err));
  assert.match(err.message, /compression: expected "gzip" or "none"/);
});

Deno.test("A gateway with OTEL_EXPORTER_OTLP_COMPRESSION=gzip sends its spans gzipped to the collector", async () => {
  await using collector = new Collector();
  await withEchoGateway(
    {
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.base,
      OTEL_EXPORTER_OTLP_COMPRESSION: "gzip",
      OTEL_BSP_SCHEDULE_DELAY: "50",
    },
    {},
    async (server) => {
      await echo(server, { "x-request-id": "gz1" });
      const span = await collector.spanOf("gz1");
      assert.equal(span.name, "POST /v1/models/{name}/execute");
      assert.equal(
        collector.requests[0]?.headers.get("content-encoding"),
        "gzip",
      );
    },
  );
});

Deno.test("OTEL_PROPAGATORS: tracecontext among them reads clients' traceparent, none or baggage alone reads none, b3 alone or an unknown name fails a gateway that traces", async () => {
  const endpoint = "http://127.0.0.1:4318/v1/traces";
  const with_ = (value: string) =>
    load({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
      OTEL_PROPAGATORS: value,
    });
  for (
    const [value, propagation] of [
      ["tracecontext,baggage", "tracecontext"],
      [" b3 , tracecontext ", "tracecontext"],
      ["none", "none"],
      ["baggage", "none"],
    ] as const
  ) {
    assert.equal((await with_(value)).tracing?.propagation, propagation, value);
  }
  // No name, as unset (not none: clients' context dropped unasked).
  const unset = (await load({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint }))
    .tracing?.propagation;
  assert.notEqual(unset, "none");
  for (const value of [",", " , ,"]) {
    assert.equal((await with_(value)).tracing?.propagation, unset, value);
  }
  assert.equal(
    await refused({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
      OTEL_PROPAGATORS: "b3multi",
    }),
    "OTEL_PROPAGATORS: b3multi is not supported: the gateway reads W3C trace context only (traceparent, tracestate); add tracecontext (clients that send both are joined), or set none",
  );
  assert.match(
    await refused({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
      OTEL_PROPAGATORS: "tracecontext,zipkin",
    }),
    /^OTEL_PROPAGATORS: "zipkin" is not a propagator: expected tracecontext, baggage or none/,
  );
  // Not tracing: not checked. The file's field wins, unchecked variable.
  assert.equal((await load({ OTEL_PROPAGATORS: "b3" })).tracing, undefined);
  assert.equal(
    (await load({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint,
      OTEL_PROPAGATORS: "b3",
    }, { tracing: { propagation: "none" } })).tracing?.propagation,
    "none",
  );
});
