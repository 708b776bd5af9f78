/**
 * Deno's TLS listener gets `TCP_NODELAY` (src/runtime/_deno_tls_no_delay.ts):
 * without it, each HTTPS response of more than a few hundred bytes waited
 * ~40 ms for the client's delayed ACK. Read back with getsockopt on the
 * listener and on a connection it accepted (no timing asserted).
 */
import assert from "node:assert/strict";
import { defaultRuntime } from "../src/runtime/mod.ts";
import { tempDir } from "./_harness.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

/** This process's sockets on `port` in `state` (0A: LISTEN, 01: ESTABLISHED), local side. */
function socketFds(port: number, state: string): number[] {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const inodes = new Set<string>();
  for (const table of ["tcp", "tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(`/proc/net/${table}`);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === state && f[1]?.endsWith(hex)) inodes.add(f[9]!);
    }
  }
  const fds: number[] = [];
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      const t = Deno.readLinkSync(`/proc/self/fd/${e.name}`);
      if (t.startsWith("socket:[") && inodes.has(t.slice(8, -1))) {
        fds.push(Number(e.name));
      }
    } catch {
      // Closed meanwhile.
    }
  }
  return fds;
}

function noDelay(fd: number): number {
  const libc = Deno.dlopen("libc.so.6", {
    getsockopt: {
      parameters: ["i32", "i32", "i32", "buffer", "buffer"],
      result: "i32",
    },
  });
  try {
    const value = new Int32Array(1);
    const length = new Uint32Array([4]);
    assert.equal(libc.symbols.getsockopt(fd, 6, 1, value, length), 0);
    return value[0]!;
  } finally {
    libc.close();
  }
}

Deno.test({
  name:
    "Deno's TLS listener and the connections it accepts have TCP_NODELAY (an HTTPS response's second record waited 40 ms for a delayed ACK)",
  ignore: !HAS_OPENSSL || Deno.build.os !== "linux",
}, async () => {
  await using dir = await tempDir("pyproxy-nodelay-test-");
  const cert = await selfSignedCert(dir.path);
  const runtime = defaultRuntime();
  const body = "x".repeat(4000);
  const server = await runtime.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: cert.pem, key: await Deno.readTextFile(cert.key) },
  }, () => new Response(body));
  const client = Deno.createHttpClient({ caCerts: [cert.pem] });
  try {
    assert.equal(server.warning, undefined);
    const listeners = socketFds(server.port, "0A");
    assert.ok(listeners.length > 0);
    for (const fd of listeners) assert.equal(noDelay(fd), 1, `listener ${fd}`);
    // A connection it accepted (the local side on the server's port), open
    // while the client keeps it alive.
    const res = await fetch(`https://127.0.0.1:${server.port}/`, { client });
    assert.equal((await res.text()).length, 4000);
    const accepted = socketFds(server.port, "01");
    assert.ok(accepted.length > 0, "no accepted connection found");
    for (const fd of accepted) assert.equal(noDelay(fd), 1, `accepted ${fd}`);
  } finally {
    client.close();
    await server.shutdown();
  }
});
