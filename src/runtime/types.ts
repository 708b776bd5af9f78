/**
 * The small interface the core uses for everything that differs between
 * runtimes (Deno, Bun). Nothing outside `src/runtime/` touches `Deno.*` or
 * `Bun.*`; an implementation of {@linkcode Runtime} is passed in (see
 * `defaultRuntime()` in `src/runtime/mod.ts`).
 *
 * @module
 */

/**
 * Where to connect: TCP host and port, or a Unix socket path.
 *
 * @example
 * ```ts
 * import type { ConnectTarget } from "@pyproxy/pyproxy";
 * const tcp: ConnectTarget = { hostname: "127.0.0.1", port: 8765 };
 * const unix: ConnectTarget = { path: "/tmp/pyproxy/w1.sock" };
 * console.log(tcp.port, unix.path);
 * ```
 */
export type ConnectTarget =
  | {
    hostname?: string;
    port: number;
    path?: undefined;
    /**
     * Gives up a TCP connect still under way when aborted (it rejects); a
     * connection already made is not closed by it.
     */
    signal?: AbortSignal;
  }
  | {
    path: string;
    hostname?: undefined;
    port?: undefined;
    /** A Unix socket's connect completes or fails at once. */
    signal?: undefined;
  };

/**
 * A connected byte stream, exposed as a Web Streams pair.
 *
 * @example Write a request, read the reply, close
 * ```ts ignore
 * import { defaultRuntime } from "@pyproxy/pyproxy";
 * const conn = await defaultRuntime().connect({ port: 8765 });
 * const writer = conn.writable.getWriter();
 * await writer.write(new TextEncoder().encode("ping\n"));
 * const { value } = await conn.readable.getReader().read();
 * conn.close();
 * ```
 */
export interface Connection {
  /** Bytes from the peer. Ends when the peer closes. */
  readonly readable: ReadableStream<Uint8Array>;
  /**
   * Bytes to the peer. A write may keep a reference to its chunk until sent:
   * do not reuse the buffer. Closing it sends end of file; whether the
   * readable stays open afterwards differs by runtime (Deno closes both
   * directions, Bun half-closes), so use {@linkcode Connection.close} to end.
   */
  readonly writable: WritableStream<Uint8Array>;
  /**
   * Optional faster path than `readable`: reads up to `into.length` bytes
   * straight into `into` (a reused buffer), `null` at end of file. A reader
   * uses either this or `readable`, never both.
   */
  read?(into: Uint8Array): Promise<number | null>;
  /**
   * Optional faster path than `writable`: writes all of `data`, resolving
   * once it is handed to the system. A writer uses either this or
   * `writable`'s writer for its writes (closing through `writable` after
   * the last write settled).
   */
  write?(data: Uint8Array): Promise<void>;
  /** Closes both directions at once (idempotent, never throws). */
  close(): void;
}

/**
 * Options to spawn a child process (stdin, stdout and stderr are piped).
 *
 * @example
 * ```ts
 * import type { SpawnOptions } from "@pyproxy/pyproxy";
 * const options: SpawnOptions = { cmd: "python3", args: ["-V"], env: { PYTHONUNBUFFERED: "1" } };
 * console.log(options.cmd);
 * ```
 */
export interface SpawnOptions {
  /** Executable. */
  cmd: string;
  /** Arguments. */
  args: string[];
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables (merged over the current environment). */
  env?: Record<string, string>;
  /**
   * Variables of the current environment the child does not inherit: absent
   * from its environment block too (`/proc/<pid>/environ`), not only from
   * what its code reads. A name also given in `env` is passed as given there.
   * A name ending in `*` stands for every variable whose name starts with
   * the rest (`OTEL_*`).
   */
  unsetEnv?: readonly string[];
  /**
   * Unix: the child makes itself the leader of a process group (a pyproxy
   * server does, with `setpgid`, as it starts), and `kill()` signals the
   * whole group (the child alone while it does not lead one yet): processes
   * it starts (a model's `fork`, a `subprocess.Popen`) go with it;
   * {@linkcode ChildProcess.killGroup} ends what is left after it exited.
   * Not a session of its own (`setsid`): with Linux's autogroup scheduling
   * that would give each worker the CPU share of a whole session, against
   * the host's (the gateway's bottleneck). Ignored on Windows.
   */
  processGroup?: boolean;
}

