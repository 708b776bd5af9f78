/**
 * Every implementation the throughput scenarios compare, behind one tiny
 * interface: `call(msg)` executes the model once, `close()` stops whatever
 * was started.
 *
 * @module
 */
import { FloorClient, startFloorServer } from "./floor_client.ts";
import { StdioClient } from "./stdio_client.ts";
import { loadPyproxy, need } from "./pyproxy.ts";
import type { PoolLike, PythonServerLike, SessionLike } from "./pyproxy.ts";

/**
 * pyproxy's default transport between host and Python: a Unix socket on
 * Linux and macOS, else TCP (src/python_server.ts `unixByDefault`, the pool's
 * `transport` option). The floor follows it unless told otherwise: it is a
 * framed echo "over the same transport".
 */
export const UNIX_BY_DEFAULT: boolean = Deno.build.os === "linux" ||
  Deno.build.os === "darwin";

/** A ready-to-call implementation. */
export interface Caller {
  /** Executes the model once. */
  call(msg: unknown): Promise<unknown>;
  /** The socket kind, for the implementations that use one. */
  transport?: "tcp" | "unix";
  /** Stops everything this caller started. */
  close(): Promise<void>;
  /** The pool, for scenarios that need more than `call`. */
  pool?: PoolLike;
  /** Process ids of the Python side (for memory readings). */
  pids?(): number[];
}

/** Opens a named {@linkcode Caller}. */
export interface CallerFactory {
  /** Row name. */
  name: string;
  /** Starts the implementation. */
  open(): Promise<Caller>;
}

/** The directory holding the benchmark models. */
export const MODELS_DIR: string =
  new URL("./models/", import.meta.url).pathname;

/** Model name → file in {@linkcode MODELS_DIR}. */
export const MODEL_FILES: Record<string, string> = {
  echo: "echo.py",
  cpu: "cpu_model.py",
};

/**
 * Copies the benchmark models into a fresh temp directory: a server writes
 * its logs under its `--path`, which must not be the source tree.
 *
 * @example
 * ```ts ignore
 * const dir = await modelsCopy();
 * ```
 */
export async function modelsCopy(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-bench-models-" });
  for (const file of Object.values(MODEL_FILES)) {
    await Deno.copyFile(MODELS_DIR + file, `${dir}/${file}`);
  }
  return dir;
}

function modelFile(model: string): string {
  const file = MODEL_FILES[model];
  if (file === undefined) throw new TypeError(`Cannot find model: ${model}`);
  return file;
}

/**
 * The naive framed floor (bench/floor_server.py + FloorClient). `unix`: true
 * for a Unix socket, false for TCP, absent for pyproxy's default transport
 * ({@linkcode UNIX_BY_DEFAULT}), so that it runs over the same transport as
 * the pyproxy rows it is compared with.
 *
 * @example
 * ```ts ignore
 * const caller = await floorCaller("echo").open();
 * ```
 */
export function floorCaller(
  model: string,
  options: { unix?: boolean; name?: string; python?: string } = {},
): CallerFactory {
  const useUnix = options.unix ?? UNIX_BY_DEFAULT;
  return {
    name: options.name ??
      (options.unix === undefined
        ? "floor"
        : `floor (${options.unix ? "unix" : "TCP"})`),
    async open(): Promise<Caller> {
      const dir = useUnix
        ? await Deno.makeTempDir({ prefix: "pyproxy-bench-" })
        : undefined;
      const unix = dir === undefined ? undefined : `${dir}/floor.sock`;
      const server = await startFloorServer({
        model: MODELS_DIR + modelFile(model),
        ...(unix ? { unix } : {}),
        ...(options.python ? { python: options.python } : {}),
      });
      try {
        const client = await FloorClient.connect(
          unix ? { path: unix } : { port: server.ready.port as number },
        );
        return {
          call: (msg) => client.execute(model, msg),
          transport: unix ? "unix" : "tcp",
          pids: () => [server.pid],
          async close() {
            await client.close();
            await server.kill();
            if (dir) {
              await Deno.remove(dir, { recursive: true }).catch(() => {});
            }
          },
        };
      } catch (err) {
        await server.kill();
        throw err;
      }
    },
  };
}

/**
 * The stdio baseline (bench/stdio_worker.py + StdioClient).
 *
 * @example
 * ```ts ignore
 * const caller = await stdioCaller("echo").open();
 * ```
 */
