/**
 * The Deno implementation of {@linkcode Runtime}.
 *
 * @module
 */
import process from "node:process";
import { AdoptedGroup } from "./_adopted_group.ts";
import { readRegularFile } from "./_read_regular_file.ts";
import { unsetNames } from "./_unset_env.ts";
import type {
  ChildProcess,
  Connection,
  ConnectTarget,
  FetchHandler,
  HttpServer,
  Runtime,
  ServeRequestInfo,
  SpawnOptions,
  UpgradeWebSocketOptions,
} from "./types.ts";
import { DenoBodyText } from "./deno_body_text.ts";
import { setTlsListenerNoDelay } from "./_deno_tls_no_delay.ts";
import { PendingDeliveries } from "./_pending_deliveries.ts";
import { Relisten } from "./_deno_relisten.ts";
import { freeBytes } from "./_free_bytes.ts";
import { setUpDenoSignals } from "./_deno_signal_setup.ts";

/** Where a request from `Deno.serve` keeps its {@linkcode DenoServeInfo}. */
const SERVED: unique symbol = Symbol("pyproxy.served");

/**
 * What a handler gets of its request ({@linkcode ServeRequestInfo}), which
 * also tracks a large answer's delivery for its server's shutdown. Kept on
 * the request itself (which, with Deno's info, lives as long anyway): one
 * object a request, as the plain record it replaces.
 */
class DenoServeInfo implements ServeRequestInfo {
  remoteAddr: string;
  wantsCompleted?: boolean;
  completed?: Promise<void>;
  readonly info: Deno.ServeHandlerInfo<Deno.NetAddr>;
  readonly deliveries: PendingDeliveries;
  constructor(
    remoteAddr: string,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
    deliveries: PendingDeliveries,
  ) {
    this.remoteAddr = remoteAddr;
    this.info = info;
    this.deliveries = deliveries;
  }
}

const UTF8 = new TextEncoder();

/**
 * `body` as a stream, its delivery added to its server's, its length in
 * `headers`: Deno settles `completed` of a string or bytes body as it takes
 * it, before it is sent, and of a stream once the client has it all.
 */
function deliveredBody(
  request: Request,
  body: string | Uint8Array | ReadableStream<Uint8Array>,
  headers: Record<string, string>,
): BodyInit {
  const served = (request as unknown as { [SERVED]?: DenoServeInfo })[SERVED];
  if (served === undefined) return body as BodyInit;
  // Read before the response is handed back: Deno settles only a
  // `completed` asked for by then.
  const completed = served.info.completed;
  served.deliveries.add(completed);
  if (body instanceof ReadableStream) return body;
  let chunk: Uint8Array | undefined = typeof body === "string"
    ? UTF8.encode(body)
    : body;
  // As Deno says of a string or bytes body (a stream gets none of its own).
  headers["content-length"] = String(chunk.byteLength);
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (chunk === undefined) {
        controller.close();
        return;
      }
      controller.enqueue(chunk);
      chunk = undefined;
    },
  }, { highWaterMark: 0 });
}

function wrapConn(conn: Deno.Conn): Connection {
  let closed = false;
  return {
    // A getter: Deno makes the stream on first access, and a reader using read() never needs it.
    get readable() {
      return conn.readable;
    },
    writable: conn.writable,
    read: (into) => conn.read(into),
    async write(data) {
      // Deno's write may take part of the data: loop until all of it is written.
      let written = await conn.write(data);
      while (written < data.length) {
        written += await conn.write(data.subarray(written));
      }
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed by a stream end
      }
    },
  };
}

// Large enough to amortise each read, small enough that the file system and onChunk overlap well.
const READ_CHUNK = 8 * 1024 * 1024;

async function readRest(file: Deno.FsFile): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const chunk = new Uint8Array(64 * 1024);
    const n = await file.read(chunk);
    if (n === null) break;
    chunks.push(chunk.subarray(0, n));
    total += n;
  }
  const rest = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    rest.set(chunk, offset);
    offset += chunk.length;
  }
  return rest;
}

/**
 * Every permission: Deno reads `/proc` only when all of them are granted
 * (`import` among them, which Deno's `PermissionName` type leaves out).
 */
const ALL_PERMISSIONS: readonly string[] = [
  "read",
  "write",
  "net",
  "env",
  "sys",
  "run",
  "ffi",
  "import",
];