/**
 * A running child process with piped stdio.
 *
 * @example Run a command and wait for it
 * ```ts ignore
 * import { defaultRuntime } from "@pyproxy/pyproxy";
 * const child = defaultRuntime().spawn({ cmd: "python3", args: ["-V"] });
 * await child.stdin.close();
 * const out = await new Response(child.stdout).text();
 * console.log(out, await child.status); // "Python 3.11.7\n" { code: 0, signal: null }
 * ```
 */
export interface ChildProcess {
  /** Process id. */
  readonly pid: number;
  /** Writes to the child's stdin. Closing it tells a pyproxy server to exit. */
  readonly stdin: WritableStream<Uint8Array>;
  /** The child's stdout. */
  readonly stdout: ReadableStream<Uint8Array>;
  /** The child's stderr. */
  readonly stderr: ReadableStream<Uint8Array>;
  /** Resolves when the child exits (never rejects). */
  readonly status: Promise<{ code: number | null; signal: string | null }>;
  /** Sends a signal (default SIGTERM); ignores an already-exited child. */
  kill(signal?: "SIGTERM" | "SIGKILL" | "SIGINT" | "SIGSTOP" | "SIGCONT"): void;
  /**
   * Sends a signal to the child's process group (`processGroup` children
   * only; a no-op otherwise), also after the child itself exited: what it
   * left running. Never throws.
   */
  killGroup(signal?: "SIGTERM" | "SIGKILL"): void;
  /**
   * From now on, {@linkcode ChildProcess.kill} and
   * {@linkcode ChildProcess.killGroup} also signal process group `pgid`:
   * the group a pyproxy server leads under a wrapper that runs it as its
   * own child (`uv run`, a shell script without `exec`), whose pid the
   * caller confirmed. `processGroup` children only; a no-op otherwise, and
   * for a `pgid` that is not an integer above 1 or is the child's own.
   * Optional: a runtime without it signals the child's group only.
   */
  adoptGroup?(pgid: number): void;
}

/**
 * A request handler for {@linkcode Runtime.serve}.
 *
 * @example
 * ```ts
 * import type { FetchHandler } from "@pyproxy/pyproxy";
 * const hello: FetchHandler = (_req, info) => new Response(`hello ${info.remoteAddr}`);
 * console.log(typeof hello);
 * ```
 */
export type FetchHandler = (
  request: Request,
  info: ServeRequestInfo,
) => Response | Promise<Response>;

/**
 * What {@linkcode Runtime.serve} tells a {@linkcode FetchHandler} of its
 * request besides the request itself.
 *
 * @example
 * ```ts
 * import type { ServeRequestInfo } from "@pyproxy/pyproxy";
 * // In a handler: ask for the delivery of this request's response.
 * const info: ServeRequestInfo = { remoteAddr: "127.0.0.1" };
 * info.wantsCompleted = true;
 * console.log(info.completed === undefined); // true until the handler returns
 * ```
 */
export interface ServeRequestInfo {
  /** The client's IP address (`""` when unknown). */
  remoteAddr: string;
  /**
   * Set by the handler, in its synchronous part, to be given `completed`:
   * asked only for the requests that need it, since the runtime's own
   * per-request record is not kept otherwise (keeping it made V8 promote
   * ~10% of what every request allocates: README, Performance).
   */
  wantsCompleted?: boolean;
  /**
   * Set by the runtime as the handler returns, when it asked for it with
   * `wantsCompleted` and the runtime can tell (Deno; not Bun): settles once
   * the response, body included, was delivered to the client (fulfilled)
   * or could not be (rejected).
   */
  completed?: Promise<void>;
}

/**
 * What happened to the listener of a {@linkcode Runtime.serve} server,
 * told to its `onListener`: its accept loop failed (`failed`: Deno's ends
 * for good on an error such as `EMFILE`, "Too many open files", which
 * silent connections reach; the server listens again `retryIn` ms later,
 * and again every `retryIn` ms while it cannot), an attempt to listen again
 * failed (`retryFailed`: still out of fds, or `portTaken`, `EADDRINUSE`:
 * another process listens on the port since; tried again `retryIn` ms
 * later), and it listens again (`listening`).
 *
 * @example
 * ```ts
 * import type { ListenerEvent } from "@pyproxy/pyproxy";
 * const log = (event: ListenerEvent) =>
 *   event.type === "listening"
 *     ? `listening again on ${event.port}`
 *     : `${event.type} (${event.error.message}): again in ${event.retryIn} ms`;
 * console.log(log({ type: "listening", port: 8000 }));
 * ```
 */
