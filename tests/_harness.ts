/**
 * Shared test harness: real Python servers on real sockets.
 *
 * - `startServer(options?)` starts `python3 -m pyproxy_server` on port 0 with a
 *   fresh temp `--path` (deleted on dispose) and returns the
 *   {@linkcode PythonServer} with an extra `dir` field. Dispose it with
 *   `await using` (kills the process, waits for it, removes the dir). Pass
 *   `files: { "doubler.py": DOUBLER }` to write model files first, and any
 *   `PythonServerOptions` (`unix: true` puts a socket in the dir).
 * - `tempDir(prefix?)`: an `await using`-disposable temp directory.
 * - `writeFiles(dir, files)`: writes `{ relative path: text }`.
 * - `pidAlive(pid)`: whether a process runs (zombies count as dead).
 * - `waitFor(predicate, options?)`: polls until true, or throws after a
 *   deadline (for things with no event to await, such as a foreign pid's exit).
 * - `encodeFrame(message, tweak?)`: one frame as bytes, with knobs to break
 *   the marker, version, checksum, trailer or length.
 * - `rawConnect(target)`: a raw socket speaking frames, for sending arbitrary
 *   bytes and reading the decoded replies (`write`, `send`, `read`,
 *   `readUntil`, `authenticate`); `await using`-disposable.
 * - `recordingLogger()`: a `Logger` that keeps every record, for assertions.
 * - Model sources: `DOUBLER`, `SLEEPER`, `RAISER`, `HOST_CALLER`.
 *
 * @example
 * ```ts ignore
 * import { DOUBLER, startServer } from "./_harness.ts";
 * await using server = await startServer({ files: { "doubler.py": DOUBLER } });
 * await using session = await server.connect();
 * await session.addModel("doubler", { file: "doubler.py" });
 * ```
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import type { Logger } from "../src/logger.ts";
import { FrameError } from "../src/errors.ts";
import {
  FrameDecoderStream,
  HEADER_SIZE,
  JsonDecoderStream,
  md5,
  Md5VerifierStream,
  TRAILER_SIZE,
} from "../src/protocol/mod.ts";
import {
  PythonServer,
  type PythonServerOptions,
} from "../src/python_server.ts";

/** A model that doubles `msg.x` (times `options.k`, default 2). */
export const DOUBLER = `
class Doubler:
    """Multiplies x."""
    inputs = {"x": "number"}
    outputs = {"y": "number"}

    def __init__(self, options):
        self.k = options.get("k", 2)

    def execute(self, msg):
        return {"y": msg["x"] * self.k}
`;

/** A model that sleeps `msg.seconds` (in small steps, so it can be interrupted) and returns `{slept}`. */
export const SLEEPER = `
import time

class Model:
    def execute(self, msg):
        end = time.monotonic() + msg.get("seconds", 10)
        while time.monotonic() < end:
            time.sleep(0.01)
        return {"slept": msg.get("seconds", 10)}
`;

/** A model that raises `ValueError(msg.text)`. */
export const RAISER = `
class Model:
    def execute(self, msg):
        raise ValueError(msg.get("text", "boom"))
`;

/** A model that calls the host command `msg.cmd` with `msg.args` and returns `{result}`. */
export const HOST_CALLER = `
from pyproxy import host

class Model:
    def execute(self, msg):
        return {"result": host.call(msg["cmd"], msg.get("args"), timeout=10)}
`;

/** One record of a {@linkcode recordingLogger}: level, message, properties. */
export type LogEntry = [string, string, Record<string, unknown> | undefined];

/** A `Logger` that keeps every record it is given, in order. */
export function recordingLogger(): { logger: Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at =
    (level: string) => (message: string, props?: Record<string, unknown>) =>
      void entries.push([level, message, props]);
  return {
    entries,
    logger: {
      trace: at("trace"),
      debug: at("debug"),
      info: at("info"),
      warn: at("warn"),
      error: at("error"),
      fatal: at("fatal"),
    },
  };
}

/** Options of {@linkcode startServer}. */
export interface StartServerOptions
  extends Partial<Omit<PythonServerOptions, "unix">> {
  /** Files to write into the server's directory before it starts (`{ "m.py": source }`). */
  files?: Record<string, string>;
  /** `true`: listen on a Unix socket inside the directory too; a string: on that path. */
  unix?: boolean | string;
}

