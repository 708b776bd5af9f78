/**
 * {@linkcode PythonServer}: spawns one `python3 -m pyproxy_server`, hands it
 * its secret, reads its ready line, keeps a bounded stderr tail and connects
 * {@linkcode Session}s to it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Logger } from "./logger.ts";
import { randomBytes } from "node:crypto";
import process from "node:process";
import { StartError, StartTimeoutError } from "./errors.ts";
import { hostDirPrefix } from "./_dead_host_dirs.ts";
import {
  BYTECODE_MARKER,
  materializePythonPackage,
} from "./runtime/python_package.ts";
import { defaultRuntime } from "./runtime/mod.ts";
import type { ChildProcess, Runtime } from "./runtime/types.ts";
import { Session, type SessionConnectOptions } from "./session.ts";
import {
  parseReadyLine,
  readReadyLine,
  StderrTail,
} from "./_python_server_io.ts";
import { setTimeoutOrNever } from "./_timer.ts";
import { innerServerPid } from "./_inner_server_pid.ts";
import { StderrLog } from "./_stderr_log.ts";
import type { StderrRecord } from "./_server_record.ts";
export type { StderrRecord } from "./_server_record.ts";
import { connectHost } from "./_connect_host.ts";

/**
 * Variables of the host's environment a server never inherits: the gateway's
 * bearer tokens, the inference one and the management one (which keeps eval
 * and model management from the inference token's clients: model code that
 * read it could hand it to them). (The server also drops them from
 * `os.environ`; not inheriting them keeps them out of `/proc/<pid>/environ`,
 * which model code can read.)
 *
 * And the OpenTelemetry SDK's variables (`OTEL_*`), unless the pool's `env`
 * sets them: they configure the host's tracing (the gateway's), and a
 * model's own OpenTelemetry SDK that inherited them took the gateway's
 * collector, sampler and service name, and its headers (API keys) were
 * there for any model code to read. A model that traces is given its own
 * in `env` (docs/models.md, "Trace context").
 */
const HIDDEN_ENV: readonly string[] = [
  "PYPROXY_TOKEN",
  "PYPROXY_MANAGE_TOKEN",
  "OTEL_*",
];

/**
 * How a server process ended.
 *
 * @example
 * ```ts
 * import type { ExitStatus } from "@pyproxy/pyproxy";
 * const describe = (status: ExitStatus): string =>
 *   status.signal ? `killed by ${status.signal}` : `exited with ${status.code}`;
 * console.log(describe({ code: null, signal: "SIGKILL" })); // "killed by SIGKILL"
 * ```
 */
export interface ExitStatus {
  /** Exit code, or `null` when a signal ended it. */
  code: number | null;
  /** The signal that ended it, or `null`. */
  signal: string | null;
}

/**
 * What the server printed on its stdout once listening (protocol §5).
 *
 * @example
 * ```ts
 * import type { ReadyLine } from "@pyproxy/pyproxy";
 * const ready: ReadyLine = JSON.parse('{"port":40123,"pid":4242,"id":"py-1","unix":null,"version":1}');
 * console.log(ready.unix ?? `tcp:${ready.port}`); // "tcp:40123"
 * ```
 */
export interface ReadyLine {
  /** The bound TCP port (`null` when it listens on a Unix socket only). */
  port: number | null;
  /** The server's process id. */
  pid: number;
  /** The server id. */
  id: string;
  /** The Unix socket path, or `null`. */
  unix: string | null;
  /** Protocol version. */
  version: number;
  /** The server's Python version (`"3.12.1"`; absent from an older server). */
  python?: string;
}

/**
 * glibc's malloc asks for transparent huge pages for its heap and large
 * blocks (glibc >= 2.35; other C libraries and systems ignore it). A large
 * message allocates tens of MB at a time (the file read, the decoded string,
 * the encoded reply), and first touching fresh memory costs one page fault
 * per 4 KiB: 10 MB round trips ran ~20% faster with it (measured on a 2-core
 * VM, where a fault costs ~6 µs), at no measurable cost in resident memory.
 * An explicit `glibc.malloc.hugetlb` setting (`=0` turns it off) is kept:
 * turn it off where the kernel's direct compaction for huge pages (THP
 * `defrag` = `madvise`, the usual default) may stall a worker on a host with
 * fragmented memory, if those stalls matter more than large messages.
 */
const HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb";
/** What the server accepts as `--log-name` (one plain file-name part). */
const LOG_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/;

/**
 * Options of {@linkcode PythonServer.start}.
 *
 * @example
 * ```ts
 * import type { PythonServerOptions } from "@pyproxy/pyproxy";
 * const options: PythonServerOptions = { python: "python3", path: "./models" };
 * console.log(options.path);
 * // await using server = await PythonServer.start(options);
 * ```
 */
