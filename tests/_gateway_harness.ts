/**
 * Test harness: a real gateway (real Python workers) on port 0 serving a
 * temp copy of the example models plus a few test models.
 */
import { configure, type LogRecord, reset } from "@logtape/logtape";
import {
  type GatewayConfig,
  resolveConfig,
  tokenList,
} from "../src/gateway/config.ts";
import {
  type GatewayServer,
  serve,
  type ServeOptions,
} from "../src/gateway/serve.ts";

export const TEST_MODELS: Record<string, string> = {
  "slow.py": `import time


class Slow:
    """Sleeps msg["seconds"] then answers."""

    def execute(self, msg):
        time.sleep(msg.get("seconds", 1))
        return {"slept": msg.get("seconds", 1)}
`,
  "boom.py": `class Boom:
    def execute(self, msg):
        raise ValueError("bad input: %r" % (msg.get("x"),))
`,
  "waiter.py": `import os
import time


def mark(path, text):
    # Whole or not at all: a test polling the file never reads it empty.
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


class Waiter:
    """Writes msg["started"], waits up to 10 s; writes msg["cancelled"] when interrupted."""

    def execute(self, msg):
        mark(msg["started"], "started")
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)
            return {"waited": True}
        except KeyboardInterrupt:
            mark(msg["cancelled"], "cancelled")
            raise
`,
  "whoami.py": `import os


class WhoAmI:
    def execute(self, msg):
        return {"pid": os.getpid()}
`,
};

/**
 * A temp directory with the example models, the test models and `models`
 * (name → Python source); the caller removes it.
 */
export async function writeModelsDir(
  models: Record<string, string> = {},
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-gw-test-" });
  try {
    for await (
      const e of Deno.readDir(new URL("../examples/models/", import.meta.url))
    ) {
      if (e.name.endsWith(".py")) {
        await Deno.copyFile(
          new URL(`../examples/models/${e.name}`, import.meta.url),
          `${dir}/${e.name}`,
        );
      }
    }
    for (const [name, text] of Object.entries({ ...TEST_MODELS, ...models })) {
      await Deno.writeTextFile(`${dir}/${name}`, text);
    }
    return dir;
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
}

export interface TestGateway extends GatewayServer {
  dir: string;
  /** The gateway's token, if it has one (set, or generated for eval/manage). */
  token: string | undefined;
  fetch(path: string, init?: RequestInit): Promise<Response>;
}

/**
 * Starts a gateway; dispose it with `await using`. `models`: more model
 * files (name → Python source) beside the example and test models;
 * `options`: serve's options besides the configuration. Its close lets
 * calls in flight run 2 s (`limits.shutdownGrace`, unless `overrides`
 * sets it), not the default 10 s.
 */
export async function startGateway(
  overrides: GatewayConfig = {},
  models: Record<string, string> = {},
  options: ServeOptions = {},
): Promise<TestGateway> {
  const dir = await writeModelsDir(models);
  try {
    const config = resolveConfig({
      cwd: dir,
      cli: {
        port: 0,
        workers: 1,
        modelsDir: dir,
        ...overrides,
        // Other limits given keep this one: an override of `limits` (a
        // bodyLimit, a loadTimeout) replaced it, and such a gateway's close
        // waited up to 10 s for a call a test had given up on.
        limits: { shutdownGrace: 2000, ...overrides.limits },
      },
    });
    const server = await serve(config, options);
    // The first of several (rotation).
    const token = tokenList(config.token)[0];
    return Object.assign(server, {
      dir,
      token,
      fetch(path: string, init: RequestInit = {}): Promise<Response> {
        const headers = new Headers(init.headers);
        if (token !== undefined && !headers.has("authorization")) {
          headers.set("authorization", `Bearer ${token}`);
        }
        return fetch(`${server.url}${path}`, { ...init, headers });
      },
      async [Symbol.asyncDispose]() {
        await server.shutdown();
        await Deno.remove(dir, { recursive: true });
      },
    });
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
}

export interface SseMessage {
  event: string;
  id?: string;
  data: unknown;
}

/** Reads Server-Sent Events from a response body, one at a time. */
export class SseReader {
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";
  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.pipeThrough(new TextDecoderStream()).getReader();
  }
  async next(): Promise<SseMessage | undefined> {
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        const msg: SseMessage = { event: "message", data: undefined };
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const i = line.indexOf(": ");
          const field = i < 0 ? line : line.slice(0, i);
          const value = i < 0 ? "" : line.slice(i + 2);
          if (field === "event") msg.event = value;
          else if (field === "id") msg.id = value;
          else if (field === "data") data.push(value);
        }
        if (data.length === 0) continue;
        msg.data = JSON.parse(data.join("\n"));
        return msg;
      }
      const { value, done } = await this.#reader.read();
      if (done) return undefined;
      this.#buffer += value;
    }
  }
  async all(): Promise<SseMessage[]> {
    const out: SseMessage[] = [];
    for (let m = await this.next(); m; m = await this.next()) out.push(m);
    return out;
  }
  cancel(): Promise<void> {
    return this.#reader.cancel().catch(() => {});
  }
}

