/**
 * `serveGrpc`'s connection timeouts: a connection without calls, a TLS
 * handshake that never completes, and a client that no longer answers
 * PINGs are closed (real sockets, real TLS).
 */
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { Buffer } from "node:buffer";
import { serveGrpc } from "../src/gateway/grpc_server.ts";
import { grpc } from "./_grpc_client.ts";
import { tempDir } from "./_harness.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

const base = {
  hostname: "127.0.0.1",
  port: 0,
  fetch: () => new Response("{}"),
  httpPort: () => 8000,
  bodyLimit: 1 << 20,
};

/** Settles with how the connection ended, or "open" after `boundMs`. */
function endOf(conn: Deno.Conn, boundMs: number): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    conn.read(new Uint8Array(64)).then(
      (n) => n === null ? "closed" : "data",
      () => "closed",
    ),
    new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve("open"), boundMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

Deno.test("serveGrpc closes a connection that has had no call for idleTimeout", async () => {
  const grpc = await serveGrpc({ ...base, idleTimeout: 200 });
  const session = http2.connect(`http://127.0.0.1:${grpc.port}`);
  try {
    session.on("error", () => {});
    const closed = new Promise<void>((resolve) =>
      session.once("close", resolve)
    );
    // A call keeps it open; the idle time counts from its end.
    const req = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Check",
      "content-type": "application/grpc",
    });
    req.end(new Uint8Array(5));
    req.resume();
    await new Promise<void>((resolve) => req.once("close", resolve));
    assert.equal(session.closed || session.destroyed, false);
    // The bound only keeps a failure from hanging the test.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ended = await Promise.race([
      closed.then(() => "closed"),
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve("open"), 5000);
      }),
    ]);
    clearTimeout(timer);
    assert.equal(ended, "closed");
  } finally {
    session.destroy();
    await grpc.close();
  }
});

Deno.test("serveGrpc ends a call whose request stalls for idleTimeout, then closes the idle connection", async () => {
  const grpc = await serveGrpc({ ...base, idleTimeout: 200 });
  const session = http2.connect(`http://127.0.0.1:${grpc.port}`);
  try {
    session.on("error", () => {});
    const closed = new Promise<string>((resolve) =>
      session.once("close", () => resolve("closed"))
    );
    // Headers, then nothing: not a call in flight for ever (the connection
    // was never idle, and a client answers PINGs by itself).
    const req = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Check",
      "content-type": "application/grpc",
    });
    req.on("error", () => {});
    req.resume();
    const status = new Promise<string | undefined>((resolve) => {
      req.once(
        "response",
        (headers) => resolve(headers["grpc-status"] as string | undefined),
      );
      req.once("close", () => resolve(undefined));
    });
    // The bound only keeps a failure from hanging the test.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ended = await Promise.race([
      closed,
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve("open"), 5000);
      }),
    ]);
    clearTimeout(timer);
    assert.equal(ended, "closed");
    assert.equal(await status, String(4)); // DEADLINE_EXCEEDED
    assert.equal(grpc.inFlight, 0);
  } finally {
    session.destroy();
    await grpc.close();
  }
});

Deno.test({
  name: "serveGrpc closes a TLS connection whose handshake stalls",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-grpc-test-");
  const cert = await selfSignedCert(dir.path);
  const grpc = await serveGrpc({
    ...base,
    tls: { cert: cert.pem, key: await Deno.readTextFile(cert.key) },
    handshakeTimeout: 200,
    idleTimeout: 0,
  });
  // Connects and never says hello.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: grpc.port });
  try {
    // The bound only keeps a failure from hanging the test.
    assert.equal(await endOf(conn, 5000), "closed");
  } finally {
    conn.close();
    await grpc.close();
  }
});

/** An HTTP/2 frame. */
function h2Frame(
  type: number,
  flags: number,
  stream: number,
  payload: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(9 + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.byteLength << 8 | type);
  out[4] = flags;
  view.setUint32(5, stream);
  out.set(payload, 9);
  return out;
}

/**
 * A connection written by hand, so that it can stop answering PINGs (a
 * client gone without a FIN: every HTTP/2 library answers them): opens a
 * health Watch and reads what comes, answering nothing.
 */