export function stdioCaller(
  model: string,
  name = "stdio",
  python?: string,
  processes = 1,
): CallerFactory {
  return {
    name,
    async open(): Promise<Caller> {
      const clients: StdioClient[] = [];
      try {
        for (let i = 0; i < processes; i++) {
          clients.push(
            await StdioClient.start({
              model: MODELS_DIR + modelFile(model),
              ...(python ? { python } : {}),
            }),
          );
        }
      } catch (err) {
        for (const c of clients) await c.close();
        throw err;
      }
      // Several processes: plain round robin, the simplest possible "pool".
      let next = 0;
      return {
        call: (msg) => clients[next++ % clients.length]!.execute(model, msg),
        close: async () => {
          for (const c of clients) await c.close();
        },
        pids: () => clients.map((c) => c.pid),
      };
    },
  };
}

/**
 * pyproxy: one PythonServer and a Session straight on it (no pool). `unix`:
 * true for a Unix socket, false for TCP, absent for the library's default
 * (a Unix socket on Linux and macOS).
 *
 * @example
 * ```ts ignore
 * const caller = await sessionCaller("echo").open();
 * ```
 */
export function sessionCaller(
  model: string,
  options: { unix?: boolean; name?: string; python?: string } = {},
): CallerFactory {
  return {
    name: options.name ??
      (options.unix === undefined
        ? "pyproxy Session"
        : `pyproxy Session (${options.unix ? "unix" : "TCP"})`),
    async open(): Promise<Caller> {
      const api = await loadPyproxy();
      const PythonServer = need(api, "PythonServer");
      const dir = await Deno.makeTempDir({ prefix: "pyproxy-bench-" });
      let server: PythonServerLike | undefined;
      let session: SessionLike | undefined;
      const close = async (): Promise<void> => {
        await session?.close().catch(() => {});
        try {
          server?.kill("SIGKILL");
        } catch {
          // already gone
        }
        await server?.exited;
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      };
      try {
        // The server's --path holds its logs; models are sent as source so
        // the benchmark directory stays clean.
        server = await PythonServer.start({
          path: dir,
          id: "bench",
          ...(options.python ? { python: options.python } : {}),
          ...(options.unix === undefined
            ? {}
            : options.unix
            ? { unix: `${dir}/server.sock` }
            : { port: 0 }),
        });
        session = await server.connect();
        const source = await Deno.readTextFile(MODELS_DIR + modelFile(model));
        await session.addModel(model, { source });
        const s = session;
        const pid = server.pid;
        const transport = server.unixPath === undefined ? "tcp" : "unix";
        return {
          call: (msg) => s.execute(model, msg),
          transport,
          close,
          pids: () => [pid],
        };
      } catch (err) {
        await close();
        throw err;
      }
    },
  };
}

/** Options for {@linkcode poolCaller}. */
export interface PoolCallerOptions {
  /** Row name. */
  name?: string;
  /** Number of workers. @default 1 */
  workers?: number;
  /** Extra `Pool.start` options (plugins, maxFrameSize...). */
  poolOptions?: (
    api: Awaited<ReturnType<typeof loadPyproxy>>,
  ) => Record<string, unknown>;
}

/**
 * pyproxy: a Pool of `workers` Python servers.
 *
 * @example
 * ```ts ignore
 * const caller = await poolCaller("cpu", { workers: 2 }).open();
 * ```
 */
export function poolCaller(
  model: string,
  options: PoolCallerOptions = {},
): CallerFactory {
  const workers = options.workers ?? 1;
  return {
    name: options.name ??
      `pyproxy Pool (${workers} worker${workers === 1 ? "" : "s"})`,
    async open(): Promise<Caller> {
      const api = await loadPyproxy();
      const Pool = need(api, "Pool");
      const dir = await modelsCopy();
      const removeDir = (): Promise<void> =>
        Deno.remove(dir, { recursive: true }).catch(() => {});
      let pool: PoolLike;
      try {
        pool = await Pool.start({
          workers,
          modelsDir: dir,
          handleSignals: false,
          ...(options.poolOptions?.(api) ?? {}),
        });
      } catch (err) {
        await removeDir();
        throw err;
      }
      const close = async (): Promise<void> => {
        await pool.close().catch(() => {});
        await removeDir();
      };
      try {
        await pool.addModel(model, { file: modelFile(model) });
        return {
          call: (msg) => pool.execute(model, msg),
          close,
          pool,
          pids: () =>
            pool.status().workers.flatMap((w) =>
              typeof w.pid === "number" ? [w.pid] : []
            ),
        };
      } catch (err) {
        await close();
        throw err;
      }
    },
  };
}
