/**
 * The small interface the core uses for everything that differs between
 * runtimes (Deno, Bun). Nothing outside `src/runtime/` touches `Deno.*` or
 * `Bun.*`; an implementation of {@linkcode Runtime} is passed in (see
 * `defaultRuntime()` in `src/runtime/mod.ts`).
 *
 * @module
 */

/** Where to connect: TCP host and port, or a Unix socket path. */
export type ConnectTarget =
  | { hostname?: string; port: number; path?: undefined }
  | { path: string; hostname?: undefined; port?: undefined };

/** A connected byte stream, exposed as a Web Streams pair. */
export interface Connection {
  /** Bytes from the peer. Ends when the peer closes. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer. */
  readonly writable: WritableStream<Uint8Array>;
  /** Closes both directions at once (idempotent, never throws). */
  close(): void;
}

/** Options to spawn a child process (stdin, stdout and stderr are piped). */
export interface SpawnOptions {
  /** Executable. */
  cmd: string;
  /** Arguments. */
  args: string[];
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables (merged over the current environment). */
  env?: Record<string, string>;
}

/** A running child process with piped stdio. */
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
}

/** A request handler for {@linkcode Runtime.serve}. */
export type FetchHandler = (request: Request, info: { remoteAddr: string }) => Response | Promise<Response>;

/** A running HTTP server. */
export interface HttpServer {
  /** The bound port. */
  readonly port: number;
  /** The bound hostname. */
  readonly hostname: string;
  /** Stops accepting and closes idle connections; resolves when done. */
  shutdown(): Promise<void>;
}

/** Everything runtime-specific the core needs. */
export interface Runtime {
  /** `"deno"` or `"bun"`. */
  readonly name: "deno" | "bun";
  /** Opens a TCP (no-delay) or Unix-socket connection. */
  connect(target: ConnectTarget): Promise<Connection>;
  /** Spawns a process with piped stdio. */
  spawn(options: SpawnOptions): ChildProcess;
  /** Starts an HTTP server. `port: 0` picks a free port. */
  serve(
    options: { hostname: string; port: number; signal?: AbortSignal },
    handler: FetchHandler,
  ): Promise<HttpServer>;
  /** Creates a directory (recursive) with the given mode. */
  mkdir(path: string, mode?: number): Promise<void>;
  /** Makes a fresh private (0700) temp directory under `dir` (or the system temp dir). */
  makeTempDir(options?: { dir?: string; prefix?: string }): Promise<string>;
  /** Removes a file or directory tree; ignores a missing path. */
  remove(path: string, options?: { recursive?: boolean }): Promise<void>;
  /** Reads a whole file. */
  readFile(path: string): Promise<Uint8Array>;
  /** Writes a whole file (created with mode 0600). */
  writeFile(path: string, data: Uint8Array): Promise<void>;
  /** File info, or `null` when the path does not exist. */
  stat(path: string): Promise<{ isFile: boolean; isDirectory: boolean; size: number } | null>;
  /** Lists the entry names in a directory (empty when missing). */
  readDir(path: string): Promise<string[]>;
  /** Resolves symlinks and `..`; throws when the path does not exist. */
  realPath(path: string): Promise<string>;
  /** An environment variable, or undefined. */
  env(name: string): string | undefined;
  /** The number of logical CPUs. */
  cpuCount(): number;
  /** This process's id. */
  pid(): number;
  /** Resident set size of this process in bytes. */
  memoryRss(): number;
  /** Calls `listener` on SIGINT/SIGTERM; returns a function that removes it. */
  onSignal(signal: "SIGINT" | "SIGTERM", listener: () => void): () => void;
  /** Exits the process. */
  exit(code: number): never;
  /** Command-line arguments after the script. */
  args(): string[];
  /** The system temp directory. */
  tempDir(): string;
  /** `/dev/shm` when it exists and is writable, else undefined. */
  shmDir(): string | undefined;
}
