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
import { tempDir } from "./_harness.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

const READER = new URL("./fixtures/h2_paused_reader.ts", import.meta.url)
  .pathname;
const SIZE = 2 * 1024 * 1024;
const BIG_PY = `class Big:
    def execute(self, msg):
        return "x" * msg["size"]
`;

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
function startReader(url: string, ca: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", READER, url, ca, JSON.stringify({ size: SIZE })],
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
): Promise<{ result: { bytes: number; end: boolean }; ended: unknown }> {
  const headers = await reader.line();
  assert.equal(headers, `HEADERS 200 ${SIZE + 2}`);
  const announced = shutdowns.getReader();
  const ended = begin();
  // The HTTP server's shutdown was called: without the wait, it has cut
  // the answer (at most the client's window sent) by now.
  await announced.read();
  announced.releaseLock();
  await reader.go();
  const result = JSON.parse((await reader.line()).replace(/^RESULT /, ""));
  return { result, ended: await ended };
}

Deno.test({
  name:
    "serve's drain: a large answer an HTTP/2 client reads only after the drain began reaches it whole",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-h2-delivery-");
  const { load } = await setUp(dir.path);
  const { runtime, shutdowns } = announcingRuntime();
  const server = await serve(await load(), { runtime });
  const reader = startReader(
    `${server.url}/v1/models/big/execute`,
    `${dir.path}/tls.crt`,
  );
  try {
    const { result } = await readAfter(
      reader,
      shutdowns,
      () => server.shutdown(),
    );
    assert.deepEqual(
      { bytes: result.bytes, end: result.end },
      { bytes: SIZE + 2, end: true },
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
    const { result, ended } = await readAfter(reader, shutdowns, async () => {
      await Deno.copyFile(next.cert, first.cert);
      await Deno.copyFile(next.key, `${dir.path}/tls.key`);
      return await server.reload();
    });
    assert.match(
      (ended as { changed: string[] }).changed[0]!,
      /^tls \(CN=localhost/,
    );
    assert.deepEqual(
      { bytes: result.bytes, end: result.end },
      { bytes: SIZE + 2, end: true },
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
