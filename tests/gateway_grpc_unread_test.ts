// The gRPC port's bound on the answers a client does not read
// (grpc.maxUnreadBytes): a raw node:http2 client whose HTTP/2 window is 0,
// so that no answer's byte can reach it, against a gateway in a process of
// its own (serve) with real workers.
import assert from "node:assert/strict";
import http2 from "node:http2";
import { spawnServe } from "./_gateway_harness.ts";
import { tritonProto } from "./_grpc_raw_gateway.ts";

const MODELS: Record<string, string> = {
  "big.py": `class Big:
    """Answers 300 kB, whatever it is sent."""

    def execute(self, msg):
        return {"blob": "x" * 300000}
`,
};

const root = tritonProto();
const InferRequest = root.lookupType("inference.ModelInferRequest");

const SERVICE = "/inference.GRPCInferenceService/";

/** A gRPC frame of a ModelInferRequest of the model `big`. */
function bigRequest(): Uint8Array {
  const message = InferRequest.encode(InferRequest.create({
    model_name: "big",
    inputs: [{
      name: "x",
      datatype: "FP64",
      shape: [1],
      contents: { fp64_contents: [1.5] },
    }],
  })).finish();
  const out = new Uint8Array(5 + message.byteLength);
  new DataView(out.buffer).setUint32(1, message.byteLength);
  out.set(message, 5);
  return out;
}

/** A free port of 127.0.0.1 (closed again: the gateway binds it next). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function until(what: string, check: () => boolean | Promise<boolean>) {
  for (let i = 0; i < 1000; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A gateway (`serve`, in its own process) with its gRPC port and `big`. */
async function gateway(args: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-grpc-unread-" });
  for (const [name, source] of Object.entries(MODELS)) {
    await Deno.writeTextFile(`${dir}/${name}`, source);
  }
  const grpcPort = freePort();
  const serve = await spawnServe(dir, [
    "--grpc-port",
    String(grpcPort),
    ...args,
  ]);
  return {
    grpcPort,
    serve,
    /** The calls in flight on the gateway's workers. */
    async busy(): Promise<number> {
      const res = await fetch(`http://127.0.0.1:${serve.port}/v1/status`);
      const status = await res.json();
      return (status.workers as Array<{ inFlight: number }>).reduce(
        (sum, w) => sum + w.inFlight,
        0,
      );
    },
    async [Symbol.asyncDispose]() {
      try {
        serve.child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
      await serve.child.status;
      await serve.lines.cancel();
      await serve.stderr;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A call on `session`: its response headers, and its close's RST_STREAM code. */
function call(session: http2.ClientHttp2Session, method: string) {
  const req = session.request({
    ":method": "POST",
    ":path": method.startsWith("/") ? method : SERVICE + method,
    "content-type": "application/grpc",
    te: "trailers",
  });
  req.on("error", () => {});
  const headers = new Promise<http2.IncomingHttpHeaders>((resolve) =>
    req.once("response", resolve)
  );
  const closed = new Promise<number>((resolve) =>
    req.once("close", () => resolve(req.rstCode ?? 0))
  );
  return { req, headers, closed };
}

/** A call of `big` on a connection of its own that reads: answered, OK. */
async function readingCall(port: number, from?: string): Promise<void> {
  const session = http2.connect(
    `http://127.0.0.1:${port}`,
    (from === undefined
      ? {}
      : { localAddress: from }) as http2.ClientSessionOptions,
  );
  session.on("error", () => {});
  try {
    const c = call(session, "ModelInfer");
    c.req.end(bigRequest());
    let bytes = 0;
    c.req.on("data", (chunk: Uint8Array) => bytes += chunk.byteLength);
    const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) =>
      c.req.once("trailers", resolve)
    );
    assert.equal((await trailers)["grpc-status"], "0");
    assert.ok(bytes > 300_000, `${bytes} bytes read`);
  } finally {
    session.destroy();
  }
}

/** A connection whose client reads nothing (its HTTP/2 windows are 0). */
function deaf(port: number): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`, {
    settings: { initialWindowSize: 0 },
  });
  session.on("error", () => {});
  return session;
}

Deno.test("gRPC: a connection whose client reads nothing holds grpc.maxUnreadBytes of answers at most: its next unary call is RESOURCE_EXHAUSTED, a stream's answer past it resets the stream (ENHANCE_YOUR_CALM), its infers cancelled; another connection is served", async () => {
  await using gw = await gateway(["--grpc-max-unread", "1048576"]);
  const session = deaf(gw.grpcPort);
  try {
    // Unary calls: each answer (300 kB) written and held, unread, until
    // the connection holds 1 MiB; the next call is refused at once (its
    // headers, trailers only, are not flow-controlled).
    let refused: http2.IncomingHttpHeaders | undefined;
    let answered = 0;
    for (let i = 0; i < 8 && refused === undefined; i++) {
      const c = call(session, "ModelInfer");
      c.req.end(bigRequest());
      const headers = await c.headers;
      if (headers["grpc-status"] === undefined) answered++;
      else refused = headers;
    }
    assert.equal(answered, 4, "4 answers of 300 kB fill the connection's MiB");
    assert.equal(refused?.["grpc-status"], "8", JSON.stringify(refused));
    assert.match(
      decodeURIComponent(String(refused?.["grpc-message"])),
      /has not read/,
    );

    // A health check is still answered there (its headers come; its few
    // bytes wait unread), not reset.
    const check = call(session, "/grpc.health.v1.Health/Check");
    check.req.end(new Uint8Array(5));
    const checked = await Promise.race([check.headers, check.closed]);
    assert.notEqual(typeof checked, "number", "the check was reset");
    // Another connection (the same client's own) is served meanwhile.
    await readingCall(gw.grpcPort);
  } finally {
    session.destroy();
  }

  // A stream on a new deaf connection: 16 infers in flight at once (the
  // window), their answers unread; the 4th fills the MiB, the 5th resets
  // the stream, and the others are cancelled (the workers free).
  const streams = deaf(gw.grpcPort);
  try {
    const s = call(streams, "ModelStreamInfer");
    for (let i = 0; i < 16; i++) s.req.write(bigRequest());
    let code: number | undefined;
    void s.closed.then((c) => code = c);
    // Without the bound, the 16 answers (4.8 MB) are all held, unread, and
    // the stream stays open.
    await until("the stream's reset", () => code !== undefined);
    assert.equal(code, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    await until("the workers to be free", async () => await gw.busy() === 0);
  } finally {
    streams.destroy();
  }
});

/** Unary calls of `big` on `session` until one is refused: the answered ones, and the refusal's headers. */
async function fill(session: http2.ClientHttp2Session, most: number) {
  let answered = 0;
  for (let i = 0; i < most; i++) {
    const c = call(session, "ModelInfer");
    c.req.end(bigRequest());
    const headers = await c.headers;
    if (headers["grpc-status"] !== undefined) return { answered, headers };
    answered++;
  }
  return { answered, headers: undefined };
}

/** A connection from the local address `from` whose client reads nothing. */
function deafFrom(port: number, from: string): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`, {
    settings: { initialWindowSize: 0 },
    localAddress: from,
  } as http2.ClientSessionOptions);
  session.on("error", () => {});
  return session;
}