export type ListenerEvent =
  | { type: "failed"; error: Error; retryIn: number }
  | { type: "retryFailed"; error: Error; retryIn: number; portTaken: boolean }
  | { type: "listening"; port: number };

/**
 * Options of {@linkcode HttpServer.shutdown}.
 *
 * @example
 * ```ts
 * import type { HttpServerShutdownOptions } from "@pyproxy/pyproxy";
 * // A listener a new certificate replaced: its answers get 10 s more.
 * const options: HttpServerShutdownOptions = { deliveryTimeout: 10_000 };
 * console.log(options.deliveryTimeout); // 10000
 * ```
 */
export interface HttpServerShutdownOptions {
  /**
   * The most ms waited for the large answers still being delivered (those
   * of {@linkcode Runtime.deliveredBody}) before the server shuts down and
   * cuts what is left of them.
   *
   * @default {Infinity}
   */
  deliveryTimeout?: number;
}

/**
 * A running HTTP server.
 *
 * @example Serve on a free port, then stop
 * ```ts ignore
 * import { defaultRuntime } from "@pyproxy/pyproxy";
 * const server = await defaultRuntime().serve({ hostname: "127.0.0.1", port: 0 }, () => new Response("ok"));
 * console.log(server.port);
 * await server.shutdown();
 * ```
 */
export interface HttpServer {
  /** The bound port. */
  readonly port: number;
  /** The bound hostname. */
  readonly hostname: string;
  /**
   * Stops accepting and closes idle connections; resolves when done. On
   * Deno, first waits (up to `options.deliveryTimeout` ms, no bound by
   * default) for the large answers made with
   * {@linkcode Runtime.deliveredBody} to be delivered: Deno's shutdown
   * ends an HTTP/2 stream whose body is not all sent, the rest lost.
   */
  shutdown(options?: HttpServerShutdownOptions): Promise<void>;
  /**
   * Something the server could not set up as it should, worth a warning in
   * the log (Deno: `TCP_NODELAY` on a TLS listener without `--allow-ffi`).
   */
  readonly warning?: string;
}

/**
 * Options of {@linkcode Runtime.upgradeWebSocket}.
 *
 * @example Select the subprotocol the client offered
 * ```ts ignore
 * import { defaultRuntime } from "@pyproxy/pyproxy";
 * const rt = defaultRuntime();
 * const handler = (req: Request): Response =>
 *   rt.upgradeWebSocket!(req, { protocol: "pyproxy.v1" }).response;
 * ```
 */
export interface UpgradeWebSocketOptions {
  /**
   * The subprotocol to answer in `Sec-WebSocket-Protocol`: one of those the
   * client offered (the caller checks). No subprotocol is selected when
   * missing.
   *
   * @default {undefined}
   */
  protocol?: string;
}

/**
 * A file open for writing, from {@linkcode Runtime.openWrite}: lets a large
 * file be written chunk by chunk, so its whole content never has to exist
 * in memory at once.
 *
 * @example Write two chunks from one reusable buffer
 * ```ts ignore
 * import { defaultRuntime } from "@pyproxy/pyproxy";
 * const file = await defaultRuntime().openWrite("/tmp/out.json");
 * const buffer = new Uint8Array(4);
 * try {
 *   buffer.set([123, 34, 97, 34]); // {"a"
 *   await file.write(buffer);
 *   buffer.set([58, 49, 125], 0); // :1}
 *   await file.write(buffer.subarray(0, 3));
 * } finally {
 *   await file.close();
 * }
 * ```
 */
export interface FileWriter {
  /**
   * Writes all of `chunk`. The chunk is no longer referenced once the
   * promise resolves, so a buffer can be refilled for the next write.
   */
  write(chunk: Uint8Array): Promise<void>;
  /** Closes the file (idempotent). */
  close(): Promise<void>;
}

