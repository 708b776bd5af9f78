/**
 * The spill-over plugin (protocol §8): messages larger than a threshold
 * travel through files in a private directory (in `/dev/shm` when
 * available) instead of the socket, in both directions.
 *
 * @module
 */
import { checkOptionKeys } from "./_plugin_options.ts";
import {
  CancelledError,
  ConfigError,
  PyProxyError,
  SerializationError,
  SpillError,
  UnsafeIntegerError,
} from "../src/errors.ts";
import {
  refusedError,
  serializationError,
  unencodableError,
} from "../src/_json_check.ts";
import { NonFiniteNumberError, nonFiniteReason } from "../src/_non_finite.ts";
import {
  EXACT_JSON_DEPTH,
  ExactJson,
  holdsUnsafeNumber,
  unsafeIntegerError,
  withRawIntegers,
} from "../src/_exact_json.ts";
import { isPrivateDir } from "../src/_private_dir.ts";
import { hostDirPrefix, removeDeadHostDirs } from "../src/_dead_host_dirs.ts";
import type {
  MessageContext,
  Plugin,
  PluginContext,
  PluginMetric,
  WireMessage,
} from "../src/plugin.ts";
import type { Runtime } from "../src/runtime/types.ts";
import type { Session } from "../src/session.ts";
import { jsonSizeBound } from "./_json_size.ts";
import { holdsBytes } from "../src/_binary.ts";
import { ParallelMd5 } from "./_parallel_md5.ts";
import { crc32, discardSpill, readSpill, writeSpill } from "./_spill_file.ts";
import { onePool } from "./_one_pool.ts";
import { SpillFallbackLog } from "./_spill_fallback_log.ts";
import { DEFAULT_MAX_FRAME_SIZE } from "../src/protocol/frame.ts";

// From this size on, md5 runs on hash threads (started on the first such message).
const PARALLEL_MD5_BYTES = 4 * 1024 * 1024;
// Hash threads: with part hashes, parts alternate between them.
const MD5_THREADS = 2;
// Part size offered in configure (protocol §8): a file gets one md5 per MiB, hashed side by side.
const PART_SIZE = 1024 * 1024;
// Strings of at least this many characters go after the JSON as raw UTF-8, to a server that reads
// string segments (protocol §8): no escaping, scanning or unescaping pass on either side.
const SEGMENT_CHARS = 64 * 1024;
// The file system's refusals of a spill file (its `code`, Deno and Bun alike)
// after which a message that fits a frame goes inline: out of space (a full
// /dev/shm, a quota, RLIMIT_FSIZE) or a directory that no longer takes files
// (read-only, permissions changed, removed by a cleaner). Not EIO and the
// like: a failing device is reported as it is.
const REFUSALS = new Set([
  "ENOSPC",
  "EDQUOT",
  "EFBIG",
  "EROFS",
  "EACCES",
  "EPERM",
  "ENOENT",
]);

/**
 * Options of {@linkcode spillover}.
 *
 * @example
 * ```ts
 * import { spillover } from "@pyproxy/pyproxy";
 * const plugin = spillover({ threshold: 256 * 1024, maxBytes: 1024 ** 3 });
 * console.log(plugin.threshold); // 262144
 * ```
 */
export interface SpilloverOptions {
  /** Messages whose encoded JSON is larger than this many bytes are spilled. @default {1048576} */
  threshold?: number;
  /**
   * Parent of the pool's private spill directory (a fresh 0700
   * `pyproxy-spill-<pid>-<start>-*` directory is made inside it and removed
   * at close).
   * @default {runtime.shmDir() ?? runtime.tempDir()}
   */
  dir?: string;
  /**
   * Most bytes of spill files this host may have written and not yet seen
   * consumed; a request that would pass it fails with `SpillError`.
   * @default {4294967296}
   */
  maxBytes?: number;
}

/**
 * Counters of a {@linkcode SpilloverPlugin}.
 *
 * @example
 * ```ts
 * import { spillover } from "@pyproxy/pyproxy";
 * const plugin = spillover();
 * console.log(plugin.stats.spilledOut, plugin.stats.failures); // 0 0
 * ```
 */