Deno.test("gRPC: the answers all connections' clients do not read are bounded too (grpc.maxUnreadBytesTotal): from half of it an address holding its share takes no more, on any connection of it; at the bound no connection does, one holding none neither; a client elsewhere that reads is served", async () => {
  await using gw = await gateway([
    "--grpc-max-unread",
    "4194304",
    "--grpc-max-unread-total",
    "1048576",
  ]);
  const opened: http2.ClientHttp2Session[] = [];
  const open = (from: string) => {
    const session = deafFrom(gw.grpcPort, from);
    opened.push(session);
    return session;
  };
  try {
    // a alone fills half the server's MiB (under its own 4 MiB): its
    // address, the only one holding answers, holds its share of that half.
    const a = open("127.0.0.1");
    const first = await fill(a, 8);
    assert.equal(first.answered, 2);
    assert.equal(first.headers?.["grpc-status"], "8");
    assert.match(
      decodeURIComponent(String(first.headers?.["grpc-message"])),
      /over half its bound, and your address holds its share/,
    );
    // New connections of that address hold nothing, and take nothing
    // either: each took one answer, which it held unread (12 connections:
    // 3.6 MB, past the bound).
    for (let i = 0; i < 12; i++) {
      assert.equal((await fill(open("127.0.0.1"), 1)).answered, 0);
    }
    // A client elsewhere that reads is served.
    await readingCall(gw.grpcPort, "127.0.0.2");
    // Other addresses, one answer each unread, to the bound (1 MiB: 4
    // answers of 300 kB in all); past it no connection takes a call, one
    // holding none neither, whatever its address.
    assert.equal((await fill(open("127.0.0.3"), 1)).answered, 1);
    assert.equal((await fill(open("127.0.0.4"), 1)).answered, 1);
    const refused = await fill(open("127.0.0.5"), 1);
    assert.equal(refused.answered, 0);
    assert.match(
      decodeURIComponent(String(refused.headers?.["grpc-message"])),
      /the server holds \d+ bytes of answers its clients have not read, its bound/,
    );
    // a's connection gone, its bytes are freed: 127.0.0.1 is served again.
    a.destroy();
    await until("a's bytes freed", async () => {
      return (await fill(open("127.0.0.1"), 1)).answered === 1;
    });
  } finally {
    for (const session of opened) session.destroy();
  }
});

/** A connection from the local address `from` whose client reads. */
function reading(port: number, from: string): http2.ClientHttp2Session {
  const session = http2.connect(
    `http://127.0.0.1:${port}`,
    { localAddress: from } as http2.ClientSessionOptions,
  );
  session.on("error", () => {});
  return session;
}

