// The HTTP gateway under Bun (Bun.serve through the runtime adapter).
import { expect, test } from "bun:test";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { connect } from "node:net";
import { resolveConfig, serve } from "../../mod.ts";
import { ECHO_MODEL, waitGone, withGateway } from "./_helpers.ts";

/** Runs `run` against a gateway serving `echo.py` from a temporary directory, then shuts it down and removes the directory. */
function withEchoGateway(
  run: (server: Awaited<ReturnType<typeof serve>>) => Promise<void>,
): Promise<void> {
  return withGateway({ "echo.py": ECHO_MODEL }, {}, run);
}

test(
  "serve() answers /healthz and executes a model over HTTP on Bun",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-gw-"));
    let pids: number[] = [];
    try {
      await writeFile(join(dir, "echo.py"), ECHO_MODEL);
      const config = resolveConfig({
        cwd: dir,
        cli: { port: 0, workers: 1, modelsDir: dir },
      });
      const server = await serve(config);
      try {
        pids = server.pool.status().workers.map((w) => w.pid as number);
        expect(server.port).toBeGreaterThan(0);
        const health = await fetch(`${server.url}/healthz`);
        expect(health.status).toBe(200);
        await health.body?.cancel();
        const res = await fetch(`${server.url}/v1/models/echo/execute`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ hello: "bun" }),
        });
        expect(res.status).toBe(200);
        const body = await res.json() as Record<string, unknown>;
        expect(JSON.stringify(body)).toContain('"hello":"bun"');
      } finally {
        await server.shutdown();
      }
      expect(await waitGone(pids)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test("serve() delivers channel messages over a WebSocket on Bun", async () => {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-gw-"));
  try {
    await writeFile(join(dir, "echo.py"), ECHO_MODEL);
    const config = resolveConfig({
      cwd: dir,
      cli: { port: 0, workers: 1, modelsDir: dir },
    });
    const server = await serve(config);
    try {
      const ws = new WebSocket(
        `${server.url.replace("http", "ws")}/v1/channels/news`,
      );
      const first = new Promise<Record<string, unknown>>((resolve, reject) => {
        ws.onmessage = (ev) => resolve(JSON.parse(String(ev.data)));
        ws.onerror = () => reject(new Error("WebSocket failed"));
      });
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onclose = () => reject(new Error("WebSocket closed before opening"));
      });
      const res = await fetch(`${server.url}/v1/channels/news`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ headline: "bun" }),
      });
      expect(res.status).toBe(200);
      await res.body?.cancel();
      const msg = await first;
      expect(msg.type).toBe("message");
      expect(msg.data).toEqual({ headline: "bun" });
      ws.close();
    } finally {
      await server.shutdown();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 30_000);

test(
  "serve() refuses JSON after a byte order mark on Bun too, declared or streamed",
  async () => {
    // Bun's request.json() drops the mark (as the Fetch standard says); Deno's
    // keeps it, and the gateway refuses such a body on both.
    await withEchoGateway(async (server) => {
      const bytes = new Uint8Array([0xef, 0xbb, 0xbf, ...Buffer.from("{}")]);
      const bodies: Array<() => BodyInit> = [
        () => bytes,
        () =>
          new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(bytes);
              controller.close();
            },
          }),
      ];
      for (const body of bodies) {
        const res = await fetch(`${server.url}/v1/models/echo/execute`, {
          method: "POST",
          body: body(),
        });
        const got = await res.json() as {
          error: { type: string; message: string };
        };
        expect(res.status).toBe(400);
        expect(got.error.type).toBe("InvalidJson");
        expect(got.error.message).toContain("byte order mark");
      }
    });
  },
  30_000,
);

