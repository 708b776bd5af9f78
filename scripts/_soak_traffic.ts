// The soak's client requests to the gateway, over HTTP (and raw TCP for the
// clients that misbehave). Each returns its outcome as a string for the
// ledger (scripts/_soak_ledger.ts); the pool's are in _soak_pool_ops.ts.
import { allow, type Ledger } from "./_soak_ledger.ts";

/** Where the gateway is and how to authenticate. */
export interface Target {
  url: string;
  port: number;
  token: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pick = <T>(xs: readonly T[]): T =>
  xs[Math.floor(Math.random() * xs.length)]!;

let requestIds = 0;
function headers(t: Target, extra: Record<string, string> = {}) {
  // A new request id each time: nothing may be kept per id.
  return {
    authorization: `Bearer ${t.token}`,
    "x-request-id": `soak-${requestIds++}`,
    ...extra,
  };
}

async function post(
  t: Target,
  path: string,
  body: unknown,
  signal: AbortSignal,
): Promise<Response> {
  return await fetch(`${t.url}${path}`, {
    method: "POST",
    headers: headers(t, { "content-type": "application/json" }),
    body: JSON.stringify(body),
    signal,
  });
}

/** Status, and for an error the error's type: "200", "504:TimeoutError". */
async function statusOf(res: Response, check?: (v: unknown) => boolean) {
  const text = await res.text();
  if (res.status !== 200) {
    try {
      return `${res.status}:${JSON.parse(text).error?.type}`;
    } catch {
      return `${res.status}:?`;
    }
  }
  if (check && !check(JSON.parse(text))) return `200:wrong-result`;
  return "200";
}

/** One Server-Sent Event. */
interface Sse {
  event: string;
  data: string;
}

/** Reads SSE events; `onEvent` returns false to stop reading (the body is cancelled). */
async function readSse(
  res: Response,
  onEvent: (ev: Sse) => boolean | Promise<boolean>,
): Promise<void> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let end: number;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const ev: Sse = { event: "message", data: "" };
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) ev.event = line.slice(7);
          else if (line.startsWith("data: ")) ev.data += line.slice(6);
        }
        if (!(await onEvent(ev))) return;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** Terminal events of a stream, and a check that there is exactly one. */
class Terminal {
  seen: string[] = [];
  itemsAfter = 0;
  add(ev: Sse): boolean {
    if (ev.event === "end") this.seen.push("end");
    else if (ev.event === "error" || ev.event === "result") {
      let status = "?";
      try {
        const d = JSON.parse(ev.data);
        status = String(d.error?.type ?? d.type ?? d.status ?? "?");
      } catch { /* kept as ? */ }
      this.seen.push(ev.event === "result" ? "result" : `error:${status}`);
    } else if (this.seen.length > 0) this.itemsAfter++;
    return true;
  }
  outcome(): string {
    if (this.seen.length === 0) return "no-terminal-event";
    if (this.seen.length > 1 || this.itemsAfter > 0) {
      return `violation:${this.seen.join("+")}+${this.itemsAfter}`;
    }
    return this.seen[0]!;
  }
}

const HTTP_OK = allow("200", "502:*", "503:*", "504:*", "429:*");
const STREAM_OK = allow(
  "end",
  "result",
  "error:WorkerCrashedError",
  "error:ShuttingDownError",
  "error:TimeoutError",
  "error:StreamIdleError",
  "error:NoWorkerError",
  "502:*",
  "503:*",
  "504:*",
  "429:*",
);

/** A raw TCP exchange: writes `head`, optionally reads the first bytes, holds, closes. */
async function rawTcp(
  t: Target,
  head: string,
  opts: { readFirst: boolean; holdMs: number; signal: AbortSignal },
): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  try {
    await conn.write(new TextEncoder().encode(head));
    let first = "";
    if (opts.readFirst) {
      const buf = new Uint8Array(4096);
      const n = await conn.read(buf);
      first = new TextDecoder().decode(buf.subarray(0, n ?? 0));
    }
    // Never reads again: the server's writes pile up in the socket.
    await Promise.race([
      sleep(opts.holdMs),
      new Promise((r) => opts.signal.addEventListener("abort", r)),
    ]);
    return first.split("\r\n")[0]?.split(" ")[1] ?? "sent";
  } finally {
    conn.close();
  }
}