Deno.test("gRPC: from half the unread total, only the addresses holding their share of it are refused: a client elsewhere that reads, several calls at once on one connection, gets every answer while another address's clients hold half the total unread", async () => {
  await using gw = await gateway([
    "--grpc-max-unread",
    "8388608",
    "--grpc-max-unread-total",
    "8388608",
  ]);
  const deafs = [deaf(gw.grpcPort), deaf(gw.grpcPort)];
  const reader = reading(gw.grpcPort, "127.0.0.2");
  try {
    // 127.0.0.1's clients fill half the total (4 MiB: 14 answers), then
    // are refused, their address holding all of that half.
    const first = await fill(deafs[0]!, 20);
    assert.equal(first.answered, 14);
    assert.match(
      decodeURIComponent(String(first.headers?.["grpc-message"])),
      /your address holds its share/,
    );
    assert.equal((await fill(deafs[1]!, 8)).answered, 0);
    // 127.0.0.2's client reads: 4 calls at a time on its one connection,
    // each answer (300 kB) held for a moment while it is sent (under its
    // address's share, 2 MiB, half of the half). Without the
    // share, the deaf clients filled the whole total and most of these
    // were refused or reset (its connection holding some bytes).
    const codes: string[] = [];
    await Promise.all(Array.from({ length: 4 }, async () => {
      for (let i = 0; i < 4; i++) {
        const c = call(reader, "ModelInfer");
        c.req.end(bigRequest());
        c.req.on("data", () => {});
        const trailers = new Promise<string>((resolve) =>
          c.req.once("trailers", (t) => resolve(String(t["grpc-status"])))
        );
        const headers = await Promise.race([c.headers, c.closed]);
        codes.push(
          typeof headers === "number"
            ? `reset ${headers}`
            : String(headers["grpc-status"] ?? await trailers),
        );
      }
    }));
    assert.deepEqual(codes, Array(16).fill("0"));
  } finally {
    for (const d of deafs) d.destroy();
    reader.destroy();
  }
});

/**
 * A connection from the local address `from` whose client reads `window`
 * bytes of each stream's answers.
 */
function slow(
  port: number,
  from: string,
  window: number,
): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`, {
    settings: { initialWindowSize: window },
    localAddress: from,
  } as http2.ClientSessionOptions);
  session.on("error", () => {});
  return session;
}

/** `promise`, or a failure naming `what` after 5 s. */
async function within<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no ${what}`)), 5000);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("gRPC: the unread count returns to nothing however connections end (destroyed with answers unsent, streams reset by the client mid-answer or by the bound, a GOAWAY, clients that read part): a new connection then holds all of its share again", async () => {
  await using gw = await gateway([
    "--grpc-max-unread",
    "4194304",
    "--grpc-max-unread-total",
    "2097152",
  ]);
  const ended: http2.ClientHttp2Session[] = [];
  try {
    // Each ending from an address of its own (none holds its share of
    // half the total, 1 MiB, before its stream's bound).
    // Unary answers unsent, then the connection destroyed (a RST of the
    // TCP connection from the server's side: its streams close unsent).
    const a = slow(gw.grpcPort, "127.0.0.2", 0);
    ended.push(a);
    assert.equal((await fill(a, 3)).answered, 3);
    a.destroy();
    // Streams' answers, one stream reset by the client mid-answer (its
    // window a few bytes: the answer is being written), another by the
    // bound (ENHANCE_YOUR_CALM), then the connection's GOAWAY.
    const b = slow(gw.grpcPort, "127.0.0.3", 1000);
    ended.push(b);
    const reset = call(b, "ModelStreamInfer");
    for (let i = 0; i < 2; i++) reset.req.write(bigRequest());
    await within(
      "answer",
      new Promise((resolve) => reset.req.once("data", resolve)),
    );
    reset.req.close(http2.constants.NGHTTP2_CANCEL);
    const bounded = call(b, "ModelStreamInfer");
    for (let i = 0; i < 8; i++) bounded.req.write(bigRequest());
    assert.equal(
      await within("reset", bounded.closed),
      http2.constants.NGHTTP2_ENHANCE_YOUR_CALM,
    );
    b.close();
    // A client that reads part of its answers, then is gone.
    const c = slow(gw.grpcPort, "127.0.0.4", 65535);
    ended.push(c);
    const part = call(c, "ModelInfer");
    part.req.end(bigRequest());
    await within(
      "answer",
      new Promise((resolve) => part.req.once("data", resolve)),
    );
    c.destroy();
    b.destroy();
    await until("the workers to be free", async () => await gw.busy() === 0);
    // Bytes counted and never freed would leave a new connection less
    // than its share of half the total, 4 answers of 300 kB (and, summed
    // over time, the whole bound: every client refused). A probe's own
    // bytes are freed a moment after it goes: the next may look again.
    let answered = 0;
    for (let i = 0; i < 40 && answered !== 4; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const probe = deaf(gw.grpcPort);
      ended.push(probe);
      answered = (await fill(probe, 8)).answered;
      probe.destroy();
    }
    assert.equal(answered, 4, "bytes counted and never freed");
  } finally {
    for (const s of ended) s.destroy();
  }
});