test(
  "serve() on Bun: X-Request-Id is echoed and reaches the model; an error without one gets a made-up id",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-gw-"));
    try {
      await writeFile(
        join(dir, "tagger.py"),
        "from pyproxy import host\n\n\nclass Tagger:\n    def execute(self, msg):\n        return {'requestId': host.request_id()}\n",
      );
      const config = resolveConfig({
        cwd: dir,
        cli: { port: 0, workers: 1, modelsDir: dir },
      });
      const server = await serve(config);
      try {
        // The direct path and the router's (a query string).
        for (const path of ["execute", "execute?timeout=5000"]) {
          const res = await fetch(`${server.url}/v1/models/tagger/${path}`, {
            method: "POST",
            headers: { "x-request-id": "bun-req-1" },
            body: "{}",
          });
          expect(res.status).toBe(200);
          expect(res.headers.get("x-request-id")).toBe("bun-req-1");
          expect(await res.json()).toEqual({ requestId: "bun-req-1" });
        }
        const invalid = await fetch(`${server.url}/v1/models/tagger/execute`, {
          method: "POST",
          headers: { "x-request-id": "not valid" },
          body: "{}",
        });
        expect(invalid.headers.get("x-request-id")).toBeNull();
        expect(await invalid.json()).toEqual({ requestId: null });
        const missing = await fetch(`${server.url}/v1/models/nope/execute`, {
          method: "POST",
          body: "{}",
        });
        expect(missing.status).toBe(404);
        const { error } = await missing.json() as {
          error: { requestId: string };
        };
        expect(error.requestId).toMatch(/^[0-9a-f-]{36}$/);
        expect(missing.headers.get("x-request-id")).toBe(error.requestId);
      } finally {
        await server.shutdown();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test(
  "serve() answers a channel subscription at once on Bun, before any message",
  async () => {
    // Bun.serve sends a streamed response's headers with its first chunk: a
    // quiet channel's subscriber saw nothing until the 15 s keep-alive (this
    // test's timeout is shorter).
    await withEchoGateway(async (server) => {
      const ac = new AbortController();
      const res = await fetch(`${server.url}/v1/channels/quiet`, {
        signal: ac.signal,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toContain("text/event-stream");
      const published = await fetch(`${server.url}/v1/channels/quiet`, {
        method: "POST",
        body: JSON.stringify({ n: 1 }),
      });
      expect(await published.json()).toMatchObject({ delivered: 1 });
      const reader = res.body!.pipeThrough(new TextDecoderStream())
        .getReader();
      let text = "";
      while (!text.includes("data: {")) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      expect(text).toContain('data: {"n":1}');
      ac.abort();
      await reader.cancel().catch(() => {});
    });
  },
  10_000,
);

test(
  "serve() on Bun: a model stream's client that leaves before the first item cancels the model; the metrics count it 499",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-gw-"));
    try {
      await writeFile(
        join(dir, "thinker.py"),
        "import time\nclass Thinker:\n    def execute(self, msg):\n        while True:\n            time.sleep(0.01)\n        yield 'never'\n",
      );
      const config = resolveConfig({
        cwd: dir,
        cli: { port: 0, workers: 1, modelsDir: dir },
      });
      const server = await serve(config);
      try {
        const inFlight = async () =>
          (await (await fetch(`${server.url}/v1/status`)).json()).workers[0]
            .inFlight;
        const ac = new AbortController();
        const res = fetch(`${server.url}/v1/models/thinker/stream`, {
          method: "POST",
          body: "{}",
          signal: ac.signal,
        }).catch((e: Error) => e.name);
        while (await inFlight() !== 1) {
          await new Promise((r) => setTimeout(r, 20));
        }
        ac.abort();
        expect(await res).toBe("AbortError");
        const deadline = Date.now() + 10_000;
        while (await inFlight() !== 0) {
          if (Date.now() > deadline) throw new Error("the model still runs");
          await new Promise((r) => setTimeout(r, 20));
        }
        const metrics = await (await fetch(`${server.url}/metrics`)).text();
        expect(metrics).toContain(
          'pyproxy_requests_total{model="thinker",status="499"} 1',
        );
      } finally {
        await server.shutdown();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test(
  "serve() on Bun streams a model's items as SSE, cancels the model when the client leaves after an item, and bounds a PUT by loadTimeout",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-gw-"));
    try {
      await writeFile(
        join(dir, "tokens.py"),
        "class Tokens:\n    def execute(self, msg):\n        for w in msg['text'].split():\n            yield w\n",
      );
      await writeFile(
        join(dir, "talker.py"),
        "import time\nclass Talker:\n    def execute(self, msg):\n        yield 'hi'\n        while True:\n            time.sleep(0.01)\n        yield 'never'\n",
      );
      await writeFile(
        join(dir, "hang.py"),
        "import time\ntime.sleep(60)\nclass Hang:\n    def execute(self, msg):\n        return 1\n",
      );
      const config = resolveConfig({
        cwd: dir,
        cli: {
          port: 0,
          workers: 1,
          modelsDir: dir,
          models: [{ name: "tokens", file: "tokens.py" }, {
            name: "talker",
            file: "talker.py",
          }],
          allowManage: true,
          limits: { loadTimeout: 1000 },
        },
      });
      const server = await serve(config);
      // --allow-manage without a token gets a generated one (security.md).
      const headers = { authorization: `Bearer ${config.token}` };
      try {
        const res = await fetch(`${server.url}/v1/models/tokens/stream`, {
          method: "POST",
          headers,
          body: JSON.stringify({ text: "to be" }),
        });
        expect(res.status).toBe(200);
        // The same events as on Deno, after the comment that makes Bun send
        // the headers (runtimes.md).
        expect(await res.text()).toBe(
          ': open\n\nevent: item\nid: 0\ndata: "to"\n\n' +
            'event: item\nid: 1\ndata: "be"\n\n' +
            'event: end\ndata: {"items":2}\n\n',
        );
        const inFlight = async () =>
          (await (await fetch(`${server.url}/v1/status`, { headers })).json())
            .workers[0]
            .inFlight;
        const ac = new AbortController();
        const talking = await fetch(`${server.url}/v1/models/talker/stream`, {
          method: "POST",
          headers,
          body: "{}",
          signal: ac.signal,
        });
        const reader = talking.body!.pipeThrough(new TextDecoderStream())
          .getReader();
        let text = "";
        while (!text.includes('data: "hi"')) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        ac.abort();
        await reader.cancel().catch(() => {});
        const deadline = Date.now() + 10_000;
        while (await inFlight() !== 0) {
          if (Date.now() > deadline) throw new Error("the model still runs");
          await new Promise((r) => setTimeout(r, 20));
        }
        const put = await fetch(`${server.url}/v1/models/hang`, {
          method: "PUT",
          headers,
          body: JSON.stringify({ file: "hang.py" }),
        });
        expect(put.status).toBe(504);
        expect(await put.json()).toMatchObject({
          error: {
            type: "TimeoutError",
            message: expect.stringContaining("timed out after 1000 ms"),
          },
        });
      } finally {
        await server.shutdown();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test("the gateway keeps integers beyond ±2^53 exact on Bun", async () => {
  await withEchoGateway(async (server) => {
    const body = `{"id":18446744073709551617,"big":1${
      "0".repeat(400)
    },"f":0.12345678901234568}`;
    const res = await fetch(`${server.url}/v1/models/echo/execute`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text.startsWith(`{"msg":${body},"pid":`)).toBe(true);
  });
}, 30_000);

/** Polls `check` every 20 ms until it holds; fails naming `what` after 10 s. */
async function until(check: () => Promise<boolean>, what: string) {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test(
  "serve() on Bun: a model stream's client that stops reading loses its stream at limits.streamIdleTimeout; the response ends with the error",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-gw-"));
    const marker = join(dir, "closed");
    try {
      await writeFile(
        join(dir, "chunks.py"),
        "class Chunks:\n    def execute(self, msg):\n        try:\n            while True:\n                yield 'x' * 65536\n        finally:\n            with open(msg['marker'], 'a') as f:\n                f.write('finally')\n",
      );
      const config = resolveConfig({
        cwd: dir,
        cli: {
          port: 0,
          workers: 1,
          modelsDir: dir,
          limits: { streamIdleTimeout: 1000, shutdownGrace: 2000 },
        },
      });
      const server = await serve(config);
      const port = Number(new URL(server.url).port);
      const sock = connect(port, "127.0.0.1");
      try {
        let tail = "";
        sock.on("data", (d: Buffer) => {
          tail = (tail + d.toString("latin1")).slice(-4096);
        });
        await new Promise((r) => sock.once("connect", r));
        const body = JSON.stringify({ marker });
        sock.write(
          `POST /v1/models/chunks/stream HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        );
        // The head came: the client stops reading.
        await until(() => Promise.resolve(tail.length > 0), "the response");
        sock.pause();
        await until(
          () =>
            readFile(marker, "utf8").then((t) => t === "finally", () => false),
          "the generator's finally",
        );
        const worker = async () =>
          (await (await fetch(`${server.url}/v1/status`)).json()).workers[0];
        await until(async () => {
          const w = await worker();
          return w.inFlight === 0 && w.parked === 0;
        }, "the idle stream's counts to go");
        await until(
          async () =>
            (await (await fetch(`${server.url}/metrics`)).text()).includes(
              'pyproxy_requests_total{model="chunks",status="408"} 1',
            ),
          "the 408",
        );
        // Reading again: the error event, then the end of the body.
        sock.resume();
        await until(
          () => Promise.resolve(tail.endsWith("\r\n0\r\n\r\n")),
          "the end of the response",
        );
        expect(tail).toContain('"type":"StreamIdleError"');
      } finally {
        sock.destroy();
        await server.shutdown();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test(
  "serve() on Bun writes channel messages' big integers exactly (WebSocket, SSE, listing) and puts request ids on model streams",
  async () => {
    const big = "18446744073709551617";
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-gw-"));
    try {
      await writeFile(
        join(dir, "gen.py"),
        "from pyproxy import host\n\n\nclass Gen:\n    def execute(self, msg):\n        yield {'requestId': host.request_id()}\n        if msg.get('fail'):\n            raise ValueError('boom')\n",
      );
      const config = resolveConfig({
        cwd: dir,
        cli: { port: 0, workers: 1, modelsDir: dir },
      });
      const server = await serve(config);
      const ws = new WebSocket(
        `${server.url.replace("http", "ws")}/v1/channels/big`,
      );
      try {
        const received: string[] = [];
        const two = new Promise<void>((resolve, reject) => {
          ws.onmessage = (ev) => {
            received.push(String(ev.data));
            if (received.length === 2) resolve();
          };
          ws.onerror = () => reject(new Error("WebSocket failed"));
        });
        await new Promise<void>((resolve, reject) => {
          ws.onopen = () => resolve();
          ws.onclose = () => reject(new Error("WebSocket closed"));
        });
        const bodies = [`{"n":${big},"a":[-${big}0]}`, `-${big}`];
        for (const body of bodies) {
          const res = await fetch(`${server.url}/v1/channels/big`, {
            method: "POST",
            body,
          });
          expect(await res.json()).toMatchObject({ delivered: 1 });
        }
        await two;
        expect(received.map((m) => m.slice(m.indexOf('"data":')))).toEqual(
          bodies.map((b) => `"data":${b}}`),
        );
        const sse = await fetch(`${server.url}/v1/channels/big`, {
          headers: { "last-event-id": "0" },
        });
        const reader = sse.body!.pipeThrough(new TextDecoderStream())
          .getReader();
        let text = "";
        while (!text.includes(`data: -${big}\n`)) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        await reader.cancel();
        expect(text).toContain(`id: 1\ndata: ${bodies[0]}\n`);
        expect(text).toContain(`id: 2\ndata: ${bodies[1]}\n`);
        const list = await (await fetch(`${server.url}/v1/channels`)).text();
        for (const body of bodies) expect(list).toContain(`"data":${body}}`);

        // Request ids on model streams: the SSE response, its error event.
        for (const fail of [false, true]) {
          const res = await fetch(`${server.url}/v1/models/gen/stream`, {
            method: "POST",
            headers: { "x-request-id": "bun-stream-1" },
            body: JSON.stringify({ fail }),
          });
          expect(res.status).toBe(200);
          expect(res.headers.get("x-request-id")).toBe("bun-stream-1");
          const events = await res.text();
          expect(events).toContain('data: {"requestId":"bun-stream-1"}\n');
          if (fail) {
            expect(events).toContain(
              'event: error\ndata: {"error":{"type":"PythonError","message":"ValueError: boom","exception":"ValueError","requestId":"bun-stream-1"}}',
            );
          } else expect(events).toContain('event: end\ndata: {"items":1}');
        }
        // Refused before streaming: the client's id, else a made-up one.
        const bad = await fetch(`${server.url}/v1/models/gen/stream`, {
          method: "POST",
          headers: { "x-request-id": "bun-stream-2" },
          body: "{bad",
        });
        expect(bad.status).toBe(400);
        expect(bad.headers.get("x-request-id")).toBe("bun-stream-2");
        expect((await bad.json()).error.requestId).toBe("bun-stream-2");
        const missing = await fetch(`${server.url}/v1/models/nope/stream`, {
          method: "POST",
          body: "{}",
        });
        expect(missing.status).toBe(404);
        const { error } = await missing.json() as {
          error: { requestId: string };
        };
        expect(error.requestId).toMatch(/^[0-9a-f-]{36}$/);
        expect(missing.headers.get("x-request-id")).toBe(error.requestId);
      } finally {
        ws.close();
        await server.shutdown();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test(
  "serve() on Bun answers a WebSocket handshake as Deno does: 101 in the metrics, 400 for one without its key",
  async () => {
    // The shim answered a handshake Bun then refused (no Sec-WebSocket-Key)
    // with an empty 200, and counted every upgrade as a 200.
    await withEchoGateway(async (server) => {
      const handshake = (key: string) =>
        new Promise<string>((resolve, reject) => {
          const sock = connect(server.port, "127.0.0.1");
          let text = "";
          sock.on("data", (d) => {
            text += d.toString("latin1");
            const end = text.indexOf("\r\n\r\n");
            const length = /content-length: (\d+)/i.exec(text);
            if (
              end >= 0 &&
              text.length >= end + 4 + Number(length?.[1] ?? 0)
            ) {
              sock.destroy();
              resolve(text);
            }
          });
          sock.on("error", reject);
          sock.on("connect", () =>
            sock.write(
              `GET /v1/channels/hs HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nX-Request-Id: bun-ws-1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${key}Sec-WebSocket-Version: 13\r\n\r\n`,
            ));
        });
      const upgraded = await handshake(
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
      );
      expect(upgraded).toStartWith("HTTP/1.1 101");
      expect(upgraded.toLowerCase()).not.toContain("x-request-id");
      const refused = await handshake("");
      expect(refused).toStartWith("HTTP/1.1 400");
      expect(refused).toContain("x-request-id: bun-ws-1\r\n");
      expect(refused).toContain(
        `{"error":{"type":"InvalidRequestError","message":"Invalid Header: 'sec-websocket-key' header must be set"}}`,
      );
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      expect(metrics).toContain(
        'pyproxy_http_responses_total{route="/v1/channels/{name}",status="101"} 1\n',
      );
      expect(metrics).not.toMatch(
        /pyproxy_http_responses_total\{route="[^"]*",status="200"\}/,
      );
    });
  },
  30_000,
);

/** Writes `bytes` on a new connection and reads until the server closes it. */
function exchange(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    let text = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no close after: ${JSON.stringify(text)}`));
    }, 5000);
    sock.on("data", (d: Buffer) => (text += d.toString("latin1")));
    sock.on("error", () => {});
    sock.on("close", () => {
      clearTimeout(timer);
      resolve(text);
    });
    sock.on("connect", () => sock.write(bytes));
  });
}

test(
  "serve() on Bun speaks no HTTP/2: an h2c client gets 400 and a closed connection; HTTP/1 without Host stays refused",
  async () => {
    await withEchoGateway(async (server) => {
      // Bun.serve reads the HTTP/2 preface as a bad HTTP/1.1 request
      // (docs/runtimes.md): HTTP/2 clients must use HTTP/1.1 with Bun.
      const h2 = await exchange(
        server.port,
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
      );
      expect(h2.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
      // A request that names no authority gets a relative request.url from
      // Bun: the Host check refuses it (Deno makes it localhost:<port>).
      const hostless = await exchange(
        server.port,
        'POST /v1/models/echo/execute HTTP/1.0\r\nContent-Length: 7\r\n\r\n{"a":1}',
      );
      expect(hostless.split("\r\n")[0]).toBe("HTTP/1.1 403 Forbidden");
      expect(hostless).toContain('"ForbiddenHost"');
      const ok = await exchange(
        server.port,
        `POST /v1/models/echo/execute HTTP/1.0\r\nHost: localhost:${server.port}\r\nContent-Length: 7\r\n\r\n{"a":1}`,
      );
      expect(ok.split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    });
  },
  20_000,
);

test(
  "serve() on Bun takes the token as a WebSocket subprotocol: pyproxy.v1 answered (never the token), a wrong one 401",
  async () => {
    const token = "bun-ws-token-0123456789";
    await withGateway({ "echo.py": ECHO_MODEL }, { token }, async (server) => {
      const url = `${server.url.replace("http", "ws")}/v1/channels/bunauth`;
      // Bun's WebSocket, as a page's: subprotocols only, no header.
      const ws = new WebSocket(url, ["pyproxy.v1", `pyproxy.bearer.${token}`]);
      try {
        const first = new Promise<Record<string, unknown>>(
          (resolve, reject) => {
            ws.onmessage = (ev) => resolve(JSON.parse(String(ev.data)));
            ws.onclose = () => reject(new Error("WebSocket closed"));
          },
        );
        await new Promise<void>((resolve, reject) => {
          ws.onopen = () => resolve();
          ws.onerror = () => reject(new Error("WebSocket failed"));
        });
        expect(ws.protocol).toBe("pyproxy.v1");
        const auth = { authorization: `Bearer ${token}` };
        for (let i = 0; i < 200; i++) {
          const list = await (await fetch(`${server.url}/v1/channels`, {
            headers: auth,
          })).json() as { channels: { name: string; subscribers: number }[] };
          if (
            list.channels.some((c) =>
              c.name === "bunauth" && c.subscribers === 1
            )
          ) break;
          await new Promise((r) => setTimeout(r, 10));
        }
        const pub = await fetch(`${server.url}/v1/channels/bunauth`, {
          method: "POST",
          headers: { ...auth, "content-type": "application/json" },
          body: JSON.stringify({ on: "bun" }),
        });
        expect(pub.status).toBe(200);
        await pub.body?.cancel();
        expect((await first).data).toEqual({ on: "bun" });
      } finally {
        ws.onclose = null;
        ws.close();
      }
      const handshake = (protocols: string) =>
        new Promise<string>((resolve, reject) => {
          const sock = connect(server.port, "127.0.0.1");
          let text = "";
          sock.on("data", (d) => {
            text += d.toString("latin1");
            const end = text.indexOf("\r\n\r\n");
            const length = /content-length: (\d+)/i.exec(text);
            if (
              end >= 0 && (text.startsWith("HTTP/1.1 101") ||
                text.length >= end + 4 + Number(length?.[1] ?? 0))
            ) {
              sock.destroy();
              resolve(text);
            }
          });
          sock.on("error", reject);
          sock.on("connect", () =>
            sock.write(
              `GET /v1/channels/bunauth HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ${protocols}\r\n\r\n`,
            ));
        });
      const ok = await handshake(`pyproxy.bearer.${token}, pyproxy.v1`);
      expect(ok).toStartWith("HTTP/1.1 101");
      expect(ok.toLowerCase()).toContain(
        "\r\nsec-websocket-protocol: pyproxy.v1\r\n",
      );
      expect(ok).not.toContain(token);
      const wrong = await handshake(
        "pyproxy.bearer.wrong-token-00000000, pyproxy.v1",
      );
      expect(wrong).toStartWith("HTTP/1.1 401");
      expect(wrong.toLowerCase()).toContain("www-authenticate: bearer");
      expect(wrong).toContain("pyproxy.bearer.<token>");
      expect(wrong).not.toContain("wrong-token");
    });
  },
  30_000,
);

test(
  "serve() on Bun: a model stream with ?early=1 sends its 200 and keep-alive comments before the first item, its error as an event, and a client that leaves then cancels the model",
  async () => {
    const gated =
      "import os, time\nclass Gated:\n    def execute(self, msg):\n        while not os.path.exists(msg['gate']):\n            time.sleep(0.01)\n        if msg.get('fail'):\n            raise ValueError('no')\n        yield 'hi'\n";
    const gate = join(tmpdir(), `pyproxy-bun-gate-${crypto.randomUUID()}`);
    // Opens the gate should the headers wait for the first item (without
    // ?early=1): the test fails on what it read instead of hanging.
    const fallback = setTimeout(() => void writeFile(gate, ""), 10_000);
    try {
      await withGateway(
        { "gated.py": gated },
        { limits: { streamKeepAlive: 100 } },
        async (server) => {
          const post = (body: unknown, signal?: AbortSignal) =>
            fetch(`${server.url}/v1/models/gated/stream?early=1`, {
              method: "POST",
              body: JSON.stringify(body),
              ...(signal === undefined ? {} : { signal }),
            });
          const res = await post({ gate });
          expect(res.status).toBe(200);
          const reader = res.body!.pipeThrough(new TextDecoderStream())
            .getReader();
          let text = "";
          while (
            text.split(": keep-alive\n\n").length < 3 &&
            !text.includes("event:")
          ) {
            const { value, done } = await reader.read();
            if (done) break;
            text += value;
          }
          expect(text).toStartWith(": open\n\n: keep-alive\n\n");
          expect(text).not.toContain("event:");
          await writeFile(gate, "");
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            text += value;
          }
          expect(text).toEndWith(
            'event: item\nid: 0\ndata: "hi"\n\nevent: end\ndata: {"items":1}\n\n',
          );
          // The model's exception before its first item: the 422's body.
          const failed = await (await post({ gate, fail: true })).text();
          expect(failed).toContain("event: error\ndata: ");
          expect(failed).toContain('"exception":"ValueError"');

          const inFlight = async () =>
            (await (await fetch(`${server.url}/v1/status`)).json()).workers[0]
              .inFlight;
          const ac = new AbortController();
          const never = await post({ gate: `${gate}-never` }, ac.signal);
          expect(never.status).toBe(200);
          while (await inFlight() !== 1) {
            await new Promise((r) => setTimeout(r, 20));
          }
          ac.abort();
          await never.body?.cancel().catch(() => {});
          const deadline = Date.now() + 10_000;
          while (await inFlight() !== 0) {
            if (Date.now() > deadline) throw new Error("the model still runs");
            await new Promise((r) => setTimeout(r, 20));
          }
          const metrics = await (await fetch(`${server.url}/metrics`)).text();
          expect(metrics).toContain(
            'pyproxy_requests_total{model="gated",status="499"} 1',
          );
          expect(metrics).toContain(
            'pyproxy_requests_total{model="gated",status="422"} 1',
          );
        },
      );
    } finally {
      clearTimeout(fallback);
      await rm(gate, { force: true });
    }
  },
  30_000,
);
