// Bun's HTTP port and idle keep-alive connections (the adapter serves with
// `idleTimeout: 0`, so that slow model calls and quiet event streams are not
// cut at Bun's 10 s): a connection idle after a fixed answer is closed after
// `limits.keepAliveTimeout`; a slow call made on such a connection later and a
// quiet event stream are not cut by it. Raw sockets: fetch hides them.
import { expect, test } from "bun:test";
import net from "node:net";
import { withGateway } from "./_helpers.ts";

const SLOW = `import time


class Slow:
    def execute(self, msg):
        time.sleep(msg.get("seconds", 0))
        return {"slept": msg.get("seconds", 0)}
`;

const QUIET = `import time


class Quiet:
    def execute(self, msg):
        yield 1
        time.sleep(msg.get("seconds", 0))
        yield 2
`;

/** A raw HTTP/1.1 connection: its answers' text and when it closed. */
async function connection(url: string) {
  const { hostname, port, host } = new URL(url);
  const socket = net.connect({ host: hostname, port: Number(port) });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  let text = "";
  let onData = () => {};
  socket.on("data", (chunk: Buffer) => {
    text += chunk.toString();
    onData();
  });
  const closed = new Promise<void>((resolve) => socket.once("close", resolve));
  socket.on("error", () => {});
  return {
    socket,
    closed,
    /** Sends a request; resolves with the text once `done(text)` says so. */
    request(head: string, body: string, done: (text: string) => boolean) {
      text = "";
      socket.write(
        `${head}\r\nhost: ${host}\r\ncontent-type: application/json\r\ncontent-length: ${
          Buffer.byteLength(body)
        }\r\n\r\n${body}`,
      );
      return new Promise<string>((resolve, reject) => {
        onData = () => done(text) && resolve(text);
        closed.then(() => reject(new Error(`closed after: ${text}`)));
      });
    },
  };
}

/** Whether `p` settles within `ms`. */
const within = (p: Promise<unknown>, ms: number) =>
  Promise.race([
    p.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), ms)),
  ]);

test(
  "Bun gateway: an idle keep-alive connection is closed after limits.keepAliveTimeout; a slow call on it later and a quiet event stream are not cut",
  async () => {
    await withGateway(
      { "slow.py": SLOW, "quiet.py": QUIET },
      { limits: { keepAliveTimeout: 1000, requestTimeout: 10_000 } },
      async (server) => {
        // A fixed answer on each of two connections, then on one a call
        // slower than the bound (6 s: Bun's timeouts tick every 4 s), on the
        // other a stream quiet for as long between its items, at once: both
        // answered (the bound is the idle connection's, not the request's).
        const ended = (t: string) => t.includes("\r\n\r\n") && t.endsWith("}");
        const c = await connection(server.url);
        const s = await connection(server.url);
        for (const conn of [c, s]) {
          const answer = await conn.request(
            "POST /v1/models/slow/execute HTTP/1.1",
            JSON.stringify({ seconds: 0 }),
            ended,
          );
          expect(answer).toStartWith("HTTP/1.1 200");
        }
        const [answer, events] = await Promise.all([
          c.request(
            "POST /v1/models/slow/execute HTTP/1.1",
            JSON.stringify({ seconds: 6 }),
            ended,
          ),
          s.request(
            "POST /v1/models/quiet/stream HTTP/1.1",
            JSON.stringify({ seconds: 6 }),
            (t) => t.includes("event: end"),
          ),
        ]);
        expect(answer).toStartWith("HTTP/1.1 200");
        expect(answer).toEndWith('{"slept":6}');
        expect(events).toContain("data: 2");
        // Idle now: closed by the gateway (before: open for ever).
        expect(await within(c.closed, 10_000)).toBe(true);
        s.socket.destroy();
      },
    );
  },
  30_000,
);