async function silentWatch(port: number): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const text = new TextEncoder();
  // HPACK literals without indexing, no Huffman coding.
  const headers = Object.entries({
    ":method": "POST",
    ":scheme": "http",
    ":path": "/grpc.health.v1.Health/Watch",
    ":authority": "localhost",
    "content-type": "application/grpc",
    te: "trailers",
  }).flatMap(([name, value]) => [
    0,
    name.length,
    ...text.encode(name),
    value.length,
    ...text.encode(value),
  ]);
  await conn.write(text.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
  await conn.write(h2Frame(4, 0, 0, new Uint8Array(0)));
  await conn.write(h2Frame(1, 4, 1, new Uint8Array(headers)));
  // An empty HealthCheckRequest (service ""), then the half-close.
  await conn.write(h2Frame(0, 1, 1, new Uint8Array(5)));
  return conn;
}

/** Reads `conn` until it closes; "open" if it has not after `boundMs`. */
async function drainedEnd(conn: Deno.Conn, boundMs: number): Promise<string> {
  const buffer = new Uint8Array(4096);
  const began = performance.now();
  for (;;) {
    const left = boundMs - (performance.now() - began);
    if (left <= 0) return "open";
    const read = await endOrData(conn, buffer, left);
    if (read !== "data") return read;
  }
}

function endOrData(
  conn: Deno.Conn,
  buffer: Uint8Array,
  boundMs: number,
): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    conn.read(buffer).then(
      (n) => n === null ? "closed" : "data",
      () => "closed",
    ),
    new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve("open"), boundMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

Deno.test("serveGrpc closes a connection whose client no longer answers PINGs, and its health watch's slot is free again", async () => {
  const grpcServer = await serveGrpc({
    ...base,
    fetch: () => new Response(null, { status: 200 }),
    maxHealthWatches: 1,
    keepaliveInterval: 100,
    keepaliveTimeout: 200,
  });
  const client = new grpc.Client(
    `127.0.0.1:${grpcServer.port}`,
    grpc.credentials.createInsecure(),
  );
  const conn = await silentWatch(grpcServer.port);
  try {
    // Its watch is open (the one slot), then it is closed for its silence.
    // The bound only keeps a failure from hanging the test.
    assert.equal(await drainedEnd(conn, 3000), "closed");
    // A client that answers keeps its watch past many PINGs.
    const call = client.makeServerStreamRequest<Uint8Array, Uint8Array>(
      "/grpc.health.v1.Health/Watch",
      (x) => Buffer.from(x),
      (b) => b,
      new Uint8Array(0),
      new grpc.Metadata(),
      {},
    );
    let statuses = 0;
    call.on("data", () => statuses++);
    const ended = new Promise<grpc.StatusObject>((resolve) => {
      call.on("status", resolve);
      call.on("error", () => {});
    });
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(statuses, 1);
    assert.equal(grpcServer.inFlight, 1);
    call.cancel();
    assert.equal((await ended).code, grpc.status.CANCELLED);
  } finally {
    conn.close();
    client.close();
    await grpcServer.close();
  }
});

/** Reads `conn` (the server's SETTINGS) until it closes, or "open" after `boundMs`. */
async function closedWithin(conn: Deno.Conn, boundMs: number): Promise<string> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) return "open";
    const got = await endOf(conn, left);
    if (got !== "data") return got;
  }
}

Deno.test("serveGrpc closes a connection whose client has not sent HTTP/2's preface within handshakeTimeout", async () => {
  const grpc = await serveGrpc({
    ...base,
    handshakeTimeout: 200,
    idleTimeout: 0,
  });
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: grpc.port });
  // Half the preface, and then nothing.
  const partial = await Deno.connect({
    hostname: "127.0.0.1",
    port: grpc.port,
  });
  await partial.write(new TextEncoder().encode("PRI * HTTP/2.0\r\n"));
  // A client that spoke HTTP/2 is not cut (idleTimeout 0: never).
  const session = http2.connect(`http://127.0.0.1:${grpc.port}`);
  session.on("error", () => {});
  try {
    // The bound only keeps a failure from hanging the test.
    assert.equal(await closedWithin(silent, 5000), "closed");
    assert.equal(await closedWithin(partial, 5000), "closed");
    assert.equal(session.closed || session.destroyed, false);
    const req = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Check",
      "content-type": "application/grpc",
    });
    req.end(new Uint8Array(5));
    req.resume();
    const status = await new Promise<unknown>((resolve, reject) => {
      req.once("trailers", (trailers) => resolve(trailers["grpc-status"]));
      req.once("error", reject);
    });
    assert.equal(status, "0");
  } finally {
    silent.close();
    partial.close();
    session.destroy();
    await grpc.close();
  }
});

