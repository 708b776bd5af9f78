// Mutual authentication on Bun (protocol §4): a listener in a worker's
// place that does not know the secret is refused before it is sent
// anything but the auth (tests/session_server_proof_test.ts on Deno).
import { expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import { createServer, type Socket } from "node:net";
import { Session } from "../../src/session.ts";
import { nodeSocketToConnection } from "../../src/runtime/node_connection.ts";
import { decodedMessages, encodeFrame } from "../_harness.ts";

/** A server that says hello and accepts any auth, answering `serverMac` as `answer` makes it. */
async function impostor(answer: (clientNonce: string) => string | undefined) {
  const received: Array<Record<string, unknown>> = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    const conn = nodeSocketToConnection(socket);
    const writer = conn.writable.getWriter();
    const send = (msg: object) =>
      writer.write(encodeFrame(msg)).catch(() => {});
    void send({
      event: "hello",
      version: 1,
      serverId: "w1",
      pid: 1,
      auth: "hmac-sha256",
      nonce: "00112233445566778899aabbccddeeff",
    });
    (async () => {
      for await (const batch of decodedMessages(conn.readable)) {
        for (const msg of batch as Array<Record<string, unknown>>) {
          received.push(msg);
          if (msg.cmd !== "auth") continue;
          const serverMac = answer(String(msg.clientNonce));
          void send({
            id: msg.id,
            ok: true,
            result: {
              connection: "c1",
              serverId: "w1",
              pid: 1,
              maxFrameSize: 1 << 20,
              ...(serverMac === undefined ? {} : { serverMac }),
            },
          });
        }
      }
    })().catch(() => {}); // the session closed the connection
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

test(
  "Session on Bun refuses a server that cannot prove it knows the secret, before sending it anything else",
  async () => {
    const answers: Array<(nonce: string) => string | undefined> = [
      () => undefined,
      () => "ab".repeat(32),
      (nonce) =>
        createHmac("sha256", "other").update(`server:${nonce}`).digest("hex"),
    ];
    for (const answer of answers) {
      const fake = await impostor(answer);
      try {
        const err = await Session.connect({
          port: fake.port,
          secret: "s3cret",
          connectTimeout: 5000,
        }).then(async (session) => {
          await session.close();
          return undefined;
        }, (e: Error) => e);
        expect(err?.name).toBe("AuthenticationError");
        expect(err?.message).toContain(
          "did not prove that it knows the secret",
        );
        expect(fake.received.map((m) => m.cmd)).toEqual(["auth"]);
        expect(String(fake.received[0]!.clientNonce)).toMatch(/^[0-9a-f]{32}$/);
      } finally {
        await fake.close();
      }
    }
  },
  30_000,
);

test(
  "Bun's connect to a Unix socket whose accept queue is full fails with EAGAIN, as Deno's, so Session.connect tries it again; ECONNREFUSED stays for one nobody listens on (chaos48)",
  async () => {
    // Bun said ECONNREFUSED for the kernel's EAGAIN: the host's retry of a
    // full queue (a flood of a worker's socket, security25) never ran on Bun.
    const { defaultRuntime } = await import("../../src/runtime/mod.ts");
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(`${tmpdir()}/pyproxy-test-`);
    const path = `${dir}/full.sock`;
    // Listens with a queue of one and never accepts; closes on stdin's end.
    const server = Bun.spawn([
      "python3",
      "-c",
      `import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(0)
print("ready", flush=True)
if sys.stdin.readline() == "close\\n":
    s.close()
    print("closed", flush=True)
sys.stdin.readline()
`,
      path,
    ], { stdin: "pipe", stdout: "pipe" });
    const lines = server.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    let said = "";
    const saying = async (word: string): Promise<void> => {
      while (!said.includes(word)) {
        const { value, done } = await lines.read();
        if (done) throw new Error(`the server ended: ${said}`);
        said += value;
      }
    };
    const runtime = defaultRuntime();
    const held: Array<{ close(): void }> = [];
    try {
      await saying("ready");
      let code: unknown;
      for (let i = 0; i < 8 && code === undefined; i++) {
        try {
          held.push(await runtime.connect({ path }));
        } catch (err) {
          code = (err as { code?: unknown }).code;
        }
      }
      expect(code).toBe("EAGAIN");
      server.stdin.write("close\n");
      server.stdin.flush();
      await saying("closed");
      let refused: unknown;
      try {
        held.push(await runtime.connect({ path }));
      } catch (err) {
        refused = (err as { code?: unknown }).code;
      }
      expect(refused).toBe("ECONNREFUSED");
    } finally {
      for (const c of held) c.close();
      server.kill("SIGKILL");
      await server.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test(
  "Session.connect over TCP on Bun races a connect that has not completed by a fresh one, and closes the late one (flood26)",
  async () => {
    // A full accept queue drops a TCP connect's SYN, resent by the kernel
    // after 1 s and 3 s: a churn flood of a TCP worker locked the host out.
    // The first connect is held here as a dropped SYN would be.
    const { defaultRuntime } = await import("../../src/runtime/mod.ts");
    const { PythonServer } = await import("../../src/python_server.ts");
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(`${tmpdir()}/pyproxy-test-`);
    const server = await PythonServer.start({
      path: dir,
      port: 0,
      readyTimeout: 20_000,
    });
    const base = defaultRuntime();
    const target = { hostname: "127.0.0.1", port: server.port! };
    let release: () => void = () => {};
    const late = new Promise<{ close(): void }>((resolve, reject) => {
      release = () => void base.connect(target).then(resolve, reject);
    });
    let tries = 0;
    try {
      const session = await server.connect({
        connectTimeout: 2000,
        runtime: {
          ...base,
          connect: (to) => ++tries === 1 ? late as never : base.connect(to),
        },
      });
      try {
        expect(await session.ping()).toBe("pong");
        expect(tries).toBe(2);
        release();
        await late;
        let connections = 0;
        for (let i = 0; i < 200; i++) {
          connections = (await session.status()).connections;
          if (connections === 1) break;
          await Bun.sleep(10);
        }
        expect(connections).toBe(1);
      } finally {
        await session.close();
      }
    } finally {
      await server[Symbol.asyncDispose]();
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test(
  "Session.connect over TCP on Bun tries again a connection reset as it was made (a tcp_abort_on_overflow kernel's answer to a full queue; security27)",
  async () => {
    // The first connects reach a listener that resets what it accepts.
    const { defaultRuntime } = await import("../../src/runtime/mod.ts");
    const { PythonServer } = await import("../../src/python_server.ts");
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const resetting = createServer((socket: Socket) =>
      socket.resetAndDestroy()
    );
    await new Promise<void>((resolve) =>
      resetting.listen(0, "127.0.0.1", resolve)
    );
    const resetPort = (resetting.address() as { port: number }).port;
    const dir = mkdtempSync(`${tmpdir()}/pyproxy-test-`);
    const server = await PythonServer.start({
      path: dir,
      port: 0,
      readyTimeout: 20_000,
    });
    const base = defaultRuntime();
    let tries = 0;
    try {
      const session = await server.connect({
        connectTimeout: 5000,
        runtime: {
          ...base,
          connect: (to) =>
            ++tries <= 3
              ? base.connect({ hostname: "127.0.0.1", port: resetPort })
              : base.connect(to),
        },
      });
      try {
        expect(await session.ping()).toBe("pong");
        expect(tries).toBe(4);
      } finally {
        await session.close();
      }
    } finally {
      await server[Symbol.asyncDispose]();
      resetting.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);
