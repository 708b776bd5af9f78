/**
 * Large answers over HTTP/2 (TLS, Deno) are delivered whole when the HTTP
 * server shuts down under them: at the drain, and when a reload's new
 * certificate replaces the listener. `Deno.serve`'s shutdown ends an HTTP/2
 * stream whose body is not all sent, the rest lost (a 10 MiB answer reached
 * a slow node:http2 client as 80 KB); the server now waits for the large
 * answers' delivery first. Real `serve`, real TLS, a real client in a
 * process of its own that holds its flow-control window shut until the
 * shutdown has begun.
 */
import assert from "node:assert/strict";
import { loadConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { denoRuntime } from "../src/runtime/deno.ts";
import type { HttpServer, Runtime } from "../src/runtime/types.ts";
import { tempDir, waitFor } from "./_harness.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

const READER = new URL("./fixtures/h2_paused_reader.ts", import.meta.url)
  .pathname;
const SIZE = 2 * 1024 * 1024;
const BIG_PY = `class Big:
    def execute(self, msg):
        if isinstance(msg, dict) and "size" in msg:
            return msg.get("char", "x") * msg["size"]
        # /v2 infer, :predict: a tensor of 1.2 MB as JSON.
        return {"y": [1.5] * 300000}
`;
const EXECUTE = JSON.stringify({ size: SIZE });

/**
 * The Deno runtime, with each HTTP server's `shutdown()` calls announced
 * (as they start) through `shutdowns`.
 */
function announcingRuntime(): {
  runtime: Runtime;
  shutdowns: ReadableStream<number>;
} {
  const inner = denoRuntime();
  let announce!: (port: number) => void;
  const shutdowns = new ReadableStream<number>({
    start(controller) {
      announce = (port) => controller.enqueue(port);
    },
  });
  const runtime: Runtime = {
    ...inner,
    async serve(options, handler): Promise<HttpServer> {
      const server = await inner.serve(options, handler);
      return {
        ...server,
        shutdown(shutdownOptions) {
          announce(server.port);
          return server.shutdown(shutdownOptions);
        },
      };
    },
  };
  return { runtime, shutdowns };
}

/** The paused reader's process, its stdout's lines. */
function startReader(url: string, ca: string, body = EXECUTE) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", READER, url, ca, body],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  let buffered = "";
  const line = async (): Promise<string> => {
    while (!buffered.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) {
        // Cut: its stream reset, the reader may end without a word.
        const { code, signal } = await child.status;
        throw new Error(
          `the reader ended without a result (code ${code}, signal ${signal}): ${
            JSON.stringify(buffered)
          }`,
        );
      }
      buffered += value;
    }
    const at = buffered.indexOf("\n");
    const got = buffered.slice(0, at);
    buffered = buffered.slice(at + 1);
    return got;
  };
  const go = async (): Promise<void> => {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode("go\n"));
    await writer.close();
  };
  return { child, line, go, lines };
}

async function setUp(dir: string) {
  await Deno.mkdir(`${dir}/models`);
  await Deno.writeTextFile(`${dir}/models/big.py`, BIG_PY);
  const first = await selfSignedCert(dir, "tls");
  await Deno.writeTextFile(
    `${dir}/pyproxy.json`,
    JSON.stringify({
      modelsDir: "models",
      tls: { cert: "tls.crt", key: "tls.key" },
      // No poll: the test's reload switches the certificate.
      tlsFileInterval: 0,
      limits: { shutdownGrace: 30_000 },
    }),
  );
  const load = () =>
    loadConfig({
      path: `${dir}/pyproxy.json`,
      cli: { port: 0, workers: 1 },
    });
  return { first, load };
}

/** What the reader got, once told to read after the shutdown began. */
async function readAfter(
  reader: ReturnType<typeof startReader>,
  shutdowns: ReadableStream<number>,
  begin: () => Promise<unknown>,
  orWhen?: () => Promise<unknown>,
  minLength = 1_000_000,
): Promise<{
  result: { bytes: number; end: boolean };
  length: number;
  ended: unknown;
}> {
  const headers = await reader.line();
  const [, status, length] = headers.split(" ");
  assert.equal(status, "200", headers);
  assert.ok(Number(length) > minLength, headers);
  const announced = shutdowns.getReader();
  const ended = begin();
  // The HTTP server's shutdown was called: without the wait, it has cut
  // the answer (at most the client's window sent) by now. (`orWhen`: a
  // route whose answer the drain holds before it gets there.)
  await Promise.race([announced.read(), ...(orWhen ? [orWhen()] : [])]);
  announced.releaseLock();
  await reader.go();
  const result = JSON.parse((await reader.line()).replace(/^RESULT /, ""));
  return { result, length: Number(length), ended: await ended };
}