/**
 * Whether this process has every permission (`--allow-all`), which Deno
 * requires to read Linux's `/proc`, `/dev` and `/sys` (denoland/deno#23703,
 * #30979): `--allow-read` alone is not enough. Without it an access there
 * asks on a terminal (serve stopped at its start on a prompt for
 * `/proc/self`, then for `/dev/shm`), then fails even when allowed.
 */
function allAccess(): boolean {
  return ALL_PERMISSIONS.every((name) =>
    granted({ name } as Deno.PermissionDescriptor)
  );
}

/**
 * Whether `descriptor` is granted, asked of no one: on a terminal an API
 * call without its permission asks first (a narrow `--allow-run=python3`
 * asked for `Deno.kill` at every pool's close, no `--allow-sys` for
 * `Deno.uid` at its start), and what pyproxy does there is optional.
 */
function granted(descriptor: Deno.PermissionDescriptor): boolean {
  return Deno.permissions.querySync(descriptor).state === "granted";
}

/**
 * `Deno.env.get(name)`, or `undefined` without asking when the variable is
 * not granted: on a terminal a read outside an `--allow-env` list asks (the
 * gateway's tokens, `OTEL_*`, `TMPDIR`), and pyproxy treats every variable
 * as unset then.
 */
function envUnasked(name: string): string | undefined {
  if (!granted({ name: "env", variable: name })) return undefined;
  return Deno.env.get(name);
}

/**
 * `Deno.kill`, which needs `--allow-run` for every program (a list of
 * programs does not do): without it, throws without asking.
 */
function killUnasked(pid: number, signal: Deno.Signal): void {
  if (!granted({ name: "run" })) {
    throw new Deno.errors.NotCapable(
      "Requires run access to all programs to signal a process group; not asked",
    );
  }
  Deno.kill(pid, signal);
}

/**
 * Refuses a path under `/proc`, `/dev` or `/sys` without asking when Deno
 * would not allow it (the callers treat those as optional: metrics, dead
 * hosts' directories, a worker's wait channel).
 */
function refuseWithoutAllAccess(path: string): void {
  if (/^\/(?:proc|dev|sys)(?:\/|$)/.test(path) && !allAccess()) {
    throw new Deno.errors.NotCapable(
      `Requires all access to "${path}" (Deno reads /proc, /dev and /sys only with --allow-all); not asked`,
    );
  }
}

/**
 * Creates the Deno runtime adapter.
 *
 * @example
 * ```ts
 * import { denoRuntime } from "@pyproxy/pyproxy";
 * const rt = denoRuntime();
 * console.log(rt.name); // "deno"
 * ```
 */
