/**
 * The Bun implementation of {@linkcode Runtime}: `node:net` sockets,
 * `Bun.spawn`, `Bun.serve`, `node:fs/promises`, `node:process`, `node:os`.
 *
 * Importing this module is safe on any runtime (Deno type-checks and loads it);
 * only calling {@linkcode bunRuntime} needs Bun.
 *
 * @module
 */
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  rmdir,
  stat,
  writeFile,
} from "node:fs/promises";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import process from "node:process";
import { isatty } from "node:tty";
import { unsetNames } from "./_unset_env.ts";
import { freeBytes } from "./_free_bytes.ts";
import {
  type BunServerWebSocket,
  BunWebSocketUpgrades,
} from "./bun_websocket.ts";
import { connectNodeSocket } from "./node_connection.ts";
import { seeingFullQueues } from "./_unix_queue_full.ts";
import { AdoptedGroup } from "./_adopted_group.ts";
import { readRegularFile } from "./_read_regular_file.ts";
import type {
  ChildProcess,
  FetchHandler,
  HttpServer,
  Runtime,
  SpawnOptions,
} from "./types.ts";

// The few Bun APIs we use, typed locally so that `deno check` needs no Bun types.
interface BunFileSink {
  write(chunk: Uint8Array): number | Promise<number>;
  flush(): number | Promise<number>;
  end(): number | Promise<number>;
}
interface BunSubprocess {
  readonly pid: number;
  readonly stdin: BunFileSink;
  readonly stdout: ReadableStream<Uint8Array>;
  readonly stderr: ReadableStream<Uint8Array>;
  readonly exited: Promise<number>;
  readonly exitCode: number | null;
  readonly signalCode: string | null;
  kill(signal?: string): void;
}
interface BunServer {
  readonly port: number;
  readonly hostname: string;
  /** The bound address (Bun ≥ 1.1.x; `hostname` is the name asked for). */
  readonly address?: { address: string } | null;
  readonly pendingRequests: number;
  readonly pendingWebSockets: number;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
  requestIP(request: Request): { address: string } | null;
  /**
   * Sets the idle timeout of `request`'s connection, in seconds (0: none);
   * missing in older Bun versions (the connection then stays open, as before).
   */
  timeout?(request: Request, seconds: number): void;
  upgrade(
    request: Request,
    options: { data: unknown; headers?: Record<string, string> },
  ): boolean;
}
interface BunGlobal {
  resolveSync(specifier: string, from: string): string;
  spawn(cmd: string[], options: {
    cwd?: string;
    env?: Record<string, string | undefined>;
    stdin: "pipe";
    stdout: "pipe";
    stderr: "pipe";
  }): BunSubprocess;
  serve(options: {
    hostname: string;
    port: number;
    idleTimeout: number;
    maxRequestBodySize: number;
    reusePort?: boolean;
    tls?: { cert: string; key: string };
    fetch(request: Request, server: BunServer): Promise<Response | undefined>;
    error(error: Error): Response;
    websocket: {
      idleTimeout: number;
      open(ws: BunServerWebSocket): void;
      message(ws: BunServerWebSocket, message: string | Uint8Array): void;
      close(ws: BunServerWebSocket, code: number, reason: string): void;
    };
  }): BunServer;
}

/** The whole environment of a child: ours, less `unsetEnv`, plus `env`. */
function childEnv(
  options: SpawnOptions,
): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const name of unsetNames(options.unsetEnv ?? [], env, undefined)) {
    delete env[name];
  }
  return { ...env, ...options.env };
}

function bunGlobal(): BunGlobal {
  const bun = (globalThis as unknown as { Bun?: BunGlobal }).Bun;
  if (bun === undefined) {
    throw new TypeError(
      "Cannot use the Bun runtime adapter: not running on Bun",
    );
  }
  return bun;
}

function errorCode(err: unknown): string | undefined {
  return (err as { code?: string } | null)?.code;
}

