/**
 * Loads the pyproxy modules the scenarios need, one file at a time and at run
 * time, so a missing or broken piece skips the scenarios that need it instead
 * of breaking the harness. The types below are the few members the
 * benchmarks use (docs/architecture.md), kept loose on purpose.
 *
 * @module
 */

/** A connected pyproxy session (src/session.ts). */
export interface SessionLike {
  execute(
    name: string,
    msg: unknown,
    options?: Record<string, unknown>,
  ): Promise<unknown>;
  addModel(name: string, spec: Record<string, unknown>): Promise<unknown>;
  request(cmd: string, args?: Record<string, unknown>): Promise<unknown>;
  close(): Promise<void>;
}

/** A running Python server (src/python_server.ts). */
export interface PythonServerLike {
  readonly pid: number;
  readonly unixPath: string | undefined;
  connect(options?: Record<string, unknown>): Promise<SessionLike>;
  kill(signal?: string): void;
  readonly exited: Promise<unknown>;
}

/** An eval atom (src/atom.ts). */
export interface AtomLike {
  result: Promise<unknown>;
  output: ReadableStream<{ fd: number; data: string; seq: number }>;
}

/** A pool (src/pool.ts). */
export interface PoolLike {
  addModel(name: string, spec: Record<string, unknown>): Promise<unknown>;
  execute(
    name: string,
    msg: unknown,
    options?: Record<string, unknown>,
  ): Promise<unknown>;
  eval?(code: string, options?: Record<string, unknown>): AtomLike;
  status(): { workers: Array<{ pid?: number | null }> };
  close(): Promise<void>;
}

/** The loaded pieces; a missing piece is `undefined` with its reason in `missing`. */
export interface PyproxyApi {
  Session?: { connect(options: Record<string, unknown>): Promise<SessionLike> };
  PythonServer?: {
    start(options: Record<string, unknown>): Promise<PythonServerLike>;
  };
  Pool?: { start(options: Record<string, unknown>): Promise<PoolLike> };
  reconnect?: (options?: unknown) => unknown;
  spillover?: (options?: unknown) => unknown;
  /** Piece name → why it is unavailable. */
  missing: Record<string, string>;
}

async function tryImport(
  rel: string,
): Promise<Record<string, unknown> | string> {
  const url = new URL(rel, import.meta.url);
  try {
    await Deno.stat(url);
  } catch {
    return `${rel.replace("../", "")} does not exist yet`;
  }
  try {
    return await import(url.href) as Record<string, unknown>;
  } catch (err) {
    return `${rel.replace("../", "")} failed to load: ${
      String(err).split("\n")[0]
    }`;
  }
}

/**
 * Imports whatever of pyproxy exists now.
 *
 * @example
 * ```ts ignore
 * const api = await loadPyproxy();
 * if (!api.Pool) console.log("skipped:", api.missing.Pool);
 * ```
 */
export async function loadPyproxy(): Promise<PyproxyApi> {
  const api: PyproxyApi = { missing: {} };
  const pick = async (rel: string, names: string[]): Promise<void> => {
    const mod = await tryImport(rel);
    for (const name of names) {
      if (typeof mod === "string") api.missing[name] = mod;
      else if (mod[name] === undefined) {
        api.missing[name] = `${rel.replace("../", "")} does not export ${name}`;
      } else (api as unknown as Record<string, unknown>)[name] = mod[name];
    }
  };
  await pick("../src/session.ts", ["Session"]);
  await pick("../src/python_server.ts", ["PythonServer"]);
  await pick("../src/pool.ts", ["Pool"]);
  await pick("../plugins/reconnect.ts", ["reconnect"]);
  await pick("../plugins/spillover.ts", ["spillover"]);
  try {
    await Deno.stat(
      new URL("../python/pyproxy_server/__main__.py", import.meta.url),
    );
  } catch {
    api.missing.PythonServer ??=
      "python/pyproxy_server/__main__.py does not exist yet";
    delete api.PythonServer;
  }
  return api;
}

/**
 * Returns the named piece or throws a one-line reason (caught as "skipped").
 *
 * @example
 * ```ts ignore
 * const Pool = need(api, "Pool");
 * ```
 */
export function need<K extends Exclude<keyof PyproxyApi, "missing">>(
  api: PyproxyApi,
  name: K,
): NonNullable<PyproxyApi[K]> {
  const value = api[name];
  if (value === undefined) {
    throw new Error(api.missing[name] ?? `${name} is unavailable`);
  }
  return value as NonNullable<PyproxyApi[K]>;
}