Deno.test({
  name:
    "serveGrpc closes a TLS connection whose client, its handshake done, sends no HTTP/2 preface within handshakeTimeout",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-grpc-test-");
  const cert = await selfSignedCert(dir.path);
  const grpc = await serveGrpc({
    ...base,
    tls: { cert: cert.pem, key: await Deno.readTextFile(cert.key) },
    handshakeTimeout: 200,
    idleTimeout: 0,
  });
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: grpc.port,
    caCerts: [cert.pem],
    alpnProtocols: ["h2"],
  });
  try {
    await conn.handshake();
    // The bound only keeps a failure from hanging the test.
    assert.equal(await closedWithin(conn, 5000), "closed");
  } finally {
    conn.close();
    await grpc.close();
  }
});

// A grace beyond a timer's range (2^31 ms and more: until the calls finish)
// waits as long: its setTimeout fired at once, and the connection was
// destroyed under the answer.
for (const grace of [5000, 2 ** 31]) {
  Deno.test(`serveGrpc's close(${grace}) lets an answer written before it reach a client that reads it only then: its connection closes with a GOAWAY once its stream has, not at once`, async () => {
    // A ServerMetadata answer of 2 MiB: far over HTTP/2's flow-control window.
    const extensions = Array.from(
      { length: 2048 },
      (_, i) => String(i).padEnd(1024, "x"),
    );
    const grpc = await serveGrpc({
      ...base,
      fetch: () => Response.json({ name: "big", version: "1", extensions }),
    });
    const session = http2.connect(`http://127.0.0.1:${grpc.port}`);
    session.on("error", () => {});
    try {
      const req = session.request({
        ":method": "POST",
        ":path": "/inference.GRPCInferenceService/ServerMetadata",
        "content-type": "application/grpc",
      });
      req.on("error", () => {});
      req.pause();
      const trailers = new Promise<http2.IncomingHttpHeaders | undefined>(
        (resolve) => {
          req.once("trailers", resolve);
          req.once("close", () => resolve(undefined));
        },
      );
      req.end(new Uint8Array(5));
      await new Promise((resolve) => req.once("response", resolve));
      // The answer is written (the call settles at once), unread; the client
      // reads only once the server has begun to close its connection (a
      // destroy at once then dropped what nghttp2 had not sent: the client
      // got RST_STREAM 0, "Call ended without gRPC status").
      const closing = grpc.close(grace);
      await new Promise((resolve) => {
        session.once("goaway", resolve);
        session.once("close", resolve);
      });
      const chunks: Uint8Array[] = [];
      req.on("data", (chunk: Uint8Array) => chunks.push(chunk));
      req.resume();
      const ended = await trailers;
      assert.equal(ended?.["grpc-status"], "0", JSON.stringify(ended));
      const body = Buffer.concat(chunks);
      assert.ok(body.length > 2 * 1024 * 1024, `${body.length} bytes`);
      assert.equal(body.length, 5 + body.readUInt32BE(1));
      await closing;
      assert.ok(session.closed || session.destroyed);
    } finally {
      session.destroy();
      await grpc.close();
    }
  });
}

/** A health Check on a new connection: its grpc-status, or the error's message. */
async function checkOnNewConnection(port: number): Promise<string> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  try {
    const req = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Check",
      "content-type": "application/grpc",
    });
    req.end(new Uint8Array(5));
    req.resume();
    return await new Promise<string>((resolve) => {
      req.once(
        "trailers",
        (trailers) => resolve(String(trailers["grpc-status"])),
      );
      req.once("error", (err: Error) => resolve(err.message));
      req.once("close", () => resolve("closed"));
    });
  } finally {
    session.destroy();
  }
}