export interface PythonServerOptions {
  /**
   * The Python interpreter.
   *
   * @default {"python3"}
   */
  python?: string;
  /** The server's `--path`: model files are resolved (and confined) here, logs go to `<path>/logs`. */
  path: string;
  /**
   * The server id (`--id`). Unless `logName` names the log, a TCP server
   * given one that is a plain file name (letters, digits, `.`, `_`, `-`)
   * logs to `<path>/logs/pythonserver<id>.log`; otherwise a TCP server's log
   * is named after its port, a Unix socket server's after its socket file.
   * While another running server writes that file (two pools on one
   * models directory), the name gets `-2`, `-3`, ... (`pythonserverw1-2.log`;
   * a pool's slot: `pythonserverslot0-2.log`).
   *
   * @default {"py-" + 8 random hex digits}
   */
  id?: string;
  /**
   * TCP address to bind.
   *
   * @default {"127.0.0.1"}
   */
  host?: string;
  /**
   * TCP port; 0 picks a free one. Without `port` the server listens on a
   * Unix socket only (no TCP at all): `unix`, or on Linux and macOS a socket
   * in a new private directory (removed when the process exits); elsewhere
   * it takes a free TCP port.
   *
   * @default {none: a Unix socket on Linux and macOS, else 0}
   */
  port?: number;
  /**
   * Listen on this Unix socket path (and on `port` only when it is given).
   *
   * @default {`<new 0700 temp dir>/server.sock` on Linux and macOS when `port` is not given}
   */
  unix?: string;
  /**
   * The socket's file name in the new private directory made when neither
   * `unix` nor `port` is given (a pool names it after the slot: `w1.sock`),
   * which also names the server's log file unless `logName` does. A plain
   * file name: letters, digits, `.`, `_`, `-`.
   *
   * @default {"server.sock"}
   */
  socketName?: string;
  /**
   * Names the server's log file, `<path>/logs/pythonserver<logName>.log`
   * (its `--log-name`): a plain file name (letters, digits, `.`, `_`, `-`).
   * A pool names its slots' logs after their index (`slot0`, `slot1`, ...),
   * reused as slots come and go, so a resize or an autoscale step adds no
   * file. Without it, a TCP server with a plain `id` logs under its id, any
   * other under its port or its socket file's name.
   *
   * @default {the id (TCP, a plain id), else the port or the socket's file name}
   */
  logName?: string;
  /**
   * The directory of the log file (`--log-dir`), made (0700) when missing;
   * an existing one's mode is left alone. `"-"`: no file, the server logs
   * to its stderr, whose lines reach the host's log (category `["pyproxy",
   * "python-server", "stderr"]`, each at its level, at most 1000 a second
   * rather than the 50 kept for an unplanned stderr).
   *
   * @default {`<path>/logs`}
   */
  logDir?: string;
  /**
   * The shared secret (hex). Generated when absent (32 random bytes); given
   * to the server on stdin, never in argv or the environment.
   */
  secret?: string;
  /**
   * Extra environment variables for the process (over the host's own). A
   * `PYTHONPATH` here is kept, after the directory of the server package
   * (which always comes first); without one, the host's `PYTHONPATH` is.
   * `GLIBC_TUNABLES` (this one, else the host's) gets
   * `glibc.malloc.hugetlb=1` appended unless it sets `glibc.malloc.hugetlb`
   * itself (`=0` turns huge pages off). The host's `PYPROXY_TOKEN`,
   * `PYPROXY_MANAGE_TOKEN` and `OTEL_*` are not inherited; one given here is
   * passed as given.
   */
  env?: Record<string, string>;
  /** Extra command-line arguments for the server (e.g. `["--threads", "4"]`). */
  args?: string[];
  /**
   * How long to wait for the ready line, in milliseconds, before killing the
   * process and rejecting with `StartTimeoutError` (a `StartError`, with
   * `details.phase` `"ready"`). `Infinity`, or anything beyond
   * 2^31 − 1 (~24.8 days, a timer's range), means no limit.
   *
   * @default {15000}
   */
  readyTimeout?: number;
  /**
   * Runtime adapter.
   *
   * @default {defaultRuntime()}
   */
  runtime?: Runtime;
  /** The server's `--max-frame-size` (and the default limit of sessions from {@linkcode PythonServer.connect}). */
  maxFrameSize?: number;
  /**
   * Runs the server under Linux `SCHED_BATCH` (`--sched-batch`): a request
   * that wakes it does not preempt the process running on that core, such
   * as the host's event loop, which keeps its core until it blocks or its
   * slice ends. Same CPU share; ignored (with a warning in the server's
   * log) where the OS has no `SCHED_BATCH`. The gateway turns it on.
   *
   * @default {false}
   */
  schedBatch?: boolean;
  /**
   * Raises the server's Linux `oom_score_adj` by this much, at most to 1000,
   * before any model loads (`--oom-score-adj`): the kernel's OOM killer then
   * ends the server, rather than its host, when memory runs out (a
   * container's limit), whichever is larger; the processes its models start
   * inherit it. 0 leaves it alone. A {@linkcode Pool} passes its own
   * `oomScoreAdj` (500 by default).
   *
   * @default {0}
   */
  oomScoreAdj?: number;
  /**
   * The directory holding the `pyproxy_server` package, put on `PYTHONPATH`.
   *
   * @default {this library's `python/` directory (downloaded once when imported from JSR)}
   */
  pythonPath?: string;
  /**
   * Called with all of the server's stderr (also kept in
   * {@linkcode PythonServer.stderrTail}), a line at a time, with its `\n`,
   * whatever the host's log lets through (not rate-limited): an unfinished
   * line once 50 ms passed without more text (its rest comes later), a line
   * longer than the host logs (4096 characters; 65,536 with `logDir: "-"`)
   * in cuts, a record that long cut. A record of the server's own log
   * (with `logDir: "-"`, or when its log file cannot be opened) comes
   * without the mark that tells it from other text, whole (a traceback over
   * lines, as it would read in a log file), with `record`: its level (as
   * the host logs it), Python logger, thread and message. Before, the text
   * came as read, the records starting with that mark (random per process,
   * meaningless outside it) and their newlines escaped.
   *
   * @example Forward a worker's stderr, its records' levels kept
   * ```ts ignore
   * import { PythonServer } from "@pyproxy/pyproxy";
   * await using server = await PythonServer.start({
   *   logDir: "-",
   *   onStderr(text, record) {
   *     if (record === undefined) console.error(`[w1] ${text.trimEnd()}`);
   *     else console.error(`[w1 ${record.level} ${record.logger}] ${record.message}`);
   *   },
   * });
   * ```
   */
  onStderr?: (text: string, record?: StderrRecord) => void;
  /**
   * Where the launcher logs, and where each line of the server's stderr is
   * logged (a line in the server's log format at its level, a Python
   * traceback as one `error` entry however slowly it is written, any other
   * line as a warning; at most 50 lines a second, the rest counted). Without it, the
   * stderr lines go to the category `["pyproxy", "python-server", "stderr"]`.
   *
   * @default {getLogger(["pyproxy", "python-server"])}
   */
  logger?: Logger;
}

