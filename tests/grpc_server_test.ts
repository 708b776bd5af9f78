/**
 * `serveGrpc`'s connection timeouts: a connection without calls, and a TLS
 * handshake that never completes, are closed (real sockets, real TLS).
 */
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { serveGrpc } from "../src/gateway/grpc_server.ts";
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