export interface SpilloverStats {
  /** Outgoing messages written to files. */
  spilledOut: number;
  /** Bytes of those files. */
  bytesOut: number;
  /** Incoming `$spill` messages read back. */
  spilledIn: number;
  /** Bytes of those files. */
  bytesIn: number;
  /** Incoming `$spill` references that failed their checks. */
  failures: number;
  /**
   * Spilled replies to requests given up on (timed out or aborted), whose
   * files were deleted unread.
   */
  dropped: number;
  /**
   * Requests given up on (timed out or aborted) while their file was being
   * written: the writing stopped, the file was removed, and they were never
   * sent.
   */
  abandoned: number;
  /** Spill files (either way) hashed on other threads than the main one. */
  hashedOffThread: number;
  /**
   * Outgoing spill files the file system refused (out of space, read-only,
   * permissions, removed directory), whether the message then went inline
   * or failed with `SpillError`.
   */
  writeFailures: number;
  /** Of those, messages sent inline instead (they fit the server's frame limit). */
  inlineFallbacks: number;
}

/**
 * The plugin returned by {@linkcode spillover}.
 *
 * @example
 * ```ts
 * import { spillover, type SpilloverPlugin } from "@pyproxy/pyproxy";
 * const plugin: SpilloverPlugin = spillover({ threshold: 1024 * 1024 });
 * console.log(plugin.dir); // undefined until the pool starts
 * ```
 */
export interface SpilloverPlugin extends Plugin {
  /** The pool's spill directory (a realpath), once the pool started. */
  readonly dir: string | undefined;
  /** The threshold in bytes. */
  readonly threshold: number;
  /** Bytes of host-written spill files not yet known to be consumed. */
  readonly pendingBytes: number;
  /** Counters, for tests and metrics. */
  readonly stats: Readonly<SpilloverStats>;
  /** The counters as `GET /metrics` samples (`pyproxy_spillover_*`). */
  metrics(): PluginMetric[];
}

interface HostFile {
  session: Session;
  id: unknown;
  size: number;
}

/**
 * Creates the spill-over plugin (a default plugin of every pool). Each
 * worker process gets its own subdirectory, sent to it with
 * `configure {spill: {dir, threshold, partSize, crc32, strings}}` when its
 * session opens and removed when the process exits, so a crash leaves
 * nothing behind. With a server that reads them (protocol §8), files carry a
 * CRC-32 and strings of 64 Ki characters or more go after the JSON as raw
 * UTF-8; with an older server, files of 4 MiB or more are md5-hashed off the
 * main thread, in 1 MiB parts on two threads when it reads part hashes.
 *
 * @example Spill anything above 256 KiB through /tmp
 * ```ts ignore
 * import { Pool } from "@pyproxy/pyproxy";
 * import { spillover } from "@pyproxy/pyproxy";
 * await using pool = await Pool.start({ plugins: [spillover({ threshold: 256 * 1024, dir: "/tmp" })] });
 * ```
 */