/** A started test server: the {@linkcode PythonServer} plus its directory. */
export type TestServer = PythonServer & { readonly dir: string };

/** An `await using`-disposable temp directory. */
export interface TempDir extends AsyncDisposable {
  /** Its absolute path. */
  readonly path: string;
}

/** Creates a temp directory that is removed (recursively) on dispose. */
export async function tempDir(prefix = "pyproxy-test-"): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Writes `{ relative path: text }` under `dir`, creating subdirectories. */
export async function writeFiles(
  dir: string,
  files: Record<string, string>,
): Promise<void> {
  for (const [name, text] of Object.entries(files)) {
    const path = `${dir}/${name}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(path, text);
  }
}

/**
 * Starts a real Python server on port 0 with a fresh temp `--path`. Disposing
 * it kills the process (SIGTERM, then SIGKILL), waits for it and removes the
 * directory.
 */
export async function startServer(
  options: StartServerOptions = {},
): Promise<TestServer> {
  const { files, unix, ...rest } = options;
  const dir = options.path ??
    await Deno.makeTempDir({ prefix: "pyproxy-test-" });
  const ownsDir = options.path === undefined;
  const cleanup = async (): Promise<void> => {
    if (ownsDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  let server: PythonServer;
  try {
    if (files) await writeFiles(dir, files);
    const unixPath = unix === true
      ? `${dir}/server.sock`
      : typeof unix === "string"
      ? unix
      : undefined;
    server = await PythonServer.start({
      readyTimeout: 20_000,
      ...rest,
      path: dir,
      // TCP unless asked (the library's default is a Unix socket).
      ...(unixPath === undefined
        ? { port: rest.port ?? 0 }
        : { unix: unixPath }),
    });
  } catch (err) {
    await cleanup();
    throw err;
  }
  const dispose = server[Symbol.asyncDispose].bind(server);
  Object.defineProperty(server, "dir", { value: dir, enumerable: true });
  Object.defineProperty(server, Symbol.asyncDispose, {
    value: async () => {
      try {
        await dispose();
      } finally {
        await cleanup();
      }
    },
  });
  return server as TestServer;
}

/** Whether process `pid` exists and is not a zombie. */
export function pidAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // "pid (comm) S ...": the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !==
      "Z";
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    return new Deno.Command("kill", {
      args: ["-0", String(pid)],
      stderr: "null",
    }).outputSync().success;
  }
}

/** Linux's number for the `SCHED_BATCH` scheduling policy. */
export const SCHED_BATCH = 3;

/**
 * The scheduling policy of every thread of `pid` (field 41 of
 * `/proc/<pid>/task/<tid>/stat`), or `undefined` without `/proc`.
 */
export function schedPolicies(pid: number | "self"): number[] | undefined {
  let tids: string[];
  try {
    tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
  } catch {
    return undefined;
  }
  return tids.map((tid) => {
    const stat = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/stat`);
    // Fields after "pid (comm)" start at field 3.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[41 - 3]);
  });
}

/** Polls `predicate` until it is true; throws after `timeout` ms. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  options: { timeout?: number; interval?: number; message?: string } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeout ?? 10_000);
  while (!(await predicate())) {
    if (Date.now() > deadline) {
      throw new Error(
        `waitFor: ${options.message ?? "condition not met"} within ${
          options.timeout ?? 10_000
        } ms`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, options.interval ?? 20));
  }
}

/** Knobs of {@linkcode encodeFrame} to produce broken frames. */
export interface FrameTweak {
  /** Replaces `PYPX`. */
  marker?: string;
  /** Replaces the version byte. */
  version?: number;
  /** Replaces the header checksum (and, unless `trailer` is given, the end marker). */
  checksum?: Uint8Array;
  /** Replaces the end marker. */
  trailer?: Uint8Array;
  /** Replaces the length field. */
  length?: number;
}

/** One frame as bytes: a message object, JSON text or raw payload bytes. */
export function encodeFrame(
  message: object | string | Uint8Array,
  tweak: FrameTweak = {},
): Uint8Array {
  const payload = message instanceof Uint8Array
    ? message
    : new TextEncoder().encode(
      typeof message === "string" ? message : JSON.stringify(message),
    );
  const sum = tweak.checksum ?? md5(payload);
  const out = new Uint8Array(HEADER_SIZE + payload.length + TRAILER_SIZE);
  out.set(new TextEncoder().encode(tweak.marker ?? "PYPX").subarray(0, 4), 0);
  out[4] = tweak.version ?? 1;
  out.set(sum, 5);
  new DataView(out.buffer).setUint32(21, tweak.length ?? payload.length);
  out.set(payload, HEADER_SIZE);
  out.set(tweak.trailer ?? sum, HEADER_SIZE + payload.length);
  return out;
}