/**
 * The status of a response whose body the test does not read, the body
 * cancelled (an unread fetch body is a leak to Deno's resource sanitizer).
 */
export async function statusOf(
  response: Response | Promise<Response>,
): Promise<number> {
  const res = await response;
  await res.body?.cancel();
  return res.status;
}

/** Polls `check` until it returns a value (for conditions only observable by polling, e.g. a count in /v1/status). */
export async function until<T>(
  check: () => Promise<T | undefined | false>,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A response read off a raw connection. */
export interface RawResponse {
  status: number;
  headers: Headers;
  /** The body parsed as JSON (the gateway's answers are JSON). */
  body: unknown;
}

/** A request whose body the client has not finished sending. */
export interface PartialRequest extends AsyncDisposable {
  /**
   * The gateway's answer; rejects if the connection closes without one, or
   * if none came within `waitMs` (a test fails instead of hanging).
   */
  response: Promise<RawResponse>;
}

/**
 * Sends the head of a request and only the start of its body (a slow or
 * stalled client), over a raw connection: fetch() sends whole bodies. With
 * `contentLength` the body is declared that long; without it, it is sent
 * chunked and `sent` is the first chunk. The connection stays open until
 * disposed (with `halfClose`, only for reading the answer).
 */
export async function partialRequest(
  gw: GatewayServer & { token?: string | undefined },
  method: string,
  path: string,
  sent: string,
  options: {
    contentLength?: number;
    headers?: Record<string, string>;
    waitMs?: number;
    /** Then close the sending half: the body ends unfinished (a truncated upload). */
    halfClose?: boolean;
  } = {},
): Promise<PartialRequest> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: gw.port });
  const enc = new TextEncoder();
  const head = [
    `${method} ${path} HTTP/1.1`,
    `Host: 127.0.0.1:${gw.port}`,
    options.contentLength === undefined
      ? "Transfer-Encoding: chunked"
      : `Content-Length: ${options.contentLength}`,
    ...(gw.token === undefined ? [] : [`Authorization: Bearer ${gw.token}`]),
    ...Object.entries(options.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
  ].join("\r\n");
  const body = options.contentLength === undefined
    ? `${enc.encode(sent).byteLength.toString(16)}\r\n${sent}\r\n`
    : sent;
  await conn.write(enc.encode(`${head}\r\n\r\n${body}`));
  if (options.halfClose) await conn.closeWrite();
  const waitMs = options.waitMs ?? 15_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch {
      // closed already
    }
  }, waitMs);
  const read = (async (): Promise<RawResponse> => {
    const decoder = new TextDecoder();
    let text = "";
    for await (const chunk of conn.readable) {
      text += decoder.decode(chunk, { stream: true });
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) continue;
      const lines = text.slice(0, end).split("\r\n");
      const headers = new Headers();
      for (const line of lines.slice(1)) {
        const i = line.indexOf(":");
        headers.append(line.slice(0, i), line.slice(i + 1).trim());
      }
      const length = Number(headers.get("content-length"));
      const rest = enc.encode(text.slice(end + 4));
      if (rest.byteLength < length) continue;
      return {
        status: Number(lines[0]!.split(" ")[1]),
        headers,
        body: JSON.parse(decoder.decode(rest.subarray(0, length))),
      };
    }
    throw new Error(`connection closed without a response: ${text}`);
  })();
  const response = read.catch((err) => {
    throw timedOut
      ? new Error(`no response to ${method} ${path} within ${waitMs} ms`)
      : err;
  }).finally(() => clearTimeout(timer));
  response.catch(() => {}); // awaited by the test, or dropped with the connection
  return {
    response,
    async [Symbol.asyncDispose]() {
      try {
        conn.close();
      } catch {
        // closed already
      }
      await response.catch(() => {});
    },
  };
}

