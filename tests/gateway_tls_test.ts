/**
 * The gateway over TLS, and its two tokens (inference and management) with
 * rotation: real Python workers, a real gateway on a real socket, a
 * self-signed certificate made by openssl for each run.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import { loadConfig, resolveConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { SseReader, startGateway, withLogs } from "./_gateway_harness.ts";
import { InferenceClient } from "./_grpc_client.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

const TOKEN = "inference-token-0123456789";
const NEW_TOKEN = "inference-token-rotated-987";
const MANAGE = "management-token-0123456789";

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-tls-test-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "serve over TLS: https URL, execute, stream and a wss channel subscription, the tokens and their rotation",
  ignore: !HAS_OPENSSL,
}, async () => {
  await withTempDir(async (dir) => {
    const tls = await selfSignedCert(dir);
    await using gw = await startGateway({
      tls: { cert: tls.cert, key: tls.key },
      token: [TOKEN, NEW_TOKEN],
      manageToken: MANAGE,
      allowEval: true,
      allowManage: true,
    });
    assert.match(gw.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    using client = Deno.createHttpClient({ caCerts: [tls.pem] });
    const call = (
      path: string,
      token: string | undefined,
      init: RequestInit = {},
    ): Promise<Response> => {
      const headers = new Headers(init.headers);
      if (token !== undefined) headers.set("authorization", `Bearer ${token}`);
      return fetch(`${gw.url}${path}`, { ...init, headers, client });
    };
    const status = async (res: Response): Promise<number> => {
      await res.body?.cancel();
      return res.status;
    };
    const execute = (token: string | undefined) =>
      call("/v1/models/echo/execute", token, {
        method: "POST",
        body: '{"hello":"tls"}',
      });

    // Inference: either token of the rotation, and the management token.
    for (const token of [TOKEN, NEW_TOKEN, MANAGE]) {
      const res = await execute(token);
      assert.equal(res.status, 200, token);
      assert.deepEqual(await res.json(), { hello: "tls" });
    }
    // A third token, a prefix of one, none: 401.
    for (
      const token of ["inference-token-other-00000", TOKEN.slice(0, -1), ""]
    ) {
      assert.equal(await status(await execute(token)), 401, token);
    }
    assert.equal(await status(await execute(undefined)), 401);

    // HTTP/2, negotiated by ALPN.
    {
      using h2 = Deno.createHttpClient({
        caCerts: [tls.pem],
        http1: false,
        http2: true,
      });
      const res = await fetch(`${gw.url}/v1/models/echo/execute`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}` },
        body: '{"over":"h2"}',
        client: h2,
      });
      assert.deepEqual(await res.json(), { over: "h2" });
    }
    // A stream over TLS.
    const stream = await call("/v1/models/echo/stream", TOKEN, {
      method: "POST",
      body: '{"a":1}',
    });
    assert.equal(stream.status, 200);
    const events = await new SseReader(stream.body!).all();
    assert.deepEqual(events.map((e) => e.event), ["item", "end"]);

    // Eval and management: the management token only; the inference
    // tokens get 403 naming the right one (never its value).
    const evalCall = (token: string) =>
      call("/v1/eval", token, { method: "POST", body: '{"code":"1 + 1"}' });
    for (const token of [TOKEN, NEW_TOKEN]) {
      const res = await evalCall(token);
      assert.equal(res.status, 403);
      const body = await res.json();
      assert.equal(body.error.type, "ForbiddenToken");
      assert.match(body.error.message, /--manage-token/);
      assert.ok(!body.error.message.includes(MANAGE));
    }
    const ran = await evalCall(MANAGE);
    assert.equal(ran.status, 200);
    const evalEvents = await new SseReader(ran.body!).all();
    assert.deepEqual(evalEvents.at(-1), {
      event: "result",
      data: { value: 2 },
    });
    const manageCalls: Array<[string, string, string?]> = [
      ["PUT", "/v1/models/echo2", JSON.stringify({ file: "echo.py" })],
      ["PUT", "/v1/workers", JSON.stringify({ count: 1 })],
      ["POST", "/v2/repository/index", "{}"],
      ["POST", "/v2/repository/models/echo2/unload", "{}"],
      ["DELETE", "/v1/models/echo2"],
      // Percent-encoded, the router decodes it to the same route.
      ["POST", "/v2/%72epository/index", "{}"],
    ];
    for (const [method, path, body] of manageCalls) {
      const init = { method, ...(body === undefined ? {} : { body }) };
      assert.equal(await status(await call(path, TOKEN, init)), 403, path);
      assert.equal(await status(await call(path, undefined, init)), 401, path);
    }
    for (const [method, path, body] of manageCalls) {
      const init = { method, ...(body === undefined ? {} : { body }) };
      const res = await call(path, MANAGE, init);
      const text = await res.text();
      // Past authentication (the unload made the DELETE a 404).
      assert.ok(
        res.status !== 401 && res.status !== 403,
        `${method} ${path}: ${res.status} ${text}`,
      );
      if (method === "PUT") assert.ok(res.status < 300, `${path}: ${text}`);
    }
    // Reading routes take the inference token.
    assert.equal(await status(await call("/v1/status", TOKEN)), 200);
    assert.equal(await status(await call("/v2/models/echo", NEW_TOKEN)), 200);

    // The dashboard: ?token= takes the inference token, never the
    // management one (a URL lands in history and logs).
    assert.equal(await status(await call(`/?token=${TOKEN}`, undefined)), 200);
    const dash = await call(`/?token=${MANAGE}`, undefined);
    assert.equal(dash.status, 403);
    assert.match((await dash.json()).error.message, /not accepted as \?token=/);

    // A channel subscription over wss, authenticated by subprotocol.
    const ws = new WebSocket(
      `${gw.url.replace("https:", "wss:")}/v1/channels/news`,
      { protocols: ["pyproxy.v1", `pyproxy.bearer.${TOKEN}`], client },
    );
    const opened = Promise.withResolvers<void>();
    const message = Promise.withResolvers<unknown>();
    const closed = Promise.withResolvers<void>();
    ws.onopen = () => opened.resolve();
    ws.onerror = () => opened.reject(new Error("wss handshake failed"));
    ws.onmessage = (e) => message.resolve(JSON.parse(e.data));
    ws.onclose = () => closed.resolve();
    try {
      await opened.promise;
      assert.equal(ws.protocol, "pyproxy.v1");
      const published = await call("/v1/channels/news", TOKEN, {
        method: "POST",
        body: '{"headline":"tls"}',
      });
      assert.equal(await status(published), 200);
      const got = await message.promise as { data: unknown };
      assert.deepEqual(got.data, { headline: "tls" });
    } finally {
      ws.close();
      await closed.promise;
    }
  });
});

Deno.test({
  name: "serve over TLS survives a plain-HTTP client on its port",
  ignore: !HAS_OPENSSL,
}, async () => {
  await withTempDir(async (dir) => {
    const tls = await selfSignedCert(dir);
    await using gw = await startGateway({
      tls: { cert: tls.cert, key: tls.key },
      token: TOKEN,
    });
    // Plain HTTP to the TLS port: the handshake fails, the connection ends.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: gw.port });
    await conn.write(
      new TextEncoder().encode(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
      ),
    );
    const buffer = new Uint8Array(1024);
    // Ends (EOF or a reset); a hang would time the test out.
    await conn.read(buffer).catch(() => null);
    conn.close();
    using client = Deno.createHttpClient({ caCerts: [tls.pem] });
    const res = await fetch(`${gw.url}/healthz`, { client });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  });
});

Deno.test({
  name:
    "serve takes the key and the certificate in one PEM file, in either order, as either option",
  ignore: !HAS_OPENSSL,
}, async () => {
  await withTempDir(async (dir) => {
    const tls = await selfSignedCert(dir);
    const key = await Deno.readTextFile(tls.key);
    // HAProxy's form (the key first), and the certificate first.
    await Deno.writeTextFile(`${dir}/key-first.pem`, key + tls.pem);
    await Deno.writeTextFile(`${dir}/cert-first.pem`, tls.pem + key);
    for (const file of ["key-first.pem", "cert-first.pem"]) {
      await using gw = await startGateway({
        tls: { cert: `${dir}/${file}`, key: `${dir}/${file}` },
        token: TOKEN,
      });
      using client = Deno.createHttpClient({ caCerts: [tls.pem] });
      const res = await fetch(`${gw.url}/healthz`, { client });
      assert.equal(res.status, 200, file);
      await res.body?.cancel();
    }
  });
});

Deno.test({
  name:
    "serve refuses TLS files that are missing, not PEM, or not a pair, naming the option",
  ignore: !HAS_OPENSSL,
}, async () => {
  await withTempDir(async (dir) => {
    const a = await selfSignedCert(dir, "a");
    const b = await selfSignedCert(dir, "b");
    await Deno.writeTextFile(`${dir}/junk.pem`, "not a certificate\n");
    // The key with a passphrase: PKCS#8, and the traditional (PEM) form.
    const encrypt = async (args: string[]) => {
      const out = await new Deno.Command("openssl", {
        args: [...args, "-in", a.key, "-aes256", "-passout", "pass:pw"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      return new TextDecoder().decode(out.stdout);
    };
    await Deno.writeTextFile(`${dir}/p8.key`, await encrypt(["pkey"]));
    await Deno.writeTextFile(`${dir}/pem.key`, await encrypt(["ec"]));
    // A chain file in the wrong order: the key's certificate second.
    await Deno.writeTextFile(`${dir}/order.crt`, b.pem + a.pem);
    const cases: Array<[{ cert: string; key: string }, RegExp]> = [
      [{ cert: `${dir}/missing.crt`, key: a.key }, /^tls\.cert: cannot read/],
      [{ cert: a.cert, key: `${dir}/missing.key` }, /^tls\.key: cannot read/],
      [{ cert: `${dir}/junk.pem`, key: a.key }, /^tls\.cert: .* not a PEM/],
      [{ cert: a.cert, key: `${dir}/junk.pem` }, /^tls\.key: .* not a PEM/],
      [{ cert: a.cert, key: b.key }, /^tls\.key: .* not the private key/],
      [
        { cert: a.cert, key: `${dir}/p8.key` },
        /^tls\.key: .*p8\.key is encrypted \(a passphrase\).*openssl pkey/,
      ],
      [
        { cert: a.cert, key: `${dir}/pem.key` },
        /^tls\.key: .*pem\.key is encrypted \(a passphrase\).*openssl pkey/,
      ],
      [
        { cert: `${dir}/order.crt`, key: a.key },
        /^tls\.key: .*a\.key is the private key of certificate 2 of .*order\.crt, not of the first: the server's certificate comes first/,
      ],
    ];
    for (const [tls, message] of cases) {
      const config = resolveConfig({
        cwd: dir,
        cli: { port: 0, workers: 1, modelsDir: dir, tls },
      });
      await assert.rejects(serve(config), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, message);
        assert.match(err.message, /--tls-(cert|key)/);
        return true;
      });
    }
  });
});

Deno.test({
  name:
    "the gRPC port off loopback with a token: no warning over the gateway's TLS, a clear-text warning without it",
  ignore: !HAS_OPENSSL,
}, async () => {
  await withTempDir(async (dir) => {
    const tls = await selfSignedCert(dir);
    const warningsOf = (
      records: readonly { level: string; message: readonly unknown[] }[],
    ) =>
      records.filter((r) => r.level === "warning").map((r) =>
        r.message.map((m) => typeof m === "string" ? m : JSON.stringify(m))
          .join("")
      );
    await withLogs(async (records) => {
      // Bound off loopback (0.0.0.0); nothing but this test connects.
      await using gw = await startGateway({
        host: "0.0.0.0",
        tls: { cert: tls.cert, key: tls.key },
        token: TOKEN,
        grpc: { hostname: "0.0.0.0", port: 0 },
      });
      assert.ok(gw.grpcTarget !== undefined);
      // HTTPS on the HTTP port and TLS on the gRPC port: no warning.
      const warnings = warningsOf(records);
      assert.ok(
        !warnings.some((w) => /clear text/.test(w)),
        JSON.stringify(warnings),
      );
    }, "info");
    await withLogs(async (records) => {
      // The HTTP port on loopback, the gRPC port off it, no TLS: its h2c
      // carries the token in clear text (found by chaos22).
      await using gw = await startGateway({
        token: TOKEN,
        grpc: { hostname: "0.0.0.0", port: 0 },
      });
      assert.ok(gw.grpcTarget !== undefined);
      const warnings = warningsOf(records);
      assert.ok(!warnings.some((w) => w.startsWith("Serving plain HTTP")));
      assert.ok(
        warnings.some((w) =>
          /^Serving gRPC in plain text \(h2c\) on 0\.0\.0\.0: the bearer token travels in clear text/
            .test(w)
        ),
        JSON.stringify(warnings),
      );
    }, "info");
  });
});

Deno.test("resolveConfig checks the tokens: a list for rotation, the management token apart", async () => {
  const config = (file: Record<string, unknown>, env?: string) =>
    withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/pyproxy.json`, JSON.stringify(file));
      const runtime = (await import("../src/runtime/mod.ts")).defaultRuntime();
      return await loadConfig({
        path: `${dir}/pyproxy.json`,
        runtime: {
          ...runtime,
          env: (name) => name === "PYPROXY_MANAGE_TOKEN" ? env : undefined,
        },
      });
    });
  const ok = await config({ token: [TOKEN, NEW_TOKEN], manageToken: MANAGE });
  assert.deepEqual(ok.token, [TOKEN, NEW_TOKEN]);
  assert.equal(ok.manageToken, MANAGE);
  const fromEnv = await config({ token: TOKEN }, MANAGE);
  assert.equal(fromEnv.manageToken, MANAGE);
  const refused: Array<[Record<string, unknown>, RegExp, string?]> = [
    [{ token: [] }, /token: .*at least one token/],
    [{ token: [TOKEN, TOKEN] }, /token: .*listed twice/],
    [
      { token: Array.from({ length: 1025 }, (_, i) => `${TOKEN}-${i}`) },
      /at most 1024/,
    ],
    [{ token: [TOKEN, "short"] }, /at least 16 characters/],
    [{ token: TOKEN, manageToken: TOKEN }, /manageToken: must differ/],
    [
      { token: [NEW_TOKEN, TOKEN], manageToken: [MANAGE, TOKEN] },
      /manageToken: must differ/,
    ],
    [{ token: TOKEN }, /manageToken: expected a token of at least 16/, "short"],
  ];
  for (const [file, message, env] of refused) {
    await assert.rejects(config(file, env), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, message);
      return true;
    }, JSON.stringify(file));
  }
  // Nor may models read the tokens from a forwarded Authorization.
  assert.throws(
    () =>
      resolveConfig({
        cwd: "/srv",
        cli: { manageToken: MANAGE, forwardHeaders: ["Authorization"] },
      }),
    /forwardHeaders: "authorization" cannot be forwarded/,
  );
  // A management token without an inference token: one is generated.
  const generated = resolveConfig({
    cwd: "/srv",
    cli: { manageToken: MANAGE },
  });
  assert.equal(generated.tokenGenerated, true);
  assert.equal(typeof generated.token, "string");
  assert.notEqual(generated.token, MANAGE);
});

Deno.test({
  name:
    "serve over TLS serves gRPC over TLS too: a secure channel trusting the certificate calls it, an insecure one does not",
  ignore: !HAS_OPENSSL,
}, async () => {
  await withTempDir(async (dir) => {
    const tls = await selfSignedCert(dir);
    await using gw = await startGateway({
      tls: { cert: tls.cert, key: tls.key },
      token: TOKEN,
      grpc: { port: 0, hostname: "127.0.0.1" },
    });
    // By name: Deno's node:tls takes no IP address as the server name (the
    // certificate names localhost too).
    const target = gw.grpcTarget!.replace(/^127\.0\.0\.1:/, "localhost:");
    {
      using secure = new InferenceClient(target, TOKEN, tls.pem);
      const live = await secure.call("ServerLive", {});
      assert.equal(live.error, undefined, live.error?.details);
      assert.deepEqual(live.response, { live: true });
      const ready = await secure.call("ServerReady", {});
      assert.deepEqual(ready.response, { ready: true });
      // The token is still asked for, over TLS as in clear.
      const refused = await secure.call("ServerMetadata", {}, { token: null });
      assert.equal(refused.error?.code, 16); // UNAUTHENTICATED
    }
    {
      // A plain-text (h2c) client gets no answer from a TLS port.
      using plain = new InferenceClient(target, TOKEN);
      const res = await plain.call("ServerLive", {}, { deadlineMs: 3000 });
      assert.notEqual(res.error, undefined);
      assert.equal(res.response, undefined);
    }
  });
});
