/**
 * The gRPC port against a hostile HTTP/2 client written frame by frame (no
 * HTTP/2 library: one that breaks the protocol as a library would not),
 * with the gateway in a process of its own (`serve`), so that what ends
 * that process does not end the test runner.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawnServe } from "./_gateway_harness.ts";

const enc = new TextEncoder();

/** An HTTP/2 frame. */
function frame(
  type: number,
  flags: number,
  stream: number,
  payload = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(9 + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.byteLength << 8);
  out[3] = type;
  out[4] = flags;
  view.setUint32(5, stream);
  out.set(payload, 9);
  return out;
}

/** An HPACK literal header field without indexing, a new name (short strings). */
function literal(name: string, value: string): Uint8Array {
  const n = enc.encode(name);
  const v = enc.encode(value);
  return new Uint8Array([0, n.length, ...n, v.length, ...v]);
}

/** A free port of 127.0.0.1 (closed again: the gateway binds it next). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * One connection: the server's SETTINGS acknowledged, then ModelStreamInfer
 * streams opened and left open, `over` more than the server allows at a time
 * (its SETTINGS_MAX_CONCURRENT_STREAMS), a PING's answer awaited, then the
 * client's GOAWAY and the connection closed once the server closes it.
 */
async function hostileConnection(port: number, over: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(
      new Uint8Array([
        ...enc.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ...frame(4, 0, 0),
      ]),
    );
    // The server's answers: its SETTINGS acknowledged, its HEADERS counted.
    let headers = 0;
    let max = 0;
    let onHeaders = () => {};
    let onPong = () => {};
    let onSettings = () => {};
    const acknowledged = new Promise<void>((resolve) => onSettings = resolve);
    const reading = (async () => {
      let buffered = new Uint8Array(0);
      const chunk = new Uint8Array(65536);
      while (true) {
        const n = await conn.read(chunk).catch(() => null);
        if (n === null) return;
        buffered = new Uint8Array([...buffered, ...chunk.subarray(0, n)]);
        while (buffered.byteLength >= 9) {
          const length = (buffered[0]! << 16) | (buffered[1]! << 8) |
            buffered[2]!;
          if (buffered.byteLength < 9 + length) break;
          const type = buffered[3];
          if (type === 4 && (buffered[4]! & 1) === 0) {
            for (let at = 9; at + 6 <= 9 + length; at += 6) {
              const view = new DataView(buffered.buffer, buffered.byteOffset);
              // SETTINGS_MAX_CONCURRENT_STREAMS
              if (view.getUint16(at) === 3) max = view.getUint32(at + 2);
            }
            await conn.write(frame(4, 1, 0)).catch(() => {});
            onSettings();
          }
          if (type === 1) {
            headers++;
            onHeaders();
          }
          if (type === 6 && (buffered[4]! & 1) === 1) onPong();
          buffered = buffered.subarray(9 + length);
        }
      }
    })();
    const block = new Uint8Array([
      0x83, // :method POST
      0x86, // :scheme http
      ...literal(":path", "/inference.GRPCInferenceService/ModelStreamInfer"),
      ...literal(":authority", "localhost"),
      ...literal("content-type", "application/grpc"),
      ...literal("te", "trailers"),
    ]);
    // Its SETTINGS acknowledged (its streams at a time now binding: a
    // stream over them is a connection error, PROTOCOL_ERROR, not a
    // refused stream).
    await Promise.race([acknowledged, reading]);
    assert.ok(max > 0, "the server's SETTINGS set no MAX_CONCURRENT_STREAMS");
    let id = 1;
    for (let i = 0; i < max + over; i++, id += 2) {
      // END_HEADERS, the stream left open.
      await conn.write(frame(1, 0x4, id, block)).catch(() => {});
    }
    // The streams the server took have answered their headers.
    await Promise.race([
      new Promise<void>((resolve) => {
        onHeaders = () => headers >= max && resolve();
        onHeaders();
      }),
      reading,
    ]);
    // A PING's answer: the server has read every frame before it.
    await Promise.race([
      new Promise<void>((resolve) => {
        onPong = resolve;
        conn.write(frame(6, 0, 0, new Uint8Array(8))).catch(() => {});
      }),
      reading,
    ]);
    const goaway = new Uint8Array(8);
    new DataView(goaway.buffer).setUint32(0, id - 2);
    await conn.write(frame(7, 0, 0, goaway)).catch(() => {});
    // Until the server, having read it, closes the connection.
    await reading;
  } finally {
    conn.close();
  }
}

Deno.test("gRPC: a client breaking HTTP/2 (more streams at once than the server's acknowledged SETTINGS allow) does not end the gateway's process", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-grpc-hostile-" });
  const grpcPort = freePort();
  const serve = await spawnServe(dir, ["--grpc-port", String(grpcPort)]);
  try {
    // Deno's node:http2 destroys the session with "Protocol error" (the
    // first stream over its limit) and its streams with that error: one
    // without an error listener made it uncaught, and the process ended, at
    // the first connection.
    for (let round = 0; round < 2; round++) {
      await hostileConnection(grpcPort, 8);
      const res = await fetch(`http://127.0.0.1:${serve.port}/healthz`)
        .catch((err) => err as Error);
      assert.ok(
        res instanceof Response,
        `the gateway is gone after ${round + 1} connections: ${res}; stderr: ${
          res instanceof Response ? "" : await serve.stderr
        }`,
      );
      await res.body?.cancel();
    }
  } finally {
    try {
      serve.child.kill("SIGTERM");
    } catch {
      // Exited already.
    }
    await serve.child.status;
    await serve.lines.cancel();
    await serve.stderr;
    await Deno.remove(dir, { recursive: true });
  }
});