function sinkToWritable(sink: BunFileSink): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({
    async write(chunk) {
      await sink.write(chunk);
      // FileSink buffers; flushing per write keeps stdin lines (the secret)
      // from sitting in user space.
      await sink.flush();
    },
    async close() {
      await sink.end();
    },
    async abort() {
      try {
        await sink.end();
      } catch {
        // the child is gone already
      }
    },
  });
}

function spawnChild(options: SpawnOptions): ChildProcess {
  // Bun.spawn (unlike node:child_process) throws at once when the executable
  // is missing, as Deno.Command#spawn does.
  const group = options.processGroup === true && process.platform !== "win32";
  const proc = bunGlobal().spawn([options.cmd, ...options.args], {
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    // Bun replaces the environment when `env` is given (Deno merges), and
    // without it passes the environment the process started with, not
    // process.env as changed since: always the whole current one.
    env: childEnv(options),
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  const status = proc.exited.then(
    () => ({
      code: proc.signalCode ? null : proc.exitCode,
      signal: proc.signalCode ?? null,
    }),
    () => ({ code: null, signal: null }),
  );
  const adopted = new AdoptedGroup(
    proc.pid,
    (pid, signal) => process.kill(pid, signal),
  );
  const exited = () => proc.exitCode !== null || proc.signalCode !== null;
  return {
    pid: proc.pid,
    stdin: sinkToWritable(proc.stdin),
    stdout: proc.stdout,
    stderr: proc.stderr,
    status,
    kill(signal = "SIGTERM") {
      if (exited()) return;
      adopted.signal(signal);
      try {
        if (!group) proc.kill(signal);
        else {
          try {
            process.kill(-proc.pid, signal);
          } catch {
            proc.kill(signal); // not (yet) leading its group
          }
        }
      } catch {
        // the child exited between the check and the kill
      }
    },
    killGroup(signal = "SIGKILL") {
      if (!group) return;
      adopted.signal(signal, exited());
      try {
        process.kill(-proc.pid, signal);
      } catch {
        // no process left in the group
      }
    },
    adoptGroup(pgid: number) {
      if (group) adopted.adopt(pgid);
    },
  };
}

/**
 * Stops accepting, lets the requests (and WebSockets) in flight finish, then
 * closes the connections left, as `Deno.serve`'s shutdown does: Bun's own
 * graceful stop also waits for connections that are still sending request
 * headers (or never will), which kept a gateway's shutdown going for its
 * whole grace. Bun has no event for a request ending: polled every 10 ms.
 */
async function stopServer(server: BunServer): Promise<void> {
  let stopped = false;
  const graceful = Promise.resolve(server.stop()).then(() => {
    stopped = true;
  });
  while (
    !stopped && (server.pendingRequests > 0 || server.pendingWebSockets > 0)
  ) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  if (!stopped) await server.stop(true);
  await graceful;
}

/** The answer to a WebSocket handshake Bun refused after the handler took it. */
function upgradeRefused(): Response {
  return Response.json(
    {
      error: {
        type: "InvalidRequestError",
        message: "Cannot upgrade to WebSocket: the handshake was refused",
      },
    },
    { status: 400 },
  );
}

function serveHttp(
  options: {
    hostname: string;
    port: number;
    signal?: AbortSignal;
    tls?: { cert: string; key: string };
    reusePort?: boolean;
    keepAliveTimeout?: number;
  },
  handler: FetchHandler,
  upgrades: BunWebSocketUpgrades,
): Promise<HttpServer> {
  // Bun's timeouts are whole seconds, 1 to 255.
  const keepAlive = Math.min(
    255,
    Math.max(1, Math.ceil((options.keepAliveTimeout ?? 75_000) / 1000)),
  );
  const server = bunGlobal().serve({
    hostname: options.hostname,
    port: options.port,
    ...(options.reusePort === true ? { reusePort: true } : {}),
    // Bun closes connections idle for 10 s by default, which would cut quiet
    // streaming responses (events, eval output) and model calls slower than
    // that; Deno has no such limit. A fixed answer's connection gets its
    // keep-alive bound once it is made (fetch, below).
    idleTimeout: 0,
    // Bun refuses bodies over 128 MiB by default, with an empty 413 of its
    // own; Deno has no such limit, and the gateway applies its bodyLimit.
    maxRequestBodySize: Number.MAX_SAFE_INTEGER,
    ...(options.tls === undefined
      ? {}
      : { tls: { cert: options.tls.cert, key: options.tls.key } }),
    fetch: async (request, srv) => {
      const response = await handler(request, {
        remoteAddr: srv.requestIP(request)?.address ?? "",
      });
      // Bun upgrades here, once the handler chose to (runtime.upgradeWebSocket).
      if (upgrades.complete(request, srv)) return undefined;
      // A 101 not upgraded (Bun refused the handshake): not sent as it is.
      if (response.status === 101) return upgradeRefused();
      // A fixed answer: the connection may be idle from now on (keep-alive),
      // and is closed once it has been for keepAliveTimeout (Bun restores
      // the server's idleTimeout, 0, at the connection's next request: a
      // slow call made on it later is not cut). Not an event
      // stream (model streams, eval output, channels), which may be quiet
      // for longer between its events. (Its body cannot be told apart
      // otherwise: Bun shows every body as a ReadableStream.)
      if (
        response.headers.get("content-type")?.startsWith(
          "text/event-stream",
        ) !== true
      ) srv.timeout?.(request, keepAlive);
      return response;
    },
    error: () => new Response("Internal Server Error", { status: 500 }),
    websocket: upgrades.handlers,
  });
  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => (stopping ??= stopServer(server));
  if (options.signal) {
    if (options.signal.aborted) void shutdown();
    else {options.signal.addEventListener("abort", () => void shutdown(), {
        once: true,
      });}
  }
  return Promise.resolve({
    port: server.port,
    // The address, as Deno reports it: `localhost` binds 127.0.0.1.
    hostname: server.address?.address ?? server.hostname,
    shutdown,
  });
}

/**
 * Creates the Bun runtime adapter. Throws when called outside Bun.
 *
 * @example Pick the Bun adapter explicitly
 * ```ts ignore
 * import { bunRuntime } from "@pyproxy/pyproxy";
 * const rt = bunRuntime();
 * console.log(rt.name); // "bun"
 * ```
 */
export function bunRuntime(): Runtime {
  bunGlobal();
  const upgrades = new BunWebSocketUpgrades();
  return {
    name: "bun",
    // Bun's Request.json() decodes as the Fetch standard says, dropping a BOM.
    jsonDropsBom: true,
    // Bun.serve holds a streamed response's headers until its first chunk.
    streamHeadersWithBody: true,
    reusePortTls: process.platform === "linux",
    // A full accept queue is EAGAIN, as on Deno (Bun says ECONNREFUSED).
    connect: seeingFullQueues(connectNodeSocket),
    spawn: spawnChild,
    serve: (options, handler) => serveHttp(options, handler, upgrades),
    upgradeWebSocket: (request, options) => upgrades.upgrade(request, options),
    async mkdir(path, mode) {
      await mkdir(path, {
        recursive: true,
        ...(mode === undefined ? {} : { mode }),
      });
    },
    async makeTempDir(options = {}) {
      const dir = await mkdtemp(
        join(options.dir ?? tmpdir(), options.prefix ?? "pyproxy-"),
      );
      await chmod(dir, 0o700);
      return dir;
    },
    async remove(path, options = {}) {
      const recursive = options.recursive ?? false;
      try {
        await rm(path, { recursive, force: true });
      } catch (err) {
        // Like Deno.remove, a non-recursive remove deletes an empty directory.
        const code = errorCode(err);
        if (recursive || (code !== "ERR_FS_EISDIR" && code !== "EISDIR")) {
          throw err;
        }
        try {
          await rmdir(path);
        } catch (inner) {
          if (errorCode(inner) !== "ENOENT") throw inner;
        }
      }
    },
    async readFile(path, options = {}) {
      const buf = await readFile(path);
      const data = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
      if (options.onChunk !== undefined && data.length > 0) {
        options.onChunk(data);
      }
      return data;
    },
    async writeFile(path, data) {
      await writeFile(path, data, { mode: 0o600 });
    },
    async openRead(path) {
      const handle = await open(path, "r");
      let closed = false;
      return {
        async read(into) {
          const { bytesRead } = await handle.read(into, 0, into.length, null);
          return bytesRead === 0 && into.length > 0 ? null : bytesRead;
        },
        async close() {
          if (closed) return;
          closed = true;
          await handle.close();
        },
      };
    },
    async openWrite(path) {
      // "wx": O_CREAT | O_EXCL, which also refuses a symlink.
      const handle = await open(path, "wx", 0o600);
      let closed = false;
      return {
        async write(chunk) {
          let offset = 0;
          while (offset < chunk.length) {
            const { bytesWritten } = await handle.write(
              chunk,
              offset,
              chunk.length - offset,
            );
            offset += bytesWritten;
          }
        },
        async close() {
          if (closed) return;
          closed = true;
          await handle.close();
        },
      };
    },
    async stat(path) {
      try {
        const s = await stat(path);
        return {
          isFile: s.isFile(),
          isDirectory: s.isDirectory(),
          size: s.size,
          mtime: s.mtimeMs,
        };
      } catch (err) {
        if (errorCode(err) === "ENOENT") return null;
        throw err;
      }
    },
    async readDir(path) {
      try {
        return await readdir(path);
      } catch (err) {
        if (errorCode(err) === "ENOENT") return [];
        throw err;
      }
    },
    async owner(path) {
      try {
        const s = await lstat(path);
        return { uid: s.uid, mode: s.mode, dev: s.dev, ino: s.ino };
      } catch (err) {
        if (errorCode(err) === "ENOENT") return null;
        throw err;
      }
    },
    uid: () =>
      typeof process.getuid === "function" ? process.getuid() : undefined,
    realPath: (path) => realpath(path),
    readLink: (path) => readlink(path),
    readRegularFile,
    // From the referrer's directory: its package.json's `imports` and
    // node_modules are the ones Bun reads for it.
    resolveImport(specifier, referrer) {
      try {
        return pathToFileURL(
          bunGlobal().resolveSync(specifier, dirname(fileURLToPath(referrer))),
        ).href;
      } catch {
        return undefined;
      }
    },
    // Asked of the descriptor each time: `process.stdout.isTTY` is fixed at
    // start, and stays true once the terminal hung up (serve tells a hang-up
    // from a reload's SIGHUP so).
    stdoutIsTerminal: () => isatty(1),
    tlsFetch(tls) {
      // Bun's fetch takes the TLS options per call.
      const options = {
        ...(tls.ca === undefined ? {} : { ca: tls.ca }),
        ...(tls.cert === undefined || tls.key === undefined
          ? {}
          : { cert: tls.cert, key: tls.key }),
      };
      return {
        fetch: (input, init) =>
          fetch(input, { ...init, tls: options } as unknown as RequestInit),
        // Nothing held but the options.
        close: () => {},
      };
    },
    env: (name) => process.env[name],
    cpuCount: () =>
      (typeof availableParallelism === "function"
        ? availableParallelism()
        : cpus().length) || 1,
    unrefTimer: (timer) =>
      (timer as unknown as { unref?: () => void }).unref?.(),
    pid: () => process.pid,
    memoryRss: () => process.memoryUsage().rss,
    memoryUsage: () => process.memoryUsage(),
    cpuSeconds() {
      const { user, system } = process.cpuUsage();
      return (user + system) / 1e6;
    },
    onSignal(signal, listener) {
      process.on(signal, listener);
      return () => {
        process.off(signal, listener);
      };
    },
    exit: (code) => process.exit(code),
    args: () => process.argv.slice(2),
    tempDir: () => tmpdir(),
    freeBytes,
    shmDir() {
      try {
        if (!statSync("/dev/shm").isDirectory()) return undefined;
        const probe = mkdtempSync("/dev/shm/.pyproxy-probe-");
        rmSync(probe, { recursive: true, force: true });
        return "/dev/shm";
      } catch {
        return undefined;
      }
    },
  };
}