/** A decoded incoming item: a message, or a `ChecksumError`/`ProtocolError`. */
export type RawItem = Record<string, unknown> | Error;

/** A raw framed connection (see {@linkcode rawConnect}). */
export interface RawConnection extends AsyncDisposable {
  /** Writes raw bytes. */
  write(bytes: Uint8Array): Promise<void>;
  /** Writes each message as one frame (all in one write). */
  send(...messages: Array<object | string>): Promise<void>;
  /** The next decoded item; `undefined` when the server closed the connection; rejects with `FrameError` on bad bytes. */
  read(): Promise<RawItem | undefined>;
  /** Reads until an item matches; rejects when the connection ends first. */
  readUntil(predicate: (item: RawItem) => boolean): Promise<RawItem>;
  /** Reads the hello event and authenticates with `secret`; returns the auth reply. */
  authenticate(secret: string): Promise<Record<string, unknown>>;
  /** Closes the socket (idempotent). */
  close(): void;
}

/** A socket's bytes as batches of decoded messages (frame → MD5 → JSON), as the host reads them. */
export function decodedMessages(
  readable: ReadableStream<Uint8Array>,
): ReadableStream<RawItem[]> {
  return readable
    .pipeThrough(new FrameDecoderStream())
    .pipeThrough(new Md5VerifierStream())
    .pipeThrough(new JsonDecoderStream());
}

/** Opens a raw socket to a server (or `{port}` / `{path}`). */
export async function rawConnect(
  target: PythonServer | { port: number; hostname?: string } | { path: string },
): Promise<RawConnection> {
  const conn = target instanceof PythonServer
    ? await Deno.connect({ hostname: "127.0.0.1", port: target.port })
    : "path" in target
    ? await Deno.connect({ transport: "unix", path: target.path })
    : await Deno.connect({
      hostname: target.hostname ?? "127.0.0.1",
      port: target.port,
    });
  const writer = conn.writable.getWriter();
  const reader = decodedMessages(conn.readable).getReader();
  const buffered: RawItem[] = [];
  let closed = false;
  const read = async (): Promise<RawItem | undefined> => {
    while (buffered.length === 0) {
      const { value, done } = await reader.read();
      if (done) return undefined;
      buffered.push(...value);
    }
    return buffered.shift();
  };
  const raw: RawConnection = {
    write: (bytes) => writer.write(bytes),
    send: (...messages) => {
      const frames = messages.map((m) => encodeFrame(m));
      const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
      let pos = 0;
      for (const f of frames) {
        all.set(f, pos);
        pos += f.length;
      }
      return writer.write(all);
    },
    read,
    async readUntil(predicate) {
      for (;;) {
        const item = await read();
        if (item === undefined) {
          throw new FrameError(
            "rawConnect: the connection ended before the expected message",
          );
        }
        if (predicate(item)) return item;
      }
    },
    async authenticate(secret) {
      const hello = await raw.readUntil((m) =>
        !(m instanceof Error) && m.event === "hello"
      ) as Record<string, unknown>;
      const mac = createHmac("sha256", secret).update(String(hello.nonce))
        .digest("hex");
      await raw.send({ id: 1, cmd: "auth", mac });
      return await raw.readUntil((m) =>
        !(m instanceof Error) && m.id === 1
      ) as Record<string, unknown>;
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
    async [Symbol.asyncDispose]() {
      raw.close();
      await reader.cancel().catch(() => {});
      writer.releaseLock();
    },
  };
  return raw;
}

/**
 * Runs `deno check <args>` from the checkout's root and fails with deno's
 * report (its type errors and where, without colour codes) unless it passes.
 */
export async function assertDenoChecks(args: string[]): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["check", ...args],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  assert.equal(
    out.code,
    0,
    // deno-lint-ignore no-control-regex
    text.replace(/\x1b\[[0-9;]*m/g, "").split("\n").filter((l) =>
      /TS\d+|at file:|error/.test(l)
    ).join("\n"),
  );
}