/** A request kind: [weight, name, allowed outcomes, the request]. */
export type OpKind = [
  number,
  string,
  (outcome: string) => boolean,
  (signal: AbortSignal) => Promise<string>,
];

/** The gateway's request kinds. */
export function gatewayOps(t: Target): OpKind[] {
  let i = 0;
  return [
    [10, "execute echo", HTTP_OK, async (s) => {
      const n = i++;
      return await statusOf(
        await post(t, "/v1/models/echo/execute", { n }, s),
        (v) => (v as { n: number }).n === n,
      );
    }],
    [6, "execute batcher", HTTP_OK, async (s) => {
      const x = i++;
      return await statusOf(
        await post(t, "/v1/models/batcher/execute", { x }, s),
        (v) => (v as { y: number }).y === 2 * x,
      );
    }],
    [5, "execute cache_counter", HTTP_OK, async (s) =>
      await statusOf(
        // A new key each time (kept 30 s in the shared cache), and routed by
        // a new ?key= each time: nothing may be kept per key.
        await post(t, `/v1/models/cache_counter/execute?key=k${i}`, {
          key: String(i++),
        }, s),
      )],
    [2, "execute publisher", HTTP_OK, async (s) =>
      await statusOf(
        await post(t, "/v1/models/publisher/execute", { size: 2000 }, s),
      )],
    [
      3,
      "execute slow, timing out",
      allow("504:TimeoutError", "502:*", "503:*"),
      async (s) =>
        await statusOf(
          await post(
            t,
            "/v1/models/slow/execute?timeout=300",
            { seconds: 2 },
            s,
          ),
        ),
    ],
    [
      3,
      "execute slow, client gone",
      allow("aborted", "502:*", "503:*"),
      async (s) => {
        const ac = new AbortController();
        s.addEventListener("abort", () => ac.abort());
        setTimeout(() => ac.abort(), 50 + Math.random() * 300);
        try {
          const res = await post(
            t,
            "/v1/models/slow/execute",
            { seconds: 2 },
            ac.signal,
          );
          return await statusOf(res);
        } catch (err) {
          if (ac.signal.aborted && !s.aborted) return "aborted";
          throw err;
        }
      },
    ],
    [3, "execute big result (spilled)", HTTP_OK, async (s) => {
      const n = 1_500_000 + Math.floor(Math.random() * 1_000_000);
      return await statusOf(
        await post(t, "/v1/models/big/execute", { n }, s),
        (v) => (v as { data: string }).data.length === n,
      );
    }],
    [
      2,
      "execute big result, abandoned",
      allow("abandoned", "502:*", "503:*", "504:*"),
      async (s) => {
        const res = await post(
          t,
          "/v1/models/big/execute",
          { n: 3_000_000 },
          s,
        );
        if (res.status !== 200) return await statusOf(res);
        const reader = res.body!.getReader();
        await reader.read();
        await reader.cancel();
        return "abandoned";
      },
    ],
    [5, "stream, read to the end", STREAM_OK, async (s) => {
      const res = await post(t, "/v1/models/tokens/stream", { n: 30 }, s);
      if (res.status !== 200) return await statusOf(res);
      const term = new Terminal();
      let items = 0;
      await readSse(res, (ev) => {
        if (ev.event === "item") items++;
        return term.add(ev);
      });
      const o = term.outcome();
      return o === "end" && items !== 30 ? `end-after-${items}` : o;
    }],
    [
      3,
      "stream, abandoned",
      (o) => o === "abandoned" || STREAM_OK(o),
      async (s) => {
        const res = await post(t, "/v1/models/tokens/stream", {
          n: 200,
          delay: 0.005,
        }, s);
        if (res.status !== 200) return await statusOf(res);
        let items = 0;
        const term = new Terminal();
        await readSse(res, (ev) => {
          term.add(ev);
          return ev.event === "item" && ++items < 3;
        });
        return term.seen.length ? term.outcome() : "abandoned";
      },
    ],
    [1, "stream, reader stalls", STREAM_OK, async (s) => {
      // ~8 MB of items: more than the sockets hold, so the stall shows.
      const res = await post(t, "/v1/models/tokens/stream", {
        n: 2000,
        size: 4000,
      }, s);
      if (res.status !== 200) return await statusOf(res);
      const term = new Terminal();
      let first = true;
      await readSse(res, async (ev) => {
        if (first) {
          first = false;
          await sleep(6000); // past the gateway's --stream-idle-timeout
        }
        return term.add(ev);
      });
      return term.outcome();
    }],
    [
      2,
      "subscribe SSE, stops reading",
      allow("dropped", "stalled", "503:*"),
      async (s) => {
        const res = await fetch(`${t.url}/v1/channels/soak`, {
          headers: headers(t),
          signal: s,
        });
        if (res.status !== 200) return await statusOf(res);
        let n = 0;
        let outcome = "stalled";
        const deadline = performance.now() + 15_000;
        await readSse(res, async (ev) => {
          if (ev.event === "dropped") {
            outcome = "dropped";
            return false;
          }
          if (++n === 2) await sleep(8000);
          return performance.now() < deadline;
        });
        return outcome;
      },
    ],
    [1, "subscribe WebSocket, never reads", allow("101"), async (s) => {
      const key = btoa(String(Math.random()).slice(0, 16));
      return await rawTcp(
        t,
        `GET /v1/channels/soak HTTP/1.1\r\nHost: 127.0.0.1:${t.port}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pyproxy.v1, pyproxy.bearer.${t.token}\r\n\r\n`,
        { readFirst: true, holdMs: 6000, signal: s },
      );
    }],
    [2, "client gone mid-body", allow("sent"), async (s) =>
      await rawTcp(
        t,
        `POST /v1/models/echo/execute HTTP/1.1\r\nHost: 127.0.0.1:${t.port}\r\n` +
          `Authorization: Bearer ${t.token}\r\nContent-Type: application/json\r\n` +
          `Content-Length: 5000\r\n\r\n{"pad": "${"z".repeat(1000)}`,
        { readFirst: false, holdMs: 50, signal: s },
      )],
    [
      3,
      "eval, small",
      allow(
        "result",
        "error:WorkerCrashedError",
        "error:ShuttingDownError",
        "503:*",
      ),
      async (s) => {
        const res = await post(t, "/v1/eval", {
          code: "for i in range(5): print(i)\nx * 2",
          locals: { x: 21 },
        }, s);
        if (res.status !== 200) return await statusOf(res);
        const term = new Terminal();
        await readSse(res, (ev) => term.add(ev));
        return term.outcome();
      },
    ],
    [
      2,
      "eval printing a lot, client gone",
      allow("abandoned", "result", "error", "503:*"),
      async (s) => {
        const res = await post(t, "/v1/eval", {
          code:
            "import time\nend = time.monotonic() + 2\nwhile time.monotonic() < end:\n    print('x' * 100)",
          timeout: 4000,
        }, s);
        if (res.status !== 200) return await statusOf(res);
        let outcome = "abandoned";
        await readSse(res, (ev) => {
          if (ev.event === "result" || ev.event === "error") outcome = ev.event;
          return ev.event !== "output";
        });
        return outcome;
      },
    ],
    [
      2,
      "eval timing out",
      allow(
        "error:TimeoutError",
        "error:WorkerCrashedError",
        "error:ShuttingDownError",
        "503:*",
      ),
      async (s) => {
        const res = await post(t, "/v1/eval", {
          code: "import time\nwhile True:\n    time.sleep(0.05)",
          timeout: 300 + Math.floor(Math.random() * 500),
        }, s);
        if (res.status !== 200) return await statusOf(res);
        const term = new Terminal();
        await readSse(res, (ev) => term.add(ev));
        return term.outcome();
      },
    ],
    [
      1,
      "status",
      allow("200"),
      async (s) =>
        await statusOf(
          await fetch(`${t.url}/v1/status`, { headers: headers(t), signal: s }),
        ),
    ],
  ];
}

/** Runs weighted random requests from `ops` until `stop()` says so. */
export async function clientLoop(
  ledger: Ledger,
  ops: OpKind[],
  stop: () => boolean,
  gapMs = 5,
): Promise<void> {
  const total = ops.reduce((a, [w]) => a + w, 0);
  while (!stop()) {
    let r = Math.random() * total;
    const op = ops.find(([w]) => (r -= w) < 0) ?? ops[0]!;
    await ledger.run(op[1], op[2], op[3]);
    if (gapMs > 0) await sleep(Math.random() * gapMs);
  }
}

export { pick, sleep };