/**
 * Options of {@linkcode PythonServer.connect}: session options without the target and secret.
 *
 * @example
 * ```ts
 * import type { PythonServerConnectOptions } from "@pyproxy/pyproxy";
 * const options: PythonServerConnectOptions = { transport: "tcp" };
 * console.log(options.transport);
 * // const session = await server.connect(options);
 * ```
 */
export interface PythonServerConnectOptions
  extends Omit<SessionConnectOptions, "hostname" | "port" | "path" | "secret"> {
  /**
   * `"unix"` uses the server's Unix socket, `"tcp"` its TCP port.
   *
   * @default {"unix" when the server has a Unix socket, else "tcp"}
   */
  transport?: "tcp" | "unix";
}

/**
 * Options of {@linkcode PythonServer.stop}.
 *
 * @example
 * ```ts
 * import type { PythonServerStopOptions } from "@pyproxy/pyproxy";
 * const options: PythonServerStopOptions = { grace: 1000 };
 * console.log(options.grace);
 * // await server.stop(options);
 * ```
 */
export interface PythonServerStopOptions {
  /**
   * How long to wait for a clean exit after `stopServer`, in milliseconds,
   * before the process is killed (beyond 2^31 − 1, ~24.8 days: no limit).
   * The `closeMs` of the server's reply (its models' `close()` hooks) is
   * added to it.
   *
   * @default {3000}
   */
  grace?: number;
}

/**
 * One running pyproxy Python server process.
 *
 * @example Start a server, call it, shut it down
 * ```ts ignore
 * import { PythonServer } from "@pyproxy/pyproxy";
 * await using server = await PythonServer.start({ path: "./models" });
 * await using session = await server.connect();
 * console.log(await session.ping()); // "pong"
 * ```
 */
export class PythonServer implements AsyncDisposable {
  #child: ChildProcess;
  #pid: number;
  #ready: ReadyLine;
  #options: PythonServerOptions;
  #secret: string;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stderr: StderrTail;
  #exited: Promise<ExitStatus>;
  #host: string;

  private constructor(
    child: ChildProcess,
    pid: number,
    ready: ReadyLine,
    options: PythonServerOptions,
    secret: string,
    stdin: WritableStreamDefaultWriter<Uint8Array>,
    stderr: StderrTail,
    exited: Promise<ExitStatus>,
  ) {
    this.#child = child;
    this.#pid = pid;
    this.#ready = ready;
    this.#options = options;
    this.#secret = secret;
    this.#stdin = stdin;
    this.#stderr = stderr;
    this.#exited = exited;
    this.#host = options.host ?? "127.0.0.1";
  }