/** The drain with a large answer of `path` (to `body`) read after it began. */
async function drainCase(
  path: string,
  body: string,
  minLength?: number,
): Promise<void> {
  await using dir = await tempDir("pyproxy-h2-delivery-");
  const { load } = await setUp(dir.path);
  const { runtime, shutdowns } = announcingRuntime();
  const server = await serve(await load(), { runtime });
  using client = Deno.createHttpClient({
    caCerts: [await Deno.readTextFile(`${dir.path}/tls.crt`)],
  });
  const status = await (await fetch(`${server.url}/v1/status`, { client }))
    .json();
  const pids: number[] = status.workers.map((w: { pid: number }) => w.pid);
  const reader = startReader(
    `${server.url}${path}`,
    `${dir.path}/tls.crt`,
    body,
  );
  try {
    const { result, length } = await readAfter(
      reader,
      shutdowns,
      () => server.shutdown(),
      // The routes other than execute's fast path: the drain holds their
      // answers until delivered before it shuts the server down (the
      // workers are stopped by then; the answer cut just after, without
      // the wait).
      () =>
        waitFor(async () => {
          for (const pid of pids) {
            if (await Deno.stat(`/proc/${pid}`).then(() => true, () => false)) {
              return false;
            }
          }
          return true;
        }, { interval: 5 }),
      minLength,
    );
    assert.deepEqual(
      { bytes: result.bytes, end: result.end },
      { bytes: length, end: true },
      path,
    );
  } finally {
    try {
      reader.child.kill("SIGKILL");
    } catch {
      // exited
    }
    await reader.child.status;
    await reader.lines.cancel().catch(() => {});
    await server.shutdown();
  }
}

Deno.test({
  name:
    "serve's drain: a large answer an HTTP/2 client reads only after the drain began reaches it whole",
  ignore: !HAS_OPENSSL,
}, async () => {
  await drainCase("/v1/models/big/execute", EXECUTE);
});

Deno.test({
  name: "serve's drain: so do the large answers of /v2 infer and :predict",
  ignore: !HAS_OPENSSL,
}, async () => {
  await drainCase(
    "/v2/models/big/infer",
    JSON.stringify({
      inputs: [{ name: "x", shape: [1], datatype: "FP32", data: [1] }],
    }),
  );
  await drainCase("/v1/models/big:predict", JSON.stringify({ instances: [1] }));
});

Deno.test({
  name:
    "serve's drain: a large answer of fewer characters than bytes (65,000 '€', 195 KB in UTF-8) reaches its HTTP/2 client whole",
  ignore: !HAS_OPENSSL,
}, async () => {
  // Under 64 Ki characters: its size was taken from its length, and it
  // went untracked, cut by the shutdown (the reader got no end, 2 runs in 2).
  await drainCase(
    "/v1/models/big/execute",
    JSON.stringify({ size: 65_000, char: "\u20ac" }),
    190_000,
  );
});

Deno.test({
  name:
    "a reload's new certificate: a large answer an HTTP/2 client reads only after the old listener's shutdown began reaches it whole",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-h2-delivery-");
  const { first, load } = await setUp(dir.path);
  const { runtime, shutdowns } = announcingRuntime();
  const server = await serve(await load(), { runtime, reloadConfig: load });
  // The old certificate trusted: the reader's connection was made with it.
  const ca = `${dir.path}/old-ca.pem`;
  await Deno.writeTextFile(ca, first.pem);
  const reader = startReader(`${server.url}/v1/models/big/execute`, ca);
  try {
    const next = await selfSignedCert(dir.path, "next");
    const { result, length, ended } = await readAfter(
      reader,
      shutdowns,
      async () => {
        await Deno.copyFile(next.cert, first.cert);
        await Deno.copyFile(next.key, `${dir.path}/tls.key`);
        return await server.reload();
      },
    );
    assert.match(
      (ended as { changed: string[] }).changed[0]!,
      /^tls \(CN=localhost/,
    );
    assert.deepEqual(
      { bytes: result.bytes, end: result.end },
      { bytes: length, end: true },
    );
  } finally {
    try {
      reader.child.kill("SIGKILL");
    } catch {
      // exited
    }
    await reader.child.status;
    await reader.lines.cancel().catch(() => {});
    await server.shutdown();
  }
});