Deno.test("serveGrpc closes the connections beyond maxConnections as they come, and takes one again once another closed", async () => {
  const grpc = await serveGrpc({
    ...base,
    maxConnections: 2,
    handshakeTimeout: 60_000,
    idleTimeout: 0,
  });
  const port = grpc.port;
  const first = await Deno.connect({ hostname: "127.0.0.1", port });
  const second = await Deno.connect({ hostname: "127.0.0.1", port });
  const third = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    // Two silent connections held; the third is closed as it comes (the
    // bound only keeps a failure from hanging the test).
    assert.equal(await endOf(third, 5000), "closed");
    assert.notEqual(await checkOnNewConnection(port), "0");
    // Once one of the two is gone, a client is served again (as soon as
    // the server has seen the close: tried until then).
    first.close();
    let status = "";
    for (let i = 0; i < 50 && status !== "0"; i++) {
      status = await checkOnNewConnection(port);
    }
    assert.equal(status, "0");
  } finally {
    try {
      first.close();
    } catch {
      // closed above
    }
    second.close();
    third.close();
    await grpc.close();
  }
});

/** A unary call's end: its headers (Trailers-Only) and trailers merged. */
async function unaryEnd(
  port: number,
  path: string,
): Promise<Record<string, unknown>> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    session.on("error", () => {});
    const req = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
    });
    req.on("error", () => {});
    const out: Record<string, unknown> = {};
    req.on("response", (headers) => Object.assign(out, headers));
    req.on("trailers", (trailers) => Object.assign(out, trailers));
    req.resume();
    // An empty message: a ModelInferRequest of defaults.
    req.end(new Uint8Array(5));
    await new Promise<void>((resolve) => req.once("close", resolve));
    return out;
  } finally {
    session.destroy();
  }
}

Deno.test("serveGrpc: a REST answer's Retry-After is also gRPC's grpc-retry-pushback-ms (gRPC A6), in ms; none for a date", async () => {
  const answers = [
    new Response('{"error": "quota"}', {
      status: 429,
      headers: { "retry-after": "60" },
    }),
    new Response('{"error": "draining"}', {
      status: 503,
      headers: { "retry-after": "5" },
    }),
    new Response('{"error": "later"}', {
      status: 503,
      headers: { "retry-after": "Wed, 21 Oct 2015 07:28:00 GMT" },
    }),
    new Response('{"error": "crashed"}', { status: 502 }),
  ];
  const grpc = await serveGrpc({ ...base, fetch: () => answers.shift()! });
  try {
    const path = "/inference.GRPCInferenceService/ModelInfer";
    const quota = await unaryEnd(grpc.port, path);
    assert.equal(quota["grpc-status"], "8"); // RESOURCE_EXHAUSTED
    assert.equal(quota["retry-after"], "60");
    assert.equal(quota["grpc-retry-pushback-ms"], "60000");
    const draining = await unaryEnd(grpc.port, path);
    assert.equal(draining["grpc-status"], "14"); // UNAVAILABLE
    assert.equal(draining["grpc-retry-pushback-ms"], "5000");
    const dated = await unaryEnd(grpc.port, path);
    assert.equal(dated["grpc-status"], "14");
    assert.equal(dated["grpc-retry-pushback-ms"], undefined);
    const crashed = await unaryEnd(grpc.port, path);
    assert.equal(crashed["grpc-status"], "13"); // INTERNAL
    assert.equal(crashed["grpc-retry-pushback-ms"], undefined);
    assert.equal(crashed["retry-after"], undefined);
  } finally {
    await grpc.close();
  }
});

Deno.test("serveGrpc: a ModelStreamInfer a drain ends (UNAVAILABLE) has the drain's retry hint in its trailers, as the REST 503's Retry-After", async () => {
  const grpc = await serveGrpc(base);
  const session = http2.connect(`http://127.0.0.1:${grpc.port}`);
  let closing: Promise<void> | undefined;
  try {
    session.on("error", () => {});
    const req = session.request({
      ":method": "POST",
      ":path": "/inference.GRPCInferenceService/ModelStreamInfer",
      "content-type": "application/grpc",
    });
    req.on("error", () => {});
    const trailers = new Promise<Record<string, unknown>>((resolve) => {
      req.once("trailers", (t) => resolve({ ...t }));
      req.once("close", () => resolve({}));
    });
    await new Promise<void>((resolve) => req.once("response", () => resolve()));
    req.resume();
    closing = grpc.close(2000);
    const end = await trailers;
    assert.equal(end["grpc-status"], "14");
    assert.equal(end["retry-after"], "5");
    assert.equal(end["grpc-retry-pushback-ms"], "5000");
  } finally {
    session.destroy();
    await (closing ?? grpc.close());
  }
});