/**
 * Writes `sticky.py` into `dir`: a model (class `Sticky`, an echo) whose
 * `__init__` hangs for 60 s while the returned flag file exists. Create the
 * flag after adding it, and its next load (a restart's replay, a new
 * worker's) hangs.
 */
export async function writeStickyModel(dir: string): Promise<string> {
  const flag = `${dir}/hang-on-load`;
  await Deno.writeTextFile(
    `${dir}/sticky.py`,
    `import os
import time


class Sticky:
    def __init__(self, options=None):
        if os.path.exists(${JSON.stringify(flag)}):
            time.sleep(60)

    def execute(self, msg):
        return msg
`,
  );
  return flag;
}

/** A `serve` process of this checkout, listening (see {@linkcode spawnServe}). */
export interface ServeProcess {
  /** The process (stdout is read through `lines`). */
  child: Deno.ChildProcess;
  /** Its port on 127.0.0.1. */
  port: number;
  /** Its whole stderr, once it exits. */
  stderr: Promise<string>;
  /** The rest of its stdout (cancel it when done). */
  lines: ReadableStreamDefaultReader<string>;
  /** The stdout read so far: its first line, and maybe more. */
  banner: string;
}

/**
 * Starts `deno run -A mod.ts serve --port 0 --workers 2 --models <dir>`
 * (and `extraArgs`) as a process and resolves once its first stdout line names its port; the
 * caller kills it (`child.kill`) and awaits `child.status` and `stderr`.
 * A start that names no port kills the process and throws.
 */
export async function spawnServe(
  dir: string,
  extraArgs: string[] = [],
): Promise<ServeProcess> {
  const mod = new URL("../mod.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      mod,
      "serve",
      "--port",
      "0",
      "--workers",
      "2",
      "--models",
      dir,
      "--log-level",
      "warning",
      ...extraArgs,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) break;
    first += value;
  }
  const port = Number(
    /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(first)?.[1],
  );
  if (!(port > 0)) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await child.status;
    throw new Error(
      `no port in the first stdout line: ${
        JSON.stringify(first)
      }; stderr: ${await stderr}`,
    );
  }
  return { child, port, stderr, lines, banner: first };
}

/**
 * Runs `run` with the gateway's and the models' log records (the `pyproxy`
 * category, from `lowestLevel` up) kept in `records`; LogTape is reset after.
 */
export async function withLogs(
  run: (records: LogRecord[]) => Promise<void>,
  lowestLevel: "debug" | "info" = "debug",
): Promise<void> {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { test: (record: LogRecord) => void records.push(record) },
    loggers: [
      { category: ["pyproxy"], lowestLevel, sinks: ["test"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    await run(records);
  } finally {
    await reset();
  }
}