/**
 * A file open for reading, from {@linkcode Runtime.openRead}: lets a large
 * file be read chunk by chunk into a reused buffer, so its whole content
 * never has to exist in memory at once.
 *
 * @example Read a file 4 bytes at a time
 * ```ts ignore
 * import { defaultRuntime } from "@pyproxy/pyproxy";
 * const file = await defaultRuntime().openRead("/tmp/out.json");
 * const buffer = new Uint8Array(4);
 * try {
 *   let n: number | null;
 *   while ((n = await file.read(buffer)) !== null) console.log(buffer.subarray(0, n));
 * } finally {
 *   await file.close();
 * }
 * ```
 */
export interface FileReader {
  /**
   * Reads up to `into.length` bytes into `into`; resolves with the count,
   * or `null` at the end of the file.
   */
  read(into: Uint8Array): Promise<number | null>;
  /** Closes the file (idempotent). */
  close(): Promise<void>;
}

/**
 * What {@linkcode Runtime.readRegularFile} read: the bytes, and what the
 * open file itself says of it (`fstat` of the descriptor the bytes came
 * from, not a `stat` of its path, which another file may take between the
 * two): its owner, mode, device and inode. A caller that checks the path
 * (its owner, its directories) compares `dev` and `ino` with the file it
 * finds there ({@linkcode Runtime.owner}), so that what was checked is what
 * was read.
 *
 * @example
 * ```ts
 * import type { RegularFileRead } from "@pyproxy/pyproxy";
 * const read: RegularFileRead = {
 *   bytes: new TextEncoder().encode("token"),
 *   uid: 1000,
 *   mode: 0o100600,
 *   dev: 2049,
 *   ino: 131,
 * };
 * console.log((read.mode & 0o777).toString(8)); // "600"
 * ```
 */
export interface RegularFileRead {
  /** At most the `limit + 1` bytes asked for. */
  bytes: Uint8Array;
  /** The file's owner (its user id). */
  uid: number;
  /** The file's type and permission bits (`st_mode`). */
  mode: number;
  /** The device the file is on. */
  dev: number;
  /** The file's inode on `dev`. */
  ino: number;
}

/**
 * TLS settings of {@linkcode Runtime.tlsFetch}: PEM texts.
 *
 * @example
 * ```ts
 * import type { TlsFetchOptions } from "@pyproxy/pyproxy";
 * const tls: TlsFetchOptions = { ca: "-----BEGIN CERTIFICATE-----\n..." };
 * console.log(tls.cert === undefined); // true
 * ```
 */
export interface TlsFetchOptions {
  /** A CA certificate (or several) to trust: a collector's private CA. */
  ca?: string;
  /** The client's certificate (chain), with `key`. */
  cert?: string;
  /** The client certificate's private key, with `cert`. */
  key?: string;
}

/**
 * What {@linkcode Runtime.tlsFetch} makes: a `fetch` with the TLS settings,
 * and how to free what it holds (Deno's HTTP client and its connections)
 * once no POST is in flight.
 *
 * @example
 * ```ts
 * import type { TlsFetch } from "@pyproxy/pyproxy";
 * const tls: TlsFetch = { fetch: globalThis.fetch, close: () => {} };
 * tls.close();
 * ```
 */
export interface TlsFetch {
  /** A `fetch` whose HTTPS connections use the TLS settings. */
  fetch: typeof fetch;
  /** Frees the client (idempotent); `fetch` must not be called after. */
  close(): void;
}

/**
 * Everything runtime-specific the core needs.
 *
 * @example Pass an adapter explicitly
 * ```ts ignore
 * import { bunRuntime, Pool } from "@pyproxy/pyproxy";
 * await using pool = await Pool.start({ runtime: bunRuntime() });
 * ```
 */