export function denoRuntime(): Runtime {
  // Before a full fd table can make Deno's own late set-up panic (its
  // inspector's SIGUSR1 listener, half a second in): _deno_signal_setup.ts.
  setUpDenoSignals();
  const bodies = new DenoBodyText();
  return {
    name: "deno",
    // Deno 2.1 and later: true in a binary of deno compile.
    ...((Deno.build as { standalone?: boolean }).standalone === true
      ? { standalone: true }
      : {}),
    takeBodyText: (request) => bodies.take(request),
    deliveredBody,
    async connect(target: ConnectTarget): Promise<Connection> {
      if (target.path !== undefined) {
        const conn = await Deno.connect({
          transport: "unix",
          path: target.path,
        });
        return wrapConn(conn);
      }
      const conn = await Deno.connect({
        hostname: target.hostname ?? "127.0.0.1",
        port: target.port,
        ...(target.signal === undefined ? {} : { signal: target.signal }),
      });
      conn.setNoDelay(true);
      return wrapConn(conn);
    },
    spawn(options: SpawnOptions): ChildProcess {
      // Deno merges `env` over the inherited environment and cannot drop a
      // variable from it: a child that must not inherit one gets a whole
      // environment of its own (clearEnv) instead.
      // Without the permission to read the environment (a narrow
      // --allow-env), the child inherits it all, as before.
      const group = options.processGroup === true &&
        Deno.build.os !== "windows";
      let unset: string[] = [];
      let env = options.env;
      try {
        // The whole environment: without it granted (a list), not asked.
        const current = options.unsetEnv === undefined ||
            options.unsetEnv.length === 0 || !granted({ name: "env" })
          ? {}
          : Deno.env.toObject();
        unset = unsetNames(options.unsetEnv ?? [], current, options.env);
        if (unset.length > 0) {
          env = { ...current, ...options.env };
          for (const name of unset) {
            delete env[name];
          }
        }
      } catch {
        unset = [];
        env = options.env;
      }
      const child = new Deno.Command(options.cmd, {
        args: options.args,
        ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
        ...(env === undefined ? {} : { env }),
        ...(unset.length > 0 ? { clearEnv: true } : {}),
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      // A program that dies of an uncaught exception has Deno SIGKILL the
      // children it holds referenced: a server killed so cannot end its
      // process group, and what model code started stayed running. Unref'd,
      // the child is left to see its host gone (its stdin's end) and end
      // its group itself; a timer keeps the event loop alive while it runs,
      // as the child did.
      child.unref();
      const keepAlive = setInterval(() => {}, 1 << 30);
      const status = child.status.then(
        (s) => ({ code: s.signal ? null : s.code, signal: s.signal ?? null }),
        () => ({ code: null, signal: null }),
      );
      const adopted = new AdoptedGroup(
        child.pid,
        (pid, signal) => killUnasked(pid, signal),
      );
      let exited = false;
      status.then(() => {
        exited = true;
        clearInterval(keepAlive);
      });
      return {
        pid: child.pid,
        stdin: child.stdin,
        stdout: child.stdout,
        stderr: child.stderr,
        status,
        kill(signal = "SIGTERM") {
          if (exited) return;
          adopted.signal(signal);
          try {
            if (!group) child.kill(signal);
            else {
              try {
                killUnasked(-child.pid, signal);
              } catch {
                child.kill(signal); // not (yet) leading its group
              }
            }
          } catch {
            // the child exited between the check and the kill
          }
        },
        killGroup(signal = "SIGKILL") {
          if (!group) return;
          adopted.signal(signal, exited);
          try {
            killUnasked(-child.pid, signal);
          } catch {
            // no process left in the group
          }
        },
        adoptGroup(pgid: number) {
          if (group) adopted.adopt(pgid);
        },
      };
    },
    // Deno exits the process (not an exception) for a TLS listener's
    // reusePort without its unstable net APIs: whether they are on shows in
    // Deno.listenDatagram, one of them, defined only then.
    reusePortTls: Deno.build.os === "linux" && "listenDatagram" in Deno,
    serve(options, handler: FetchHandler): Promise<HttpServer> {
      // This server's large answers still being delivered.
      const deliveries = new PendingDeliveries();
      const serveHandler = (
        req: Request,
        info: Deno.ServeHandlerInfo<Deno.Addr>,
      ): Response | Promise<Response> => {
        // The address read at once. `info` itself is kept (on the request,
        // for deliveredBody): where a gateway build once kept it (through
        // a getter) V8 promoted ~10% of what a request allocated
        // (docs/performance.md); kept so, measured 2026-12-06 under wrk:
        // 0.01-0.03% promoted, CPU per request unchanged (20.7 against
        // 20.9 µs, medians of 8 alternating rounds).
        const addr = info.remoteAddr as Deno.NetAddr;
        const own = new DenoServeInfo(
          addr.hostname ?? "",
          info as Deno.ServeHandlerInfo<Deno.NetAddr>,
          deliveries,
        );
        (req as unknown as { [SERVED]?: DenoServeInfo })[SERVED] = own;
        const res = handler(req, own);
        // Read only when asked (the gateway: not for plain model calls).
        // It rejects when the client left first: never unhandled, whoever
        // reads it (or not: a WebSocket's upgrade).
        if (own.wantsCompleted === true) {
          const completed = info.completed;
          completed.catch(() => {});
          own.completed = completed;
        }
        return res;
      };
      return new Promise((resolve, reject) => {
        const relisten = new Relisten(
          (port, onListen) =>
            Deno.serve({
              hostname: options.hostname,
              port,
              ...(options.reusePort === true ? { reusePort: true } : {}),
              ...(options.signal ? { signal: options.signal } : {}),
              ...(options.tls === undefined
                ? {}
                : { cert: options.tls.cert, key: options.tls.key }),
              // Deno sets no TCP_NODELAY on TLS connections: each
              // response's second record waited 40 ms for the client's
              // delayed ACK. Set on each listener, a new one included.
              onListen: (addr) =>
                onListen(
                  addr,
                  options.tls === undefined
                    ? undefined
                    : setTlsListenerNoDelay(addr.port),
                ),
            }, serveHandler),
          {
            ...(options.signal ? { signal: options.signal } : {}),
            ...(options.onListener ? { onEvent: options.onListener } : {}),
          },
        );
        relisten.start(options.port).then(
          ({ port, hostname, warning }) =>
            resolve({
              port,
              hostname,
              shutdown: async (shutdownOptions = {}) => {
                await deliveries.settled(
                  shutdownOptions.deliveryTimeout ?? Infinity,
                );
                await relisten.shutdown();
              },
              ...(warning === undefined ? {} : {
                warning:
                  `TCP_NODELAY is not set on the TLS port's connections (${warning}): HTTPS responses of more than a few hundred bytes may each wait ~40 ms for the client's delayed ACK; run with --allow-ffi (or -A) on Linux`,
              }),
            }),
          reject,
        );
      });
    },
    upgradeWebSocket(
      request: Request,
      options: UpgradeWebSocketOptions = {},
    ): { socket: WebSocket; response: Response } {
      const { socket, response } = Deno.upgradeWebSocket(request);
      // Set here rather than through Deno's `protocol` option: that one
      // finds the offer only in a list split at ", " exactly, and throws on
      // "a,b" (valid HTTP list syntax, which non-browser clients send).
      if (options.protocol !== undefined) {
        response.headers.set("sec-websocket-protocol", options.protocol);
      }
      return { socket, response };
    },
    async mkdir(path, mode) {
      await Deno.mkdir(path, {
        recursive: true,
        ...(mode === undefined ? {} : { mode }),
      });
    },
    async makeTempDir(options = {}) {
      const dir = await Deno.makeTempDir({
        ...(options.dir === undefined ? {} : { dir: options.dir }),
        prefix: options.prefix ?? "pyproxy-",
      });
      await Deno.chmod(dir, 0o700);
      return dir;
    },
    async remove(path, options = {}) {
      try {
        await Deno.remove(path, { recursive: options.recursive ?? false });
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    },
    async readFile(path, options = {}) {
      const { onChunk } = options;
      refuseWithoutAllAccess(path);
      // Deno.readFile grows its buffer while reading; reads into an exact-size buffer are twice as fast on 100 MB.
      using file = await Deno.open(path, { read: true });
      const size = (await file.stat()).size;
      let data = new Uint8Array(size);
      let offset = 0;
      let seen = 0;
      while (offset < size) {
        const end = onChunk === undefined
          ? size
          : Math.min(size, offset + READ_CHUNK);
        const pending = file.read(data.subarray(offset, end));
        // The chunk before is handed over while this one is read (off the main thread).
        if (onChunk !== undefined && seen < offset) {
          try {
            onChunk(data.subarray(seen, offset));
          } catch (err) {
            await pending.catch(() => {});
            throw err;
          }
          seen = offset;
        }
        const n = await pending;
        if (n === null) break;
        offset += n;
      }
      if (offset < size) {
        data = data.subarray(0, offset);
      } else {
        // A file that grew since stat(): read the rest the slow way.
        const rest = await readRest(file);
        if (rest.length > 0) {
          const all = new Uint8Array(size + rest.length);
          all.set(data);
          all.set(rest, size);
          data = all;
        }
      }
      if (onChunk !== undefined && seen < data.length) {
        onChunk(data.subarray(seen));
      }
      return data;
    },
    async writeFile(path, data) {
      await Deno.writeFile(path, data, { mode: 0o600 });
    },
    async openRead(path) {
      refuseWithoutAllAccess(path);
      const file = await Deno.open(path, { read: true });
      let closed = false;
      return {
        read: (into) => file.read(into),
        close() {
          if (!closed) {
            closed = true;
            file.close();
          }
          return Promise.resolve();
        },
      };
    },
    async openWrite(path) {
      // createNew: O_CREAT | O_EXCL, which also refuses a symlink.
      const file = await Deno.open(path, {
        write: true,
        createNew: true,
        mode: 0o600,
      });
      let closed = false;
      return {
        async write(chunk) {
          let offset = 0;
          while (offset < chunk.length) {
            offset += await file.write(chunk.subarray(offset));
          }
        },
        close() {
          if (!closed) {
            closed = true;
            file.close();
          }
          return Promise.resolve();
        },
      };
    },
    async stat(path) {
      refuseWithoutAllAccess(path);
      try {
        const s = await Deno.stat(path);
        return {
          isFile: s.isFile,
          isDirectory: s.isDirectory,
          size: s.size,
          ...(s.mtime === null ? {} : { mtime: s.mtime.getTime() }),
        };
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return null;
        throw err;
      }
    },
    async readDir(path) {
      refuseWithoutAllAccess(path);
      const names: string[] = [];
      try {
        for await (const e of Deno.readDir(path)) names.push(e.name);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
      return names;
    },
    async owner(path) {
      // Not asked on a terminal (a prompt holds the start): the directories
      // above a checked file (`/`) are outside most --allow-read lists, and
      // their checks pass over one whose owner cannot be read.
      if (!granted({ name: "read", path })) {
        throw new Deno.errors.NotCapable(
          `Requires read access to "${path}", run again with the --allow-read flag`,
        );
      }
      try {
        const s = await Deno.lstat(path);
        return s.uid === null || s.mode === null
          ? null
          : s.ino === null
          ? { uid: s.uid, mode: s.mode }
          : { uid: s.uid, mode: s.mode, dev: s.dev, ino: s.ino };
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return null;
        throw err;
      }
    },
    uid() {
      // Without --allow-sys: unknown, as on Windows (not asked).
      if (!granted({ name: "sys", kind: "uid" })) return undefined;
      try {
        return Deno.uid() ?? undefined;
      } catch {
        // No --allow-sys: unknown, as on Windows.
        return undefined;
      }
    },
    realPath: (path) => Deno.realPath(path),
    readLink: (path) => Deno.readLink(path),
    readRegularFile,
    // The import map is the process's (scopes aside): the same from here.
    resolveImport(specifier) {
      try {
        return import.meta.resolve(specifier);
      } catch {
        return undefined;
      }
    },
    stdoutIsTerminal: () => Deno.stdout.isTerminal(),
    tlsFetch(tls) {
      // One client for the exporter's life (its connections are reused).
      const client = Deno.createHttpClient({
        ...(tls.ca === undefined ? {} : { caCerts: [tls.ca] }),
        ...(tls.cert === undefined || tls.key === undefined
          ? {}
          : { cert: tls.cert, key: tls.key }),
      });
      return {
        fetch: (input, init) => fetch(input, { ...init, client }),
        close: () => {
          try {
            client.close();
          } catch {
            // Closed already.
          }
        },
      };
    },
    env: envUnasked,
    cpuCount: () => navigator.hardwareConcurrency || 1,
    unrefTimer: (timer) => Deno.unrefTimer(timer),
    pid: () => Deno.pid,
    memoryRss: () => Deno.memoryUsage().rss,
    memoryUsage: () => Deno.memoryUsage(),
    cpuSeconds() {
      const { user, system } = process.cpuUsage();
      return (user + system) / 1e6;
    },
    onSignal(signal, listener) {
      Deno.addSignalListener(signal, listener);
      return () => {
        try {
          Deno.removeSignalListener(signal, listener);
        } catch {
          // already removed
        }
      };
    },
    exit: (code) => Deno.exit(code),
    args: () => Deno.args,
    tempDir: () => envUnasked("TMPDIR") ?? "/tmp",
    mayReadProc: allAccess,
    mayAccess: (path) =>
      granted({ name: "read", path }) && granted({ name: "write", path }),
    // Without read access Deno would ask on a terminal: not told then.
    freeBytes: (path) =>
      granted({ name: "read", path })
        ? freeBytes(path)
        : Promise.resolve(undefined),
    shmDir() {
      // Without --allow-all Deno would ask for /dev/shm, then refuse it.
      if (!allAccess()) return undefined;
      try {
        const s = Deno.statSync("/dev/shm");
        if (!s.isDirectory) return undefined;
        const probe = Deno.makeTempDirSync({
          dir: "/dev/shm",
          prefix: ".pyproxy-probe-",
        });
        Deno.removeSync(probe);
        return "/dev/shm";
      } catch {
        return undefined;
      }
    },
  };
}
