/**
 * An HTTP/2 (h2c, prior knowledge) test client on node:http2, which Deno
 * runs: one connection, requests with any pseudo-header (`:authority`),
 * whole responses or Server-Sent Events.
 */
import http2 from "node:http2";
import { SseReader } from "./_gateway_harness.ts";
import { destroyLater } from "./_h2_destroy_later.ts";

/** A response read whole. */
export interface H2Response {
  status: number;
  headers: http2.IncomingHttpHeaders;
  text: string;
}

/** An HTTP/2 connection to the gateway; `close()` it in a `finally`. */
export class H2Client {
  readonly session: http2.ClientHttp2Session;
  readonly #ready: Promise<void>;
  readonly #authority: string | undefined;
  /** `authority`: the `:authority` of its requests (default: `127.0.0.1:<port>`). */
  constructor(port: number, authority?: string) {
    // Its destroy from a timer: the gateway's GOAWAY at its shutdown would
    // otherwise crash the test process (tests/_h2_destroy_later.ts).
    this.session = destroyLater(http2.connect(`http://127.0.0.1:${port}`));
    this.#authority = authority;
    this.#ready = new Promise((resolve, reject) => {
      this.session.once("remoteSettings", () => resolve());
      this.session.once("error", reject);
    });
  }
  /** Resolves with the server's first SETTINGS. */
  ready(): Promise<void> {
    return this.#ready;
  }
  /** Sends one request and reads the whole response. */
  request(
    method: string,
    path: string,
    options: {
      headers?: Record<string, string>;
      body?: string;
      token?: string | undefined;
    } = {},
  ): Promise<H2Response> {
    const stream = this.open(method, path, options);
    return new Promise((resolve, reject) => {
      let headers: http2.IncomingHttpHeaders = {};
      let text = "";
      stream.setEncoding("utf8");
      stream.on("response", (h) => (headers = h));
      stream.on("data", (chunk: string) => (text += chunk));
      stream.on(
        "end",
        () => resolve({ status: Number(headers[":status"]), headers, text }),
      );
      stream.on("error", reject);
    });
  }
  /** Opens a request stream; its body is `options.body`, ended unless `open`. */
  open(
    method: string,
    path: string,
    options: {
      headers?: Record<string, string>;
      body?: string;
      token?: string | undefined;
      open?: boolean;
    } = {},
  ): http2.ClientHttp2Stream {
    const stream = this.session.request({
      ":method": method,
      ":path": path,
      ...(this.#authority === undefined
        ? {}
        : { ":authority": this.#authority }),
      ...(options.token === undefined
        ? {}
        : { authorization: `Bearer ${options.token}` }),
      ...(options.body === undefined
        ? {}
        : { "content-type": "application/json" }),
      ...options.headers,
    }, { endStream: options.body === undefined && !options.open });
    if (options.body !== undefined) {
      if (options.open) stream.write(options.body);
      else stream.end(options.body);
    }
    return stream;
  }
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.session.closed || this.session.destroyed) resolve();
      else this.session.close(() => resolve());
    });
  }
}

/** The events of an SSE response body read off an HTTP/2 stream. */
export function sseOf(stream: http2.ClientHttp2Stream): SseReader {
  let done = false;
  return new SseReader(
    new ReadableStream<Uint8Array>({
      start(controller) {
        stream.on("data", (chunk: Uint8Array) => {
          if (!done) controller.enqueue(chunk);
        });
        stream.on("end", () => {
          if (!done) controller.close();
          done = true;
        });
        stream.on("error", (err) => {
          if (!done) controller.error(err);
          done = true;
        });
      },
      cancel() {
        done = true;
        stream.close(http2.constants.NGHTTP2_CANCEL);
      },
    }),
  );
}

/** Runs `body` with a connection to `port`, closed after. */
export async function withH2<T>(
  port: number,
  authority: string | undefined,
  body: (client: H2Client) => Promise<T>,
): Promise<T> {
  const client = new H2Client(port, authority);
  try {
    await client.ready();
    return await body(client);
  } finally {
    await client.close();
  }
}

/** Reads a request stream's response whole. */
export function readResponse(
  stream: http2.ClientHttp2Stream,
): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    let headers: http2.IncomingHttpHeaders = {};
    let text = "";
    stream.setEncoding("utf8");
    stream.on("response", (h) => (headers = h));
    stream.on("data", (chunk: string) => (text += chunk));
    stream.on(
      "end",
      () => resolve({ status: Number(headers[":status"]), headers, text }),
    );
    stream.on("error", reject);
  });
}
