// Reading request bodies under Bun.serve: a body with a Content-Length is
// read whole by the runtime (`request.bytes()`), not chunk by chunk through
// its stream (~40% fewer requests/s on Bun: docs/performance.md), and a
// body that stalls still gets its 408.
import { expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import { bunRuntime, resolveConfig, serve } from "../../mod.ts";
import { readJsonBody } from "../../src/gateway/read_json_body.ts";
import { ECHO_MODEL } from "./_helpers.ts";

test("readJsonBody on Bun reads a declared body with request.bytes(), keeping a byte order mark", async () => {
  const runtime = bunRuntime();
  expect(runtime.jsonDropsBom).toBe(true);
  const read = async (body: Uint8Array) => {
    const request = new Request("http://localhost/", {
      method: "POST",
      headers: { "content-length": String(body.byteLength) },
      body,
    });
    let streamed = false;
    const body0 = request.body!;
    const getReader = body0.getReader.bind(body0);
    body0.getReader = ((...args: []) => {
      streamed = true;
      return getReader(...args);
    }) as typeof body0.getReader;
    const value = await readJsonBody(request, 1024, undefined, runtime).then(
      (v) => ({ v }),
      (err: { status?: number }) => ({ status: err.status }),
    );
    return { value, streamed };
  };
  const json = new TextEncoder().encode('{"id":18446744073709551617}');
  const got = await read(json);
  expect(got.streamed).toBe(false);
  expect(got.value).toEqual({ v: { id: 18446744073709551617n } });
  const bom = await read(new Uint8Array([0xef, 0xbb, 0xbf, ...json]));
  expect(bom).toEqual({ value: { status: 400 }, streamed: false });
});

/** Sends `head` and the start of a body on a raw connection; resolves its whole answer once the server closes it. */
function partial(port: number, head: string, halfClose: boolean) {
  const sock = connect(port, "127.0.0.1");
  let text = "";
  sock.on("data", (d) => (text += d.toString("latin1")));
  const closed = new Promise<string>((resolve) => {
    sock.on("close", () => resolve(text));
    sock.on("error", () => {});
  });
  sock.on("connect", () => {
    sock.write(head);
    if (halfClose) sock.end();
  });
  return { closed, sock };
}

test(
  "serve() on Bun answers 408 to a declared body that stalls and closes one cut short, holding nothing",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-body-"));
    try {
      await writeFile(join(dir, "echo.py"), ECHO_MODEL);
      const config = resolveConfig({
        cwd: dir,
        cli: {
          port: 0,
          workers: 1,
          modelsDir: dir,
          limits: { requestTimeout: 1000 },
        },
      });
      const server = await serve(config);
      const port = server.port;
      const head =
        `POST /v1/models/echo/execute HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":`;
      const stalled = partial(port, head, false);
      const cut = partial(port, head, true);
      try {
        const [late, short] = await Promise.all([stalled.closed, cut.closed]);
        expect(late).toStartWith("HTTP/1.1 408");
        expect(late).toContain('"type":"RequestTimeout"');
        // Bun closes a connection whose client ended its half before the
        // declared length without letting an answer out (Deno answers 400
        // IncompleteBody): docs/runtimes.md.
        expect(short).toBe("");
        const status = await (await fetch(`${server.url}/v1/status`)).json();
        expect(status.gateway.inFlight).toBe(0);
      } finally {
        stalled.sock.destroy();
        cut.sock.destroy();
        await server.shutdown();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test("readJsonBody on Bun refuses an integer over maxIntegerDigits before making a BigInt, and keeps a bare one exact", async () => {
  const runtime = bunRuntime();
  const read = (text: string) => {
    const body = new TextEncoder().encode(text);
    const request = new Request("http://localhost/", {
      method: "POST",
      headers: { "content-length": String(body.byteLength) },
      body,
    });
    return readJsonBody(request, 1 << 20, undefined, runtime, 4300).then(
      (v) => ({ v }),
      async (err: { status?: number; getResponse?: () => Response }) => ({
        status: err.status,
        error: (await err.getResponse?.().json())?.error,
      }),
    );
  };
  const refused = await read(`{"x":[-1${"0".repeat(4300)}]}`);
  expect(refused.status).toBe(400);
  expect((refused as { error: unknown }).error).toEqual({
    type: "InvalidRequestError",
    message:
      "Cannot read request: an integer of 4301 digits is over the limit of 4300 (the gateway's limits.maxIntegerDigits, serve --max-integer-digits)",
    digits: 4301,
    limit: 4300,
  });
  expect(await read(`{"x":${"9".repeat(4300)}}`)).toEqual({
    v: { x: BigInt("9".repeat(4300)) },
  });
  expect(await read(" 18446744073709551617")).toEqual({
    v: 18446744073709551617n,
  });
});

test("readJsonBody on Bun refuses a body nested deeper than maxJsonDepth before parsing it, whatever its depth", async () => {
  const runtime = bunRuntime();
  const read = (text: string, maxJsonDepth: number) => {
    const body = new TextEncoder().encode(text);
    const request = new Request("http://localhost/", {
      method: "POST",
      headers: { "content-length": String(body.byteLength) },
      body,
    });
    return readJsonBody(
      request,
      8 << 20,
      undefined,
      runtime,
      4300,
      maxJsonDepth,
    ).then(
      (v) => ({ v }),
      async (err: { status?: number; getResponse?: () => Response }) => ({
        status: err.status,
        error: (await err.getResponse?.().json())?.error,
      }),
    );
  };
  for (const depth of [801, 200_000]) {
    const deep = "[".repeat(depth) + "18446744073709551617" + "]".repeat(depth);
    expect(await read(deep, 800)).toEqual({
      status: 400,
      error: {
        type: "InvalidRequestError",
        message:
          `Cannot read request: the body is nested ${depth} levels deep, over the limit of 800 (the gateway's limits.maxJsonDepth, serve --max-json-depth)`,
        depth,
        limit: 800,
      },
    });
  }
  // Past the 1000 levels read exactly, with the limit raised.
  const exact = await read(
    "[".repeat(5000) + "18446744073709551617" + "]".repeat(5000),
    10_000,
  );
  expect((exact as { error: { depth: number; limit: number } }).error)
    .toMatchObject({ type: "InvalidRequestError", depth: 5000, limit: 1000 });
  let v = (await read(
    "[".repeat(800) + "18446744073709551617" +
      "]".repeat(800),
    800,
  ) as { v: unknown }).v;
  while (Array.isArray(v)) v = v[0];
  expect(v).toBe(18446744073709551617n);
});

/** Sends `parts` as separate writes on a raw connection, then half-closes it; resolves the server's answer once it closes. */
function written(port: number, parts: Array<string | Uint8Array>) {
  const sock = connect(port, "127.0.0.1");
  sock.setNoDelay(true);
  let text = "";
  sock.on("data", (d) => (text += d.toString("latin1")));
  const closed = new Promise<string>((resolve) => {
    sock.on("close", () => resolve(text));
    sock.on("error", () => {});
  });
  sock.on("connect", async () => {
    for (const part of parts) {
      await new Promise<void>((resolve) => sock.write(part, () => resolve()));
      // Separate reads on the server are likely, not certain: nothing to await.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // No end(): the answer closes the connection (`Connection: close`). A
    // half-close right after the body could reach Bun before the answer was
    // written (under load), and Bun then closes without one (an empty answer).
  });
  return { closed, sock };
}

test(
  "serve() on Bun refuses a body after a byte order mark however its writes are cut, and an overlong integer in a chunked body",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-body-"));
    try {
      await writeFile(join(dir, "echo.py"), ECHO_MODEL);
      const config = resolveConfig({
        cwd: dir,
        cli: { port: 0, workers: 1, modelsDir: dir },
      });
      const server = await serve(config);
      const port = server.port;
      const head = (fields: string) =>
        `POST /v1/models/echo/execute HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nConnection: close\r\n${fields}\r\n`;
      const mark = [0xef, 0xbb, 0xbf];
      const bytes = (...b: number[]) => new Uint8Array(b);
      const sends: Array<Array<string | Uint8Array>> = [
        // the body after its headers; the mark alone, then split in two
        [head("Content-Length: 5\r\n"), bytes(...mark), "{}"],
        [head("Content-Length: 5\r\n"), bytes(0xef), bytes(0xbb, 0xbf), "{}"],
        [
          head("Content-Length: 5\r\nExpect: 100-continue\r\n"),
          bytes(...mark, 0x7b, 0x7d),
        ],
        // chunked, the mark across two chunks
        [
          head("Transfer-Encoding: chunked\r\n"),
          "1\r\n",
          bytes(0xef),
          "\r\n4\r\n",
          bytes(0xbb, 0xbf),
          "{}\r\n0\r\n\r\n",
        ],
      ];
      const socks: Array<{ destroy(): void }> = [];
      try {
        for (const parts of sends) {
          const sent = written(port, parts);
          socks.push(sent.sock);
          const answer = (await sent.closed).replace(
            /^HTTP\/1\.1 100 Continue\r\n\r\n/,
            "",
          );
          expect(answer).toStartWith("HTTP/1.1 400");
          expect(answer).toContain('"type":"InvalidJson"');
          expect(answer).toContain("byte order mark");
        }
        // An integer over maxIntegerDigits, its digits across chunks.
        const digits = "7".repeat(4301);
        const encoder = new TextEncoder();
        const res = await fetch(`${server.url}/v1/models/echo/execute`, {
          method: "POST",
          headers: { "x-request-id": "bun-digits" },
          body: new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(encoder.encode('{"n":'));
              controller.enqueue(encoder.encode(digits.slice(0, 2000)));
              controller.enqueue(encoder.encode(digits.slice(2000) + "}"));
              controller.close();
            },
          }),
          duplex: "half",
        } as RequestInit);
        expect(res.status).toBe(400);
        expect(res.headers.get("x-request-id")).toBe("bun-digits");
        expect((await res.json()).error).toEqual({
          type: "InvalidRequestError",
          message:
            "Cannot read request: an integer of 4301 digits is over the limit of 4300 (the gateway's limits.maxIntegerDigits, serve --max-integer-digits)",
          digits: 4301,
          limit: 4300,
          requestId: "bun-digits",
        });
        // A bare big integer, chunked, is kept exact.
        const bare = await fetch(`${server.url}/v1/channels/bare`, {
          method: "POST",
          body: new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(encoder.encode("1844674407"));
              controller.enqueue(encoder.encode("3709551617"));
              controller.close();
            },
          }),
          duplex: "half",
        } as RequestInit);
        expect(bare.status).toBe(200);
        await bare.body?.cancel();
        const list = await fetch(`${server.url}/v1/channels?history=1`);
        expect(await list.text()).toContain('"data":18446744073709551617}');
      } finally {
        for (const sock of socks) sock.destroy();
        await server.shutdown();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);