export interface Runtime {
  /** `"deno"` or `"bun"`. */
  readonly name: "deno" | "bun";
  /**
   * `true` in a binary made by `deno compile`, which imports only the
   * modules built into it (`--include`): a plugin module named at run time
   * fails to load there, and the error says what to do. Absent: not such
   * a binary (`bun build --compile` binaries import files from disk).
   */
  readonly standalone?: boolean;
  /** Opens a TCP (no-delay) or Unix-socket connection. */
  connect(target: ConnectTarget): Promise<Connection>;
  /** Spawns a process with piped stdio. */
  spawn(options: SpawnOptions): ChildProcess;
  /**
   * Starts an HTTP server. `port: 0` picks a free port. With `tls` (PEM
   * texts), HTTPS (and HTTP/2 where the runtime negotiates it by ALPN).
   * With `reusePort`, `SO_REUSEPORT` (Linux): another listener of this
   * user may bind the same port beside it (the gateway's reload starts its
   * new certificate's listener so, then closes the old one).
   */
  serve(
    options: {
      hostname: string;
      port: number;
      signal?: AbortSignal;
      tls?: { cert: string; key: string };
      reusePort?: boolean;
      /**
       * Told when the listener fails and listens again (Deno: its accept
       * loop ends on `EMFILE` and closed the port for good; Bun's goes on).
       */
      onListener?: (event: ListenerEvent) => void;
      /**
       * Milliseconds an HTTP/1.1 keep-alive connection may stay idle after
       * a fixed answer (one whose body is not an event stream) before it is
       * closed (Bun; Deno's server has no such bound). A request's own time
       * is not bounded (a slow model call), nor an event stream's.
       * @default {75000}
       */
      keepAliveTimeout?: number;
    },
    handler: FetchHandler,
  ): Promise<HttpServer>;
  /**
   * The body to answer `request` (from {@linkcode Runtime.serve}) with
   * `body`, a large one (64 KiB and more: {@linkcode LARGE_BODY_BYTES}),
   * such that the server's shutdown waits for its delivery
   * ({@linkcode HttpServer.shutdown}). Deno (HTTP/2: its shutdown ends a
   * stream whose body is not all sent, the rest lost, and tells when a
   * body was delivered only for a stream): a stream of it, its delivery
   * tracked by the server, and `headers["content-length"]` set to its
   * length in bytes (a stream given: none set). Missing (Bun, whose stop
   * waits for the responses being written): the body as it is. A request
   * from elsewhere (built in process) gets its body back as it is.
   */
  deliveredBody?(
    request: Request,
    body: string | Uint8Array | ReadableStream<Uint8Array>,
    headers: Record<string, string>,
  ): BodyInit;
  /**
   * Whether `request.json()` of a request from {@linkcode Runtime.serve}
   * drops a leading UTF-8 byte order mark and parses the rest (Bun, as the
   * Fetch standard says) instead of failing with a `SyntaxError` (Deno).
   * The gateway refuses such bodies on both: where this is `true`, it reads
   * them as bytes instead.
   */
  readonly jsonDropsBom?: boolean;
  /**
   * The whole body of a request from {@linkcode Runtime.serve} as text,
   * consumed, when the server already holds all of it and can hand it over
   * without a body stream (Deno: the path of its own `request.json()`,
   * ~3.5 µs of CPU less per request than `request.text()`); `undefined`,
   * with the body untouched, otherwise. Optional: the gateway then reads
   * bodies with `text()` or `bytes()`.
   */
  takeBodyText?(request: Request): string | undefined;
  /**
   * Whether {@linkcode Runtime.serve} sends a streamed response's status and
   * headers only with the first chunk of its body (Bun) instead of at once
   * (Deno). The gateway then opens its channel event streams with a comment
   * line, so that a subscriber sees its response before the first message.
   */
  readonly streamHeadersWithBody?: boolean;
  /**
   * Whether {@linkcode Runtime.serve} takes `reusePort` with `tls`: Linux
   * (where `SO_REUSEPORT` lets a second listener share the port), and on
   * Deno only with its unstable `net` APIs (`--unstable-net`, or `"unstable":
   * ["net"]` in deno.json): Deno exits the process otherwise. The gateway's
   * reload serves a new certificate that way only.
   */
  readonly reusePortTls?: boolean;
  /**
   * Upgrades an HTTP request of {@linkcode Runtime.serve} to a WebSocket.
   * Optional: where missing, the gateway serves channels over SSE only.
   * The handshake answers `Sec-WebSocket-Protocol` with `options.protocol`
   * when given, and with no subprotocol otherwise (never one the client
   * offered that the caller did not select: the gateway's clients offer
   * their token as one).
   */
  upgradeWebSocket?(
    request: Request,
    options?: UpgradeWebSocketOptions,
  ): { socket: WebSocket; response: Response };
  /** Creates a directory (recursive) with the given mode. */
  mkdir(path: string, mode?: number): Promise<void>;
  /** Makes a fresh private (0700) temp directory under `dir` (or the system temp dir). */
  makeTempDir(options?: { dir?: string; prefix?: string }): Promise<string>;
  /** Removes a file or directory tree; ignores a missing path. */
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  /**
   * Reads a whole file into one buffer of its exact size (no growing
   * buffer, no final copy: this matters for files of 100 MB). `onChunk`, when
   * given, is called with consecutive views of the returned bytes, in order
   * and covering all of them, as they arrive: work on one chunk (hashing)
   * may overlap the reading of the next.
   */
  readFile(
    path: string,
    options?: { onChunk?(chunk: Uint8Array): void },
  ): Promise<Uint8Array>;
  /** Writes a whole file (created with mode 0600). */
  writeFile(path: string, data: Uint8Array): Promise<void>;
  /**
   * Opens a new file for writing chunk by chunk, created with mode 0600;
   * rejects when something exists at `path`, a symlink included (spill
   * files: whoever could put a link where one is about to be written would
   * have the data written through it, to a file of theirs or over one of
   * ours).
   */
  openWrite(path: string): Promise<FileWriter>;
  /** Opens a file for reading chunk by chunk. */
  openRead(path: string): Promise<FileReader>;
  /**
   * File info, or `null` when the path does not exist. `mtime`: its last
   * modification, in ms since the epoch (absent where the runtime or the
   * file system cannot tell: what needs it then does without).
   */
  stat(
    path: string,
  ): Promise<
    {
      isFile: boolean;
      isDirectory: boolean;
      size: number;
      mtime?: number;
    } | null
  >;
  /**
   * Owner and permission bits of a path, not following a final symlink
   * (`lstat`), or `null` when it does not exist; with its device and inode
   * where the runtime tells them (to compare with what
   * {@linkcode Runtime.readRegularFile} read). Optional, as is
   * {@linkcode Runtime.uid}: where either is missing (or the OS has no
   * owners), the gateway cannot refuse a `pyproxy.json` or `./models` that
   * another user put in its working directory.
   */
  owner?(
    path: string,
  ): Promise<{ uid: number; mode: number; dev?: number; ino?: number } | null>;
  /** This process's user id; `undefined` where there is none (Windows). */
  uid?(): number | undefined;
  /** Lists the entry names in a directory (empty when missing). */
  readDir(path: string): Promise<string[]>;
  /** Resolves symlinks and `..`; throws when the path does not exist. */
  realPath(path: string): Promise<string>;
  /**
   * The target of the symbolic link at `path`, as written in it (relative
   * to the link's directory unless absolute); throws when `path` is not a
   * link. Optional: without it, a secret file's check sees the first link
   * and the file (not the links between).
   */
  readLink?(path: string): Promise<string>;
  /**
   * Reads a small regular file (a token file, a TLS key): opened without
   * waiting (a FIFO put at `path` does not block the open), checked once
   * open (no race with a swap after a `stat`), at most `limit + 1` bytes
   * read (more than `limit`: the file is larger than allowed), with the
   * open file's owner, mode, device and inode (`fstat`: the file whose
   * bytes these are, whatever is at `path` by then). `null` when `path` is
   * not a regular file; throws when it cannot be opened. Optional: without
   * it, a `stat` then a read of the path, and a secret file's checks are of
   * its path alone (a file swapped in for the read and out again before
   * the check is not seen).
   */
  readRegularFile?(
    path: string,
    limit: number,
  ): Promise<RegularFileRead | null>;
  /**
   * The URL the runtime loads for `specifier`, a bare name (`@lib/x.ts`,
   * `#lib/x.ts`, `hono`) imported by the module at `referrer` (a `file:`
   * URL), as its import map (Deno's `deno.json` `imports`) or its
   * `package.json` (`imports`, `node_modules`; Bun) says; `undefined` when
   * it resolves to none. For the plugin import check: a bare name mapped
   * to a local directory loads a file of it, as a relative import would.
   * Optional: without it, bare names are not followed.
   */
  resolveImport?(specifier: string, referrer: string): string | undefined;
  /**
   * A `fetch` whose HTTPS connections trust `tls.ca` (PEM; Deno adds it
   * to its roots, Bun takes it as Node's `ca` option) and present `tls.cert` and `tls.key` (PEM, both or
   * neither) as the client's certificate: the tracing exporter's, for a
   * collector with a private CA or mutual TLS (`OTEL_EXPORTER_OTLP_CERTIFICATE`,
   * `..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY`). The exporter closes it
   * when its gateway stops (`serve`'s shutdown, `stopSignal`): a gateway
   * made and stopped again and again would otherwise keep a client each.
   * Optional: without it, a gateway given such TLS settings refuses to
   * start.
   */
  tlsFetch?(tls: TlsFetchOptions): TlsFetch;
  /** An environment variable, or undefined. */
  env(name: string): string | undefined;
  /**
   * Whether this process's stdout is a terminal (someone reads it as it is
   * written), not a pipe or a file that a service manager keeps
   * (journald, `docker logs`). Asked of the descriptor at each call: false
   * once the terminal hung up. Optional: without it, not a terminal.
   */
  stdoutIsTerminal?(): boolean;
  /** The number of logical CPUs. */
  cpuCount(): number;
  /**
   * Lets the process exit while this timer (of `setTimeout` or
   * `setInterval`) is pending: a policy sampling on a timer must not keep
   * a program alive by itself. Optional: without it, the timer is kept
   * (and cleared when its pool closes).
   */
  unrefTimer?(timer: ReturnType<typeof setTimeout>): void;
  /** This process's id. */
  pid(): number;
  /** Resident set size of this process in bytes. */
  memoryRss(): number;
  /**
   * This process's memory in bytes: its resident set size and its JS heap
   * as the engine counts it (V8's under Deno, JavaScriptCore's under Bun,
   * whose `heapTotal` is its `heapUsed`). `GET /metrics` reads it at each
   * scrape. Optional: without it, `/metrics` shows the resident set size
   * (`memoryRss`) and no heap.
   */
  memoryUsage?(): { rss: number; heapUsed: number; heapTotal: number };
  /**
   * The CPU time this process used, user plus system, in seconds
   * (`getrusage`: every thread). Optional: without it, `GET /metrics` has
   * no `process_cpu_seconds_total`.
   */
  cpuSeconds?(): number;
  /**
   * Calls `listener` on the signal; returns a function that removes it.
   * Throws where the OS has no such signal (SIGHUP on Windows).
   */
  onSignal(
    signal: "SIGINT" | "SIGTERM" | "SIGHUP",
    listener: () => void,
  ): () => void;
  /** Exits the process. */
  exit(code: number): never;
  /** Command-line arguments after the script. */
  args(): string[];
  /** The system temp directory. */
  tempDir(): string;
  /** `/dev/shm` when it exists and is writable, else undefined. */
  shmDir(): string | undefined;
  /**
   * Bytes free to this user on the file system of `path` (`statfs`), or
   * undefined when they cannot be told. For error messages (a spill file
   * refused for lack of space). Absent: never told.
   */
  freeBytes?(path: string): Promise<number | undefined>;
  /**
   * Whether Linux's `/proc` may be read without asking: Deno allows it only
   * with every permission (`--allow-all`) and asks on a terminal otherwise
   * (its own file methods here refuse such paths without asking instead).
   * For code that reads `/proc` through `node:fs`. Absent: it may.
   */
  mayReadProc?(): boolean;
  /**
   * Whether `path` (and what is under it) may be read and written without
   * asking: Deno asks on a terminal for a path outside its `--allow-read`
   * or `--allow-write` lists. For what pyproxy can do without (spill
   * files in the temp directory). Absent: it may.
   */
  mayAccess?(path: string): boolean;
}

/**
 * The size from which an answer's body goes through
 * {@linkcode Runtime.deliveredBody}: HTTP/2's initial flow-control window
 * (65,535 bytes), which a smaller body fits in, sent whole at once (the
 * smaller ones are not tracked: tracking every answer cost 8-25% req/s).
 *
 * @example
 * ```ts
 * import { LARGE_BODY_BYTES } from "@pyproxy/pyproxy";
 * console.log(LARGE_BODY_BYTES); // 65536
 * ```
 */
export const LARGE_BODY_BYTES = 64 * 1024;