  /**
   * Spawns the server and resolves once it printed its ready line. Rejects
   * with `StartError` (carrying the stderr tail in its message and
   * `details.stderr`) when the process cannot be spawned, exits first, prints
   * something else, or stays silent for `readyTimeout` (then a
   * `StartTimeoutError`, phase `"ready"`); the process is killed in every
   * failure case.
   *
   * @example
   * ```ts ignore
   * const server = await PythonServer.start({ path: dir, unix: `${dir}/py.sock` });
   * ```
   */
  static async start(options: PythonServerOptions): Promise<PythonServer> {
    const runtime = options.runtime ?? defaultRuntime();
    const logger = options.logger ?? getLogger(["pyproxy", "python-server"]);
    const python = options.python ?? "python3";
    const id = options.id ?? `py-${randomBytes(4).toString("hex")}`;
    const secret = options.secret ?? randomBytes(32).toString("hex");
    // What the server's records on stderr start with (its
    // PYPROXY_LOG_MARK), random per process: text that anything else in
    // the process writes there (a subprocess, a C library, a model printing
    // a client's words) cannot pass for one of them.
    const logMark = randomBytes(12).toString("hex");
    if (
      options.socketName !== undefined && !LOG_NAME.test(options.socketName)
    ) {
      throw new TypeError(
        `Cannot start python server ${id}: socketName must be a plain file name (letters, digits, '.', '_', '-'), got ${
          JSON.stringify(options.socketName.slice(0, 80))
        }`,
      );
    }
    if (options.logName !== undefined && !LOG_NAME.test(options.logName)) {
      throw new TypeError(
        `Cannot start python server ${id}: logName must be a plain file name (letters, digits, '.', '_', '-'), got ${
          JSON.stringify(options.logName.slice(0, 80))
        }`,
      );
    }
    const pythonPath = options.pythonPath ?? await packageDir(runtime);

    // Local by default: a Unix socket in a private directory is faster than
    // loopback TCP (sequential calls ~1.2x) and reachable by this user only.
    let unix = options.unix;
    let port = options.port;
    if (unix !== undefined && byteLength(unix) > MAX_UNIX_PATH) {
      throw new TypeError(
        `Cannot start python server ${id}: the Unix socket path is ${
          byteLength(unix)
        } bytes long, above the ${MAX_UNIX_PATH} the OS takes: ${unix}`,
      );
    }
    let socketDir: string | undefined;
    if (unix === undefined && port === undefined && unixByDefault()) {
      const name = options.socketName ?? "server.sock";
      // A long TMPDIR (CI runners, nested sandboxes) makes a path the OS
      // refuses ("AF_UNIX path too long"): /tmp then, else TCP. So does a
      // directory Deno would ask for (outside its --allow-read or
      // --allow-write lists): never asked.
      let denied = false;
      for (const dir of [undefined, "/tmp"]) {
        if (dir !== undefined && runtime.tempDir() === dir) continue;
        if (runtime.mayAccess?.(dir ?? runtime.tempDir()) === false) {
          denied = true;
          continue;
        }
        const made = await runtime.makeTempDir({
          prefix: await hostDirPrefix("pyproxy-sock", runtime),
          ...(dir === undefined ? {} : { dir }),
        }).catch((err) => {
          if (dir === undefined) {
            // A read-only root file system (a locked-down container) without
            // a volume for the temp directory: the runtime's message alone
            // ("Read-only file system (os error 30): tmpdir") named neither
            // the directory nor the way out.
            throw new StartError(
              `Cannot start python server ${id}: cannot make the directory of its Unix socket in the temp directory ${runtime.tempDir()}: ${
                (err as { message?: unknown })?.message ?? err
              } (set TMPDIR to a directory this user can write; in a container with a read-only root file system, mount a volume such as an emptyDir at /tmp)`,
              { cause: err },
            );
          }
          return undefined; // no usable /tmp: TCP
        });
        if (made === undefined) break;
        if (byteLength(`${made}/${name}`) <= MAX_UNIX_PATH) {
          socketDir = made;
          unix = `${made}/${name}`;
          break;
        }
        await runtime.remove(made, { recursive: true }).catch(() => {});
      }
      if (unix === undefined && denied) {
        port = 0;
        logger.warn(
          "Python server {id} listens on loopback TCP: no read and write access to the temp directory {dir} for its Unix socket (Deno: grant it in --allow-read and --allow-write for the faster, private socket)",
          { id, dir: runtime.tempDir() },
        );
      } else if (unix === undefined) {
        port = 0;
        logger.warn(
          "Python server {id} listens on loopback TCP: a Unix socket in the temp directory {dir} would have a path above the {max} bytes the OS takes (set TMPDIR to a shorter directory for the faster, private socket)",
          { id, dir: runtime.tempDir(), max: MAX_UNIX_PATH },
        );
      }
    }
    const args = [
      "-c",
      BOOTSTRAP,
      "--host",
      options.host ?? "127.0.0.1",
    ];
    // With a Unix socket and no explicit port the server listens on the socket only: nothing reachable
    // over TCP at all (docs/security.md).
    if (unix === undefined || port !== undefined) {
      args.push("--port", String(port ?? 0));
    }
    args.push("--path", options.path, "--id", id);
    if (unix !== undefined) args.push("--unix", unix);
    if (options.logDir !== undefined) args.push("--log-dir", options.logDir);
    if (options.logName !== undefined) {
      args.push("--log-name", options.logName);
    } else if (
      unix === undefined && options.id !== undefined &&
      LOG_NAME.test(options.id)
    ) {
      // A TCP server's log is named after its port unless told otherwise: a
      // pool slot (`w1`) keeps one log file across restarts and runs.
      args.push("--log-name", options.id);
    }
    if (options.maxFrameSize !== undefined) {
      args.push("--max-frame-size", String(options.maxFrameSize));
    }
    if (options.schedBatch === true) args.push("--sched-batch");
    if (options.oomScoreAdj !== undefined && options.oomScoreAdj !== 0) {
      args.push("--oom-score-adj", String(options.oomScoreAdj));
    }
    // Under a python wrapper the server's parent is the wrapper: this lets
    // it see the host gone (killed) and end what its model code started.
    args.push("--host-pid", String(runtime.pid()));
    args.push(...(options.args ?? []));
    // The package's directory comes first (the server must import our pyproxy_server), then the
    // caller's PYTHONPATH: `env.PYTHONPATH` when given (it replaces the host's, as every `env`
    // variable does), else the host's own.
    const extra = options.env?.PYTHONPATH ?? runtime.env("PYTHONPATH");
    const env: Record<string, string> = {
      PYTHONUNBUFFERED: "1",
      ...options.env,
      PYPROXY_LOG_MARK: logMark,
      PYTHONPATH: extra
        ? `${pythonPath}${pathDelimiter()}${extra}`
        : pythonPath,
    };
    const tunables = options.env?.GLIBC_TUNABLES ??
      runtime.env("GLIBC_TUNABLES");
    if (!tunables?.includes(HUGE_PAGES_TUNABLE)) {
      env.GLIBC_TUNABLES = tunables
        ? `${tunables}:${HUGE_PAGES_TUNABLE}=1`
        : `${HUGE_PAGES_TUNABLE}=1`;
    }

    let child: ChildProcess;
    const removeSocketDir = async (): Promise<void> => {
      if (socketDir !== undefined) {
        await runtime.remove(socketDir, { recursive: true }).catch(() => {});
      }
    };
    try {
      // A process group of its own: what model code starts (a fork, a
      // subprocess) ends with the server instead of outliving the pool.
      child = runtime.spawn({
        cmd: python,
        args,
        env,
        unsetEnv: HIDDEN_ENV,
        processGroup: true,
      });
    } catch (err) {
      await removeSocketDir();
      const e = err as { name?: unknown; code?: unknown; message?: unknown };
      // Deno: NotFound; Bun and Node: ENOENT.
      const missing = e?.name === "NotFound" || e?.code === "ENOENT";
      // A directory (a virtualenv's or pyenv's root) or a file without
      // execute permission. Deno: PermissionDenied; Bun and Node: EACCES.
      const notExecutable = e?.name === "PermissionDenied" ||
        e?.code === "EACCES";
      throw new StartError(
        `Cannot start python server ${id}: cannot spawn '${python}': ${
          e?.message ?? err
        }${
          missing
            ? ` (no such program: install Python >= 3.9, or give its path in the pool's python option, serve's --python)`
            : notExecutable
            ? ` (not an executable: give the Python interpreter itself, such as <venv>/bin/python3, in the pool's python option, serve's --python)`
            : ""
        }`,
        { cause: err },
      );
    }
    const stdin = child.stdin.getWriter();
    // The socket's directory goes with the process (before `exited` resolves).
    const exited = child.status.then(async (status) => {
      // What it left running (a model's forked child, a wrapper's python).
      child.killGroup("SIGKILL");
      // Our end of its stdin: a server that died by itself (a crash, kill -9)
      // is dropped by its pool without a kill(), and this fd stayed open,
      // one more per crash. (Its stdout and stderr close at their EOF.)
      stdin.close().catch(() => {});
      await removeSocketDir();
      return status;
    });
    logger.debug("Spawned python server {id} (pid {pid})", {
      id,
      pid: child.pid,
    });

    // Each line into the host's log too (rate-limited): a thread's
    // traceback, a C library's message, or the server's whole log when it
    // cannot open its log file.
    const onText = options.onStderr;
    const stderrLog = new StderrLog(
      options.logger ?? getLogger(["pyproxy", "python-server", "stderr"]),
      id,
      // Its whole log, on purpose: more lines than a traceback's burst, and
      // a record with its traceback on one line (escaped) kept whole.
      options.logDir === "-"
        ? {
          maxLinesPerSecond: 1000,
          maxLineChars: 65_536,
          mark: logMark,
          ...(onText === undefined ? {} : { onText }),
        }
        : { mark: logMark, ...(onText === undefined ? {} : { onText }) },
    );
    const stderr = new StderrTail(
      child.stderr,
      (text) => stderrLog.push(text),
      () => stderrLog.end(),
      logMark,
    );
    // stdin failing (the child is already gone) is reported by the exit below.
    // The mark again, for a wrapper that passes stdin on but not the
    // environment (`docker run` without `-e`).
    stdin.write(
      new TextEncoder().encode(JSON.stringify({ secret, logMark }) + "\n"),
    )
      .catch(() => {});
    const readyTimeout = options.readyTimeout ?? 15_000;
    // `exit`: how the process ended by itself (details.code and .signal);
    // `timeout`: it did not end, it ran out of readyTimeout.
    const fail = async (
      why: string,
      exit?: { code: number | null; signal: string | null },
      timeout?: { phase: "ready"; timeoutMs: number },
    ): Promise<never> => {
      child.kill("SIGKILL");
      await exited;
      stdin.close().catch(() => {});
      await stderr.settled(1000);
      const tail = stderr.text();
      const Class = timeout === undefined ? StartError : StartTimeoutError;
      throw new Class(
        `Cannot start python server ${id}: ${why}${
          tail ? `\n--- stderr (tail) ---\n${tail}` : ""
        }`,
        // `pid`: the process that ended (killed here, or by itself).
        { details: { stderr: tail, id, pid: child.pid, ...exit, ...timeout } },
      );
    };

    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      readReadyLine(child.stdout).then((line) => ({
        kind: "line" as const,
        line,
      })),
      child.status.then((status) => ({ kind: "exit" as const, status })),
      // Beyond a timer's range (Infinity too): no limit.
      new Promise<{ kind: "timeout" }>((
        resolve,
      ) => (timer = setTimeoutOrNever(
        () => resolve({ kind: "timeout" }),
        readyTimeout,
      ))),
    ]);
    clearTimeout(timer);
    if (outcome.kind === "timeout") {
      return await fail(
        `no ready line within ${readyTimeout} ms (readyTimeout)`,
        undefined,
        { phase: "ready", timeoutMs: readyTimeout },
      );
    }
    // stdout usually reaches its end just before the exit status arrives.
    if (
      outcome.kind === "exit" ||
      (outcome.line === undefined && await exitsWithin(child.status, 2000))
    ) {
      const { code, signal } = await child.status;
      return await fail(
        `it exited (${
          signal ? `signal ${signal}` : `code ${code}`
        }) before it was ready`,
        { code, signal: signal ?? null },
      );
    }
    if (outcome.line === undefined) {
      return await fail("its stdout closed before it printed a ready line");
    }
    let ready: ReadyLine;
    try {
      ready = parseReadyLine(outcome.line);
    } catch (err) {
      return await fail(
        `bad ready line ${JSON.stringify(outcome.line.slice(0, 200))}: ${
          (err as Error).message
        }`,
      );
    }
    logger.debug("Python server {id} is ready: {ready}", { id, ready });
    // Under a wrapper that runs Python as its child, the server is not the
    // process spawned: signal its group too, and know it by its own pid
    // (eval events carry it). Kept to the spawned child unless confirmed.
    const inner = await innerServerPid(runtime, child.pid, ready.pid);
    if (inner !== undefined) {
      child.adoptGroup?.(inner);
      logger.debug(
        "Python server {id} runs under a wrapper (pid {wrapper}): server pid {pid}",
        { id, wrapper: child.pid, pid: inner },
      );
    }
    return new PythonServer(
      child,
      inner ?? child.pid,
      ready,
      options,
      secret,
      stdin,
      stderr,
      exited,
    );
  }

  /**
   * The server's process id: the Python process itself, also under a
   * wrapper that runs it as its child (confirmed on Linux through `/proc`;
   * elsewhere the spawned process's).
   */
  get pid(): number {
    return this.#pid;
  }

  /** The bound TCP port (`0` when the server listens on a Unix socket only). */
  get port(): number {
    return this.#ready.port ?? 0;
  }

  /** The server id. */
  get id(): string {
    return this.#ready.id;
  }

  /** The Unix socket path, when the server listens on one. */
  get unixPath(): string | undefined {
    return this.#ready.unix ?? undefined;
  }

  /** The ready line as printed by the server. */
  get ready(): ReadyLine {
    return this.#ready;
  }

  /** The secret sessions authenticate with. */
  get secret(): string {
    return this.#secret;
  }

  /** Resolves when the process exits (never rejects). */
  get exited(): Promise<ExitStatus> {
    return this.#exited;
  }

  /** The last 64 KiB of the server's stderr, decoded as UTF-8. */
  stderrTail(): string {
    return this.#stderr.text();
  }

  /**
   * The stderr tail once stderr has reached its end, waiting at most `ms`:
   * a server that just died may still have its last words in the pipe.
   *
   * @example
   * ```ts ignore
   * await server.exited;
   * console.log(await server.stderrSettled(1000));
   * ```
   */
  async stderrSettled(ms: number): Promise<string> {
    await this.#stderr.settled(ms);
    return this.#stderr.text();
  }

  /**
   * Opens an authenticated {@linkcode Session} to this server.
   *
   * @example
   * ```ts ignore
   * await using session = await server.connect({ transport: "tcp" });
   * ```
   */
  connect(options: PythonServerConnectOptions = {}): Promise<Session> {
    const { transport, ...rest } = options;
    const useUnix = transport === "unix" ||
      (transport === undefined && this.unixPath !== undefined);
    // Started with --insecure-no-auth by the caller's own args: a server that
    // asks for no authentication is expected, not an impostor (the session
    // refuses one where it holds a secret).
    const insecure = this.#options.args?.includes("--insecure-no-auth") ===
      true;
    const base: SessionConnectOptions = {
      ...(insecure ? {} : { secret: this.#secret }),
      ...(this.#options.runtime === undefined
        ? {}
        : { runtime: this.#options.runtime }),
      ...(this.#options.maxFrameSize === undefined
        ? {}
        : { maxFrameSize: this.#options.maxFrameSize }),
      ...rest,
    };
    if (useUnix) {
      if (this.unixPath === undefined) {
        return Promise.reject(
          new TypeError(
            `Cannot connect to python server ${this.id}: it has no Unix socket`,
          ),
        );
      }
      return Session.connect({ ...base, path: this.unixPath });
    }
    if (this.port === 0) {
      return Promise.reject(
        new TypeError(
          `Cannot connect to python server ${this.id} over TCP: it listens on its Unix socket only (start it with a port)`,
        ),
      );
    }
    return Session.connect({
      ...base,
      hostname: connectHost(this.#host),
      port: this.port,
    });
  }

  /**
   * Closes the server's stdin, which tells it to exit (the same thing it sees
   * when the host dies). Does not wait for the exit; see {@linkcode PythonServer.exited}.
   */
  async closeStdin(): Promise<void> {
    await this.#stdin.close().catch(() => {});
  }

  /**
   * Sends `signal` (default `SIGTERM`) and resolves once the process exited;
   * a process still alive after `grace` milliseconds gets `SIGKILL` (beyond
   * 2^31 − 1, ~24.8 days: never). Never rejects; safe to call on an exited
   * server.
   *
   * @example
   * ```ts ignore
   * const { code, signal } = await server.kill("SIGKILL");
   * ```
   */
  async kill(
    signal: "SIGTERM" | "SIGKILL" | "SIGINT" = "SIGTERM",
    grace = 2000,
  ): Promise<ExitStatus> {
    this.#child.kill(signal);
    if (signal !== "SIGKILL" && !(await exitsWithin(this.#exited, grace))) {
      this.#child.kill("SIGKILL");
    }
    const status = await this.#exited;
    this.#stdin.close().catch(() => {});
    await this.#stderr.settled(1000);
    return status;
  }

  /**
   * Stops the server cleanly: `stopServer` over a fresh session, then waits
   * up to `grace` ms for the exit, then kills it. Never rejects.
   *
   * @example
   * ```ts ignore
   * await server.stop({ grace: 1000 });
   * ```
   */
  async stop(options: PythonServerStopOptions = {}): Promise<ExitStatus> {
    const grace = options.grace ?? 3000;
    let closeMs = 0;
    try {
      await using session = await this.connect({ connectTimeout: grace });
      const reply = await session.stop({ timeout: grace });
      // The models' close() hooks may hold the exit that long (bounded by the server).
      if (Number.isInteger(reply?.closeMs) && reply.closeMs! > 0) {
        closeMs = reply.closeMs!;
      }
    } catch (err) {
      (this.#options.logger ?? getLogger(["pyproxy", "python-server"])).debug(
        "stopServer on {id} failed, closing stdin instead: {err}",
        { id: this.id, err },
      );
    }
    if (closeMs > 0) await exitsWithin(this.#exited, grace + closeMs);
    await this.closeStdin();
    await exitsWithin(this.#exited, grace);
    // A no-op when it already exited.
    return await this.kill("SIGKILL");
  }

  /** Kills the process (SIGTERM, then SIGKILL) and waits for it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill("SIGTERM");
  }
}

/** The `python/` directory of this library, as a local path. */
async function packageDir(runtime: Runtime): Promise<string> {
  try {
    return await materializePythonPackage(
      runtime,
      new URL("../python/", import.meta.url),
    );
  } catch (err) {
    if (err instanceof StartError) throw err;
    throw new StartError(
      `Cannot start python server: the python package could not be materialised from ${
        new URL("../python/", import.meta.url).href
      } (${(err as Error)?.message ?? err}); pass pythonPath`,
      { cause: err },
    );
  }
}

/** A wildcard bind address is reached through loopback. */
/**
 * The longest Unix socket path every supported OS takes, in bytes (Linux's
 * `sun_path` holds 107 and a NUL, macOS's 103).
 */
const MAX_UNIX_PATH = 103;

const utf8 = new TextEncoder();

function byteLength(path: string): number {
  return utf8.encode(path).byteLength;
}

/**
 * Whether a local server listens on a Unix socket unless told otherwise
 * (Linux and macOS; TCP elsewhere). Shared with the pool's `transport` default.
 *
 * @example
 * ```ts
 * import { unixByDefault } from "@pyproxy/pyproxy";
 * console.log(typeof unixByDefault()); // "boolean"
 * ```
 */
export function unixByDefault(): boolean {
  return process.platform === "linux" || process.platform === "darwin";
}

/**
 * How the server is started: as `python3 -m pyproxy_server` would, but
 * without the working directory on `sys.path`. `-m` (and `-c`) put it first,
 * before `PYTHONPATH`, so whoever can write to the host's working directory
 * (a gateway started in /tmp, a shared checkout) would have their
 * `pyproxy_server/` or `json.py` imported in place of ours, as this user.
 * The entry goes before anything is imported; `PYTHONSAFEPATH` (3.11+) has
 * already left it out.
 *
 * Under `PYTHONDONTWRITEBYTECODE` (CI machines, containers set it), the
 * package copy that `materializePythonPackage` made from JSR (it holds
 * `BYTECODE_MARKER`) would be compiled again at every start (~80 ms of CPU):
 * its missing `.pyc` files are written first, with `py_compile` (one atomic
 * rename each: starts at once are safe; the `.pyc` names carry the Python
 * version; `PYTHONPYCACHEPREFIX` is followed), and then imported. A copy
 * that cannot be written (read-only) is left as it is, silently; a checkout,
 * and the models' own files, keep Python's setting. Python 2 and < 3.9 skip
 * it, to reach the package's message about the version.
 */
const BOOTSTRAP = "import sys\n" +
  "if sys.path and sys.path[0] == '': del sys.path[0]\n" +
  "if sys.dont_write_bytecode and sys.version_info >= (3, 9):\n" +
  "  def _pyproxy_bytecode():\n" +
  "    import importlib.machinery, importlib.util, os\n" +
  "    spec = importlib.machinery.PathFinder.find_spec('pyproxy_server')\n" +
  "    if spec is None or not spec.submodule_search_locations: return\n" +
  "    root = os.path.dirname(spec.submodule_search_locations[0])\n" +
  `    if not os.path.isfile(os.path.join(root, '${BYTECODE_MARKER}')): return\n` +
  "    for pkg in ('pyproxy_server', 'pyproxy'):\n" +
  "      src = os.path.join(root, pkg)\n" +
  "      if not os.path.isdir(src): continue\n" +
  "      todo = []\n" +
  "      for name in sorted(os.listdir(src)):\n" +
  "        if name.endswith('.py'):\n" +
  "          py = os.path.join(src, name)\n" +
  "          pyc = importlib.util.cache_from_source(py)\n" +
  "          if not os.path.exists(pyc): todo.append((py, pyc))\n" +
  "      if not todo: continue\n" +
  "      here = os.path.dirname(todo[0][1])\n" +
  "      while not os.path.isdir(here) and os.path.dirname(here) != here: here = os.path.dirname(here)\n" +
  "      if not os.access(here, os.W_OK): continue\n" +
  "      import py_compile\n" +
  "      for py, pyc in todo: py_compile.compile(py, pyc, doraise=True)\n" +
  "  try: _pyproxy_bytecode()\n" +
  "  except Exception: pass\n" +
  "  del _pyproxy_bytecode\n" +
  "import runpy\n" +
  "runpy._run_module_as_main('pyproxy_server')\n";

// PYTHONPATH's separator, as Python reads it (os.pathsep).
function pathDelimiter(): string {
  return process.platform === "win32" ? ";" : ":";
}

async function exitsWithin(
  exited: Promise<ExitStatus>,
  ms: number,
): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const done = await Promise.race([
    exited.then(() => true),
    new Promise<boolean>((
      resolve,
    ) => (timer = setTimeoutOrNever(() => resolve(false), ms))),
  ]);
  clearTimeout(timer);
  return done;
}