export function spillover(options: SpilloverOptions = {}): SpilloverPlugin {
  checkOptionKeys("spillover", options, ["threshold", "dir", "maxBytes"]);
  const threshold = options.threshold ?? 1024 * 1024;
  const maxBytes = options.maxBytes ?? 4 * 1024 * 1024 * 1024;
  if (!Number.isInteger(threshold) || threshold < 1) {
    throw new ConfigError(
      `Cannot create spillover plugin: threshold: expected an integer >= 1, got ${threshold}`,
      { details: { field: "threshold" } },
    );
  }
  if (typeof maxBytes !== "number" || !(maxBytes > 0)) {
    throw new ConfigError(
      `Cannot create spillover plugin: maxBytes: expected a number > 0, got ${maxBytes}`,
      { details: { field: "maxBytes" } },
    );
  }
  if (
    options.dir !== undefined &&
    (typeof options.dir !== "string" || options.dir === "")
  ) {
    throw new ConfigError(
      "Cannot create spillover plugin: dir: expected a non-empty string",
      { details: { field: "dir" } },
    );
  }
  let runtime: Runtime | undefined;
  let root: string | undefined;
  // Where root is made (again, when it stopped being ours).
  let parent: string | undefined;
  // Worker ids repeat from pool to pool: a second pool would remove the first one's directories.
  const owner = onePool("spillover");
  let generation = 0;
  let pendingBytes = 0;
  // Per worker id, the subdirectory of its current process.
  const workerDirs = new Map<string, string>();
  // Per configured session, the subdirectory its server was told about.
  const sessionDirs = new WeakMap<Session, string>();
  // Where a session's spill files are: its own directory, else its worker's.
  const dirOf = (mc: MessageContext): string | undefined =>
    sessionDirs.get(mc.session) ?? workerDirs.get(mc.worker.id);
  // Per configured session whose server reads part hashes, their part size.
  const sessionParts = new WeakMap<Session, number>();
  // Configured sessions whose server reads CRC-32 references, and string segments.
  const sessionCrc = new WeakSet<Session>();
  const sessionStrings = new WeakSet<Session>();
  const sessionBytes = new WeakSet<Session>();
  // Per configured session whose server's frame limit is below the
  // threshold (`--max-frame-size` under 1 MiB), that limit: what is larger
  // spills, or it could not be sent at all. None in the usual case, and then
  // no lookup per message.
  let smallFrames: WeakMap<Session, number> | undefined;
  const thresholdOf = (session: Session): number =>
    smallFrames === undefined
      ? threshold
      : smallFrames.get(session) ?? threshold;
  // Files this host wrote that the server may not have consumed yet, by path.
  const hostFiles = new Map<string, HostFile>();
  // The hash threads: none until a large message needs them, then their start (none where they cannot run).
  let md5Start: Promise<unknown> | undefined;
  let md5: ParallelMd5[] = [];
  // Started in the background: messages hash on this thread until they are ready.
  const md5Threads = (bytes: number): ParallelMd5[] => {
    if (bytes < PARALLEL_MD5_BYTES) return [];
    if (md5Start === undefined) {
      const starting = Promise.all(
        Array.from({ length: MD5_THREADS }, () => ParallelMd5.start()),
      );
      md5Start = starting.then((started) => {
        const threads = started.filter((t) => t !== undefined);
        if (md5Start === undefined) threads.forEach((t) => t.close()); // the pool closed meanwhile
        else md5 = threads;
      });
    }
    const ready = md5.filter((t) => !t.failed);
    if (ready.length > 0) stats.hashedOffThread++;
    return ready;
  };
  const stats: SpilloverStats = {
    spilledOut: 0,
    bytesOut: 0,
    spilledIn: 0,
    bytesIn: 0,
    failures: 0,
    dropped: 0,
    abandoned: 0,
    hashedOffThread: 0,
    writeFailures: 0,
    inlineFallbacks: 0,
  };
  const refusals = new SpillFallbackLog();

  async function configure(session: Session, workerId: string): Promise<void> {
    if (sessionDirs.has(session)) return;
    const dir = workerDirs.get(workerId);
    if (dir === undefined) return;
    // A message larger than the server's frame limit (which it writes
    // under too) is sent only spilled, whatever the threshold: both sides
    // spill above the smaller of the two.
    const limit = session.serverInfo.maxFrameSize;
    const own = typeof limit === "number" && limit > 0 && limit < threshold
      ? limit
      : threshold;
    const spill: Record<string, unknown> = {
      dir,
      threshold: own,
      partSize: PART_SIZE,
      strings: true,
      bytes: true,
    };
    if (crc32 !== undefined) spill.crc32 = true;
    const reply = await session.request<
      {
        spill?: {
          partSize?: unknown;
          crc32?: unknown;
          strings?: unknown;
          bytes?: unknown;
        };
      }
    >("configure", { spill });
    // A server that does not know a form ignores its field and leaves it out of its reply.
    if (reply?.spill?.partSize === PART_SIZE) {
      sessionParts.set(session, PART_SIZE);
    }
    if (crc32 !== undefined && reply?.spill?.crc32 === true) {
      sessionCrc.add(session);
    }
    if (reply?.spill?.strings === true) sessionStrings.add(session);
    if (reply?.spill?.bytes === true) sessionBytes.add(session);
    if (own < threshold) (smallFrames ??= new WeakMap()).set(session, own);
    sessionDirs.set(session, dir);
  }

  function forget(path: string): void {
    const file = hostFiles.get(path);
    if (file === undefined) return;
    hostFiles.delete(path);
    pendingBytes -= file.size;
  }

  // The server deletes what it reads, so files still present are the only ones that count against maxBytes.
  async function reclaim(rt: Runtime): Promise<void> {
    for (const path of [...hostFiles.keys()]) {
      if ((await rt.stat(path)) === null) forget(path);
    }
  }

  async function spill(
    msg: WireMessage,
    mc: MessageContext,
    dir: string,
  ): Promise<WireMessage | void> {
    const rt = runtime!;
    if (
      !sessionBytes.has(mc.session) &&
      (mc.session.serverInfo as { bytes?: unknown }).bytes !== true &&
      holdsBytes(msg)
    ) {
      // Base64 with `$bytes` would be read as plain strings by this server.
      throw new SerializationError(
        `Cannot send ${
          msg.cmd ?? "message"
        }: it holds bytes (a Uint8Array, ArrayBuffer or DataView) and this Python server does not read them (update pyproxy_server)`,
      );
    }
    const path = `${dir}/h-${++generation}.json`;
    // Only a request is released by its reply; a reply to a Python callback shares no id space with
    // our requests, and waits for reclaim(), the session's close or the worker's exit.
    const file: HostFile = {
      session: mc.session,
      id: msg.cmd === undefined ? undefined : msg.id,
      size: 0,
    };
    // Bytes are counted as they are written: the size is only known at the end, and concurrent spills
    // must see each other's. The file is registered once it exists, so reclaim() never drops it early.
    // A request given up on while its file is written is never sent: the
    // rest of a large message is not worth encoding (nor the server's time).
    const request = msg.cmd !== undefined && typeof msg.id === "number"
      ? msg.id
      : undefined;
    const reserve = async (n: number): Promise<void> => {
      if (request !== undefined && !mc.session.awaits(request)) {
        stats.abandoned++;
        throw new CancelledError(
          `Cannot send ${msg.cmd}: given up on while being spilled`,
        );
      }
      if (pendingBytes + n > maxBytes) await reclaim(rt);
      if (pendingBytes + n > maxBytes) {
        throw new SpillError(
          `Cannot spill a message of at least ${
            file.size + n
          } bytes: ${pendingBytes} bytes are pending and maxBytes is ${maxBytes}`,
          { details: { pendingBytes, maxBytes } },
        );
      }
      if (!hostFiles.has(path)) hostFiles.set(path, file);
      file.size += n;
      pendingBytes += n;
    };
    try {
      const crc = sessionCrc.has(mc.session);
      const ref = await writeSpill(rt, path, msg, {
        threshold: thresholdOf(mc.session),
        reserve,
        // A CRC needs no hash threads: it costs ~0.1 ms per MB on this one.
        md5: crc ? [] : md5Threads(jsonSizeBound(msg, PARALLEL_MD5_BYTES)),
        partSize: sessionParts.get(mc.session),
        crc32: crc,
        strings: sessionStrings.has(mc.session) ? SEGMENT_CHARS : undefined,
        bytes: sessionBytes.has(mc.session),
      });
      if (ref === undefined) return;
      stats.spilledOut++;
      stats.bytesOut += ref.size;
      // id, cmd and ok stay at top level so the peer can answer (or match) even when the file fails.
      const stub: WireMessage = { id: msg.id, $spill: ref };
      if (msg.cmd !== undefined) stub.cmd = msg.cmd;
      if (msg.ok !== undefined) stub.ok = msg.ok;
      return stub;
    } catch (err) {
      forget(path);
      const code = err instanceof SpillError
        ? (err.cause as { code?: unknown } | undefined)?.code
        : undefined;
      if (typeof code !== "string" || !REFUSALS.has(code)) throw err;
      // writeSpill removed what it wrote: the file system refused the file,
      // not the message (maxBytes and a cancel throw no such cause).
      return await refused(msg, mc, dir, err as SpillError);
    }
  }

  // The failure path only: a message that fits the server's frame limit
  // goes inline (the session frames it as any other), else the SpillError.
  async function refused(
    msg: WireMessage,
    mc: MessageContext,
    dir: string,
    err: SpillError,
  ): Promise<WireMessage> {
    stats.writeFailures++;
    const limit = mc.session.serverInfo.maxFrameSize;
    const frame = typeof limit === "number" && limit > 0
      ? limit
      : DEFAULT_MAX_FRAME_SIZE;
    const reason = err.cause instanceof Error ? err.cause.message : err.message;
    const inline = jsonSizeBound(msg, frame) <= frame;
    refusals.refused(mc.plugin.logger, mc.worker.id, dir, reason, inline);
    if (inline) {
      stats.inlineFallbacks++;
      return msg;
    }
    const free = await runtime!.freeBytes?.(dir);
    throw new SpillError(
      `Cannot send ${
        msg.cmd ?? "message"
      }: its spill file in ${dir} was refused (${reason}${
        free === undefined ? "" : `; ${free} bytes free there`
      }) and it is larger than the server's frame limit of ${frame} bytes, so it cannot go inline`,
      { cause: err.cause, details: { dir, maxFrameSize: frame, free } },
    );
  }

  async function unspill(
    msg: WireMessage,
    mc: MessageContext,
  ): Promise<WireMessage> {
    const dir = dirOf(mc);
    try {
      if (dir === undefined) {
        throw new SpillError(
          "Cannot read spill file: spill-over is not configured on this session",
        );
      }
      const ref = msg.$spill as
        | { size?: unknown; md5?: unknown; md5Parts?: unknown }
        | null;
      // Only an md5 is worth the hash threads; a CRC-32 reference is checked on this thread.
      const md5 = ref?.md5 !== undefined || ref?.md5Parts !== undefined;
      const exact = new ExactJson();
      const message = await readSpill(
        runtime!,
        dir,
        msg.$spill,
        md5Threads(md5 && typeof ref?.size === "number" ? ref.size : 0),
        (text) => exact.parse(text),
      );
      // Too deep for the exact read: its integers beyond ±2^53 came rounded,
      // with either integers mode. Refused as the session refuses such a
      // message that came inline (it cannot see this one's depth).
      if (exact.inexact > 0 && holdsUnsafeNumber(message)) {
        const depth = exact.inexactDepth;
        throw new SerializationError(
          `Cannot read spill file: it is nested ${depth} levels deep and holds an integer beyond ±2^53, which the host reads exactly only within ${EXACT_JSON_DEPTH} levels`,
          { details: { depth, limit: EXACT_JSON_DEPTH } },
        );
      }
      if (exact.revived > 0 && mc.session.integers === "number") {
        // As for a message that came inline: refused, with the integer's path.
        const error = unsafeIntegerError("Cannot read spill file", message);
        if (error !== undefined) throw error;
      }
      if (msg.id !== undefined && message.id !== msg.id) {
        throw new SpillError(
          `Cannot read spill file: it holds message ${message.id}, expected ${msg.id}`,
        );
      }
      stats.spilledIn++;
      stats.bytesIn += (msg.$spill as { size: number }).size;
      return message;
    } catch (err) {
      // The file was read: what it holds is refused, not the spill-over.
      const refused = err instanceof UnsafeIntegerError ||
        err instanceof SerializationError;
      if (!refused) stats.failures++;
      // The session fails what it belongs to (a call, a stream, a host
      // command) with this very error, as for such a message inline.
      if (err instanceof SerializationError) throw err;
      // A reply that cannot be read still settles its request, with the SpillError; a request stub keeps
      // its cmd and an event stub has no id: those are the session's to report.
      if (typeof msg.id === "number" && msg.cmd === undefined) {
        const error = err instanceof Error ? err : new SpillError(String(err));
        return {
          id: msg.id,
          ok: false,
          error: err instanceof UnsafeIntegerError
            ? { type: err.name, message: err.message, ...err.details }
            : { type: "SpillError", message: error.message },
        };
      }
      throw err;
    }
  }

  function release(id: unknown, session: Session): void {
    for (const [path, file] of hostFiles) {
      if (file.id !== undefined && file.id === id && file.session === session) {
        forget(path);
        // Usually already gone; not awaited so replies never wait on the file system.
        runtime!.remove(path).catch(() => {});
        return;
      }
    }
  }

  async function removeWorkerDir(workerId: string): Promise<void> {
    const dir = workerDirs.get(workerId);
    if (dir === undefined) return;
    workerDirs.delete(workerId);
    for (const path of [...hostFiles.keys()]) {
      if (path.startsWith(dir + "/")) forget(path);
    }
    await runtime?.remove(dir, { recursive: true });
  }

  return {
    name: "spillover",
    get dir() {
      return root;
    },
    threshold,
    get pendingBytes() {
      return pendingBytes;
    },
    stats,

    metrics(): PluginMetric[] {
      const counter = (
        name: string,
        help: string,
        value: number,
        labels?: Record<string, string>,
      ): PluginMetric =>
        labels === undefined
          ? { name, type: "counter", help, value }
          : { name, type: "counter", help, value, labels };
      const files = "Messages sent (out) and read (in) through spill files";
      const bytes = "Bytes of spill files written (out) and read (in)";
      return [
        counter("pyproxy_spillover_files_total", files, stats.spilledOut, {
          direction: "out",
        }),
        counter("pyproxy_spillover_files_total", files, stats.spilledIn, {
          direction: "in",
        }),
        counter("pyproxy_spillover_bytes_total", bytes, stats.bytesOut, {
          direction: "out",
        }),
        counter("pyproxy_spillover_bytes_total", bytes, stats.bytesIn, {
          direction: "in",
        }),
        counter(
          "pyproxy_spillover_read_failures_total",
          "Incoming spill references whose file failed its checks",
          stats.failures,
        ),
        counter(
          "pyproxy_spillover_write_failures_total",
          "Outgoing spill files the file system refused (full, read-only, permissions)",
          stats.writeFailures,
        ),
        counter(
          "pyproxy_spillover_inline_fallbacks_total",
          "Messages sent inline because their spill file was refused",
          stats.inlineFallbacks,
        ),
        {
          name: "pyproxy_spillover_pending_bytes",
          type: "gauge",
          help:
            "Bytes of host-written spill files not yet known to be consumed",
          value: pendingBytes,
        },
      ];
    },

    async onPoolStart(ctx: PluginContext): Promise<void> {
      owner.claim(ctx.pool);
      runtime = ctx.runtime;
      parent = options.dir ?? runtime.shmDir() ?? runtime.tempDir();
      // Deno would ask on a terminal for a directory outside its
      // --allow-read or --allow-write lists: a dir given must be granted,
      // the default one is done without (messages go in frames).
      if (runtime.mayAccess?.(parent) === false) {
        if (options.dir !== undefined) {
          throw new ConfigError(
            `Cannot start spillover plugin: dir: no read and write access to '${parent}' (Deno: grant it in --allow-read and --allow-write); not asked`,
            { details: { field: "dir", dir: parent } },
          );
        }
        ctx.logger.warn(
          "Spill-over is off: no read and write access to the temp directory {dir} (Deno: grant it in --allow-read and --allow-write); large messages go in frames",
          { dir: parent },
        );
        parent = undefined;
        return;
      }
      try {
        if (options.dir !== undefined) await runtime.mkdir(parent, 0o700);
        root = await makeRoot(runtime, parent);
      } catch (err) {
        // A ConfigError from onPoolStart fails Pool.start: a pool that silently ran without
        // spill-over would fail its large messages later, far from the cause.
        throw new ConfigError(
          `Cannot start spillover plugin: dir: cannot make a directory in '${parent}' (${
            err instanceof Error ? err.message : err
          })`,
          { cause: err, details: { field: "dir", dir: parent } },
        );
      }
      // A host killed before onPoolClosed leaves its directory behind (in RAM
      // when it is in /dev/shm).
      await removeDeadHostDirs(runtime, parent, ["pyproxy-spill"]);
    },

    // Once the workers have stopped, not as the close starts: the calls in
    // flight through the close's grace still write and read their files
    // (a large answer then failed with "Cannot write spill file").
    async onPoolClosed(ctx: PluginContext): Promise<void> {
      if (!owner.owns(ctx.pool)) return;
      owner.release(ctx.pool);
      md5Start = undefined;
      md5.forEach((t) => t.close());
      md5 = [];
      if (root === undefined || runtime === undefined) return;
      const dir = root;
      root = undefined;
      workerDirs.clear();
      hostFiles.clear();
      refusals.clear();
      pendingBytes = 0;
      await runtime.remove(dir, { recursive: true });
    },

    async onWorkerStart(ev): Promise<void> {
      if (root === undefined || runtime === undefined) return;
      // The pool's directory vanished (a /tmp cleaner under a long-running
      // service) and may have been made again by another user, who would
      // then hold the worker's directory, its files and their names: a new
      // one, never the old name again.
      if (parent !== undefined && !(await isPrivateDir(runtime, root))) {
        root = await makeRoot(runtime, parent);
      }
      // A fresh directory per process: whatever a dead predecessor left is removed with its own directory.
      await removeWorkerDir(ev.worker.id);
      const dir = `${root}/${
        ev.worker.id.replace(/[^A-Za-z0-9_.-]/g, "_")
      }-${++generation}`;
      await runtime.mkdir(dir, 0o700);
      workerDirs.set(ev.worker.id, dir);
      await configure(ev.session, ev.worker.id);
    },

    async onSessionOpen(ev): Promise<void> {
      await configure(ev.session, ev.worker.id);
    },

    async onSessionClose(ev): Promise<void> {
      const removals: Promise<void>[] = [];
      for (const [path, file] of hostFiles) {
        if (file.session !== ev.session) continue;
        forget(path);
        removals.push(runtime!.remove(path).catch(() => {}));
      }
      await Promise.all(removals);
    },

    async onWorkerExit(ev): Promise<void> {
      await removeWorkerDir(ev.worker.id);
    },

    onRequest(
      msg: WireMessage,
      mc: MessageContext,
    ): WireMessage | void | Promise<WireMessage | void> {
      const dir = sessionDirs.get(mc.session);
      if (dir === undefined) return;
      const threshold = thresholdOf(mc.session);
      let size: number;
      try {
        size = jsonSizeBound(msg, threshold);
      } catch (err) {
        // A BigInt or nesting too deep: the caller's value, not this plugin, is at fault.
        const exact = mc.session.integers === "bigint"
          ? withRawIntegers(msg) as WireMessage
          : msg;
        if (exact === msg) throw unencodableError(msg, err) ?? err;
        // integers: "bigint": its BigInts go as exact integers (JSON.rawJSON), spilled or not.
        msg = exact;
        try {
          size = jsonSizeBound(msg, threshold);
        } catch (err) {
          throw unencodableError(msg, err) ?? err;
        }
        if (size <= threshold) return msg;
      }
      if (size <= threshold) return;
      // The size walk stops at the threshold, maybe before a BigInt: with integers: "bigint", a walk
      // of the whole message (small next to writing it) makes exact integers of them all.
      if (mc.session.integers === "bigint") {
        msg = withRawIntegers(msg) as WireMessage;
      }
      // The file system's failures are SpillErrors; anything else came from
      // encoding the caller's value: a SerializationError, as without spill-over.
      return spill(msg, mc, dir).catch((err) => {
        if (err instanceof PyProxyError) throw err;
        // NaN or an infinity (jsonPieces refuses them, as the session does): where.
        const nonFinite = err instanceof NonFiniteNumberError
          ? nonFiniteReason(msg, "null")
          : undefined;
        throw nonFinite === undefined
          ? serializationError(msg, err)
          : refusedError(msg, nonFinite);
      });
    },

    onReply(
      msg: WireMessage,
      mc: MessageContext,
    ): WireMessage | void | Promise<WireMessage | void> {
      // A reply (inline or spilled) to a spilled request: the server consumed (and deleted) the file, or never will.
      if (
        hostFiles.size > 0 && msg.cmd === undefined && msg.event === undefined
      ) release(msg.id, mc.session);
      if (msg.$spill === undefined) return;
      if (
        typeof msg.id === "number" && msg.cmd === undefined &&
        msg.event === undefined && !mc.session.awaits(msg.id)
      ) {
        // A late reply (its request timed out or was aborted): nobody reads
        // it, so its file is deleted unread and the stub goes on to the
        // session, which drops it. Reading it would hold up every message
        // behind it on this connection (the read loop keeps their order),
        // the hang probe's ping reply too: with large requests abandoned in
        // bursts, healthy workers were killed as unresponsive.
        const dir = dirOf(mc);
        if (dir !== undefined) {
          stats.dropped++;
          void discardSpill(runtime!, dir, msg.$spill);
        }
        return;
      }
      return unspill(msg, mc);
    },
  };
}

async function makeRoot(runtime: Runtime, parent: string): Promise<string> {
  return await runtime.realPath(
    await runtime.makeTempDir({
      dir: parent,
      prefix: await hostDirPrefix("pyproxy-spill", runtime),
    }),
  );
}
