/**
 * A small HTTP/1.1 load generator, used when `wrk` is not installed. Each of
 * N connections sends one keep-alive POST at a time (closed loop, like wrk)
 * for a fixed duration or request count, and records every latency.
 *
 *     deno run -A bench/load.ts --url http://127.0.0.1:8000/v1/models/echo/execute \
 *       --connections 32 --duration 3 --body '{"x":1}'
 *
 * Prints one line: `LOAD_JSON {"requests", "seconds", "req/s", "p50 ms", "p99 ms", "errors", "non2xx"}`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { LatencyRecorder } from "./stats.ts";

/** Options for {@linkcode runLoad}. */
export interface LoadOptions {
  /** Target URL (http only). */
  url: string;
  /** Concurrent keep-alive connections. */
  connections: number;
  /** Run for this many seconds (unless `requests` is set). */
  duration?: number;
  /** Stop after this many requests in total. */
  requests?: number;
  /** JSON body to POST. */
  body: string;
}

/** What {@linkcode runLoad} measured. */
export interface LoadResult {
  /** Completed requests. */
  requests: number;
  /** Wall time in seconds. */
  seconds: number;
  /** Throughput. */
  "req/s": number;
  /** Median latency. */
  "p50 ms": number;
  /** 99th percentile latency. */
  "p99 ms": number;
  /** Connection errors. */
  errors: number;
  /** Responses with a status other than 2xx. */
  non2xx: number;
}

const CRLF2 = new Uint8Array([13, 10, 13, 10]);

function indexOfSeq(
  buf: Uint8Array,
  seq: Uint8Array,
  from: number,
  to: number,
): number {
  outer: for (let i = from; i <= to - seq.length; i++) {
    for (let j = 0; j < seq.length; j++) {
      if (buf[i + j] !== seq[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/** One keep-alive connection that reads whole responses (Content-Length or chunked). */
class HttpConnection {
  readonly #conn: Deno.TcpConn;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  #buf: Uint8Array = new Uint8Array(0);
  readonly #decoder = new TextDecoder();

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#reader = conn.readable.getReader();
    this.#writer = conn.writable.getWriter();
  }

  async roundTrip(request: Uint8Array): Promise<number> {
    await this.#writer.write(request);
    let headEnd = indexOfSeq(this.#buf, CRLF2, 0, this.#buf.length);
    while (headEnd === -1) {
      await this.#fill();
      headEnd = indexOfSeq(
        this.#buf,
        CRLF2,
        Math.max(0, this.#buf.length - 4096),
        this.#buf.length,
      );
    }
    const head = this.#decoder.decode(this.#buf.subarray(0, headEnd))
      .toLowerCase();
    const status = Number(head.slice(9, 12));
    let rest = headEnd + 4;
    const cl = /\r\ncontent-length:\s*(\d+)/.exec(head);
    if (cl) {
      const end = rest + Number(cl[1]);
      while (this.#buf.length < end) await this.#fill();
      this.#buf = this.#buf.subarray(end);
    } else if (/\r\ntransfer-encoding:\s*chunked/.test(head)) {
      for (;;) {
        let lineEnd = indexOfSeq(
          this.#buf,
          CRLF2.subarray(0, 2),
          rest,
          this.#buf.length,
        );
        while (lineEnd === -1) {
          await this.#fill();
          lineEnd = indexOfSeq(
            this.#buf,
            CRLF2.subarray(0, 2),
            rest,
            this.#buf.length,
          );
        }
        const size = parseInt(
          this.#decoder.decode(this.#buf.subarray(rest, lineEnd)),
          16,
        );
        const end = lineEnd + 2 + size + 2;
        while (this.#buf.length < end) await this.#fill();
        rest = end;
        if (size === 0) break;
      }
      this.#buf = this.#buf.subarray(rest);
    } else {
      throw new Error(
        "Cannot read response: neither content-length nor chunked",
      );
    }
    return status;
  }

  async #fill(): Promise<void> {
    const { value, done } = await this.#reader.read();
    if (done) throw new Error("Cannot read response: connection closed");
    if (this.#buf.length === 0) {
      this.#buf = value;
      return;
    }
    const merged = new Uint8Array(this.#buf.length + value.length);
    merged.set(this.#buf);
    merged.set(value, this.#buf.length);
    this.#buf = merged;
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}

/**
 * Runs the load and returns throughput and latency percentiles.
 *
 * @example
 * ```ts ignore
 * const r = await runLoad({ url, connections: 32, duration: 3, body: '{"x":1}' });
 * console.log(r["req/s"]);
 * ```
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const url = new URL(options.url);
  const body = new TextEncoder().encode(options.body);
  const request = new TextEncoder().encode(
    `POST ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\n\r\n${options.body}`,
  );
  const rec = new LatencyRecorder();
  let errors = 0;
  let non2xx = 0;
  let budget = options.requests ?? Infinity;
  const start = performance.now();
  const deadline = options.duration === undefined
    ? Infinity
    : start + options.duration * 1000;
  const lane = async (): Promise<void> => {
    let conn: HttpConnection | undefined;
    try {
      while (budget > 0 && performance.now() < deadline) {
        budget--;
        try {
          conn ??= new HttpConnection(
            await Deno.connect({
              hostname: url.hostname,
              port: Number(url.port || 80),
            }),
          );
          const t = performance.now();
          const status = await conn.roundTrip(request);
          rec.add(performance.now() - t);
          if (status < 200 || status > 299) non2xx++;
        } catch {
          errors++;
          conn?.close();
          conn = undefined;
        }
      }
    } finally {
      conn?.close();
    }
  };
  await Promise.all(Array.from({ length: options.connections }, lane));
  const seconds = (performance.now() - start) / 1000;
  return {
    requests: rec.count,
    seconds,
    "req/s": rec.count / seconds,
    "p50 ms": rec.percentile(50),
    "p99 ms": rec.percentile(99),
    errors,
    non2xx,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      url: { type: "string" },
      connections: { type: "string", default: "32" },
      duration: { type: "string" },
      requests: { type: "string" },
      body: { type: "string", default: "{}" },
    },
  });
  if (values.url === undefined) {
    console.error(
      "usage: deno run -A bench/load.ts --url URL [--connections 32] [--duration 3 | --requests N] [--body JSON]",
    );
    Deno.exit(2);
  }
  const result = await runLoad({
    url: values.url,
    connections: Number(values.connections),
    ...(values.duration === undefined && values.requests === undefined
      ? { duration: 3 }
      : {}),
    ...(values.duration === undefined
      ? {}
      : { duration: Number(values.duration) }),
    ...(values.requests === undefined
      ? {}
      : { requests: Number(values.requests) }),
    body: values.body ?? "{}",
  });
  console.log(`LOAD_JSON ${JSON.stringify(result)}`);
}
