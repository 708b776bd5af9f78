/**
 * The workers' environment from `pyproxy.json`'s `env`: which names it may
 * set, and the pool's `env` function that fills in `{worker}` and `{index}`.
 *
 * @module
 */

/**
 * Variables the host sets, or keeps from the workers, for the server's own
 * start and protocol: `env` cannot change them. The bearer token
 * (`PYPROXY_TOKEN`, and the prefix with it) is kept from the workers; the
 * rest decide which `pyproxy_server` is imported and how (`PYTHONPATH`:
 * the server package comes first; set it in `serve`'s own environment,
 * which the workers inherit after it), and how the process talks to the host
 * (its ready line on unbuffered stdout, stdin the host's pipe).
 */
const RESERVED: Record<string, string> = {
  PYTHONPATH:
    "the host sets it (the server package first): set PYTHONPATH in serve's own environment, which the workers inherit after it",
  PYTHONHOME:
    "it decides which standard library the server imports: choose the interpreter with python instead",
  PYTHONPLATLIBDIR:
    "it decides where the server's standard library is found: choose the interpreter with python instead",
  PYTHONUNBUFFERED:
    "the host sets it: the server's ready line must not wait in a buffer",
  PYTHONSAFEPATH: "the host decides what the server imports",
  PYTHONINSPECT:
    "an interactive prompt after the server's end would read the host's pipe",
};

/** A POSIX environment variable name. */
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Why `env` may not set `name` (`undefined` when it may): not a variable
 * name, a `PYPROXY_` name (the host's own: the bearer token), or one the
 * host sets for the server's own start and protocol.
 */
export function envNameProblem(name: string): string | undefined {
  if (!NAME.test(name)) {
    return "expected a variable name (letters, digits and _, not starting with a digit)";
  }
  if (name.toUpperCase().startsWith("PYPROXY_")) {
    return "PYPROXY_ names are the host's own (PYPROXY_TOKEN, the bearer token, is kept from the workers)";
  }
  const reserved = RESERVED[name];
  return reserved === undefined
    ? undefined
    : `cannot be set for the workers: ${reserved}`;
}

/**
 * The longest value, in bytes of UTF-8 with its name and `=`: Linux's
 * `MAX_ARG_STRLEN` (32 pages), beyond which every worker's spawn fails
 * ("Argument list too long"). `{worker}` and `{index}` add a few bytes.
 */
export const MAX_ENV_ENTRY_BYTES = 128 * 1024 - 64;

/**
 * Whether `value` can be a variable's value: no NUL (a spawn would fail)
 * and within {@linkcode MAX_ENV_ENTRY_BYTES}.
 */
export function isEnvValue(value: string): boolean {
  return !value.includes("\0") &&
    (value.length * 3 < MAX_ENV_ENTRY_BYTES - 256 ||
      new TextEncoder().encode(value).length < MAX_ENV_ENTRY_BYTES - 256);
}

/**
 * The most all of `env` may take, in bytes of UTF-8 of its `NAME=value`
 * entries: a process's arguments and environment together are bounded by
 * Linux's `ARG_MAX` (a quarter of the stack limit, 2 MiB by default), the
 * rest being `serve`'s own environment and the worker's arguments.
 */
export const MAX_ENV_TOTAL_BYTES = 1024 * 1024;

/**
 * Why `env`'s entries are too large for a process's start (`undefined` when
 * they fit): an entry (`NAME=value`, a long name counting as a long value)
 * over {@linkcode MAX_ENV_ENTRY_BYTES}, or all of them over
 * {@linkcode MAX_ENV_TOTAL_BYTES}. Values alone are checked by
 * {@linkcode isEnvValue}; this adds the names and the sum.
 */
export function envSizeProblem(
  env: Record<string, string>,
): { name?: string; message: string } | undefined {
  const encoder = new TextEncoder();
  let total = 0;
  for (const [name, value] of Object.entries(env)) {
    const bytes = encoder.encode(name).length + 1 +
      encoder.encode(value).length;
    if (bytes >= MAX_ENV_ENTRY_BYTES - 256) {
      return {
        name,
        message:
          "expected a name and value under 128 KiB together (a larger one fails every worker's start: Argument list too long)",
      };
    }
    total += bytes + 1;
  }
  if (total > MAX_ENV_TOTAL_BYTES) {
    return {
      message:
        `expected variables under 1 MiB together (got ${total} bytes; more fails every worker's start: Argument list too long)`,
    };
  }
  return undefined;
}

/**
 * The pool's `env` option for `pyproxy.json`'s `env`: each value with
 * `{worker}` replaced by the worker's id (`w3`) and `{index}` by its slot's
 * index (`WorkerInfo.index`: 0, 1, ..., reused after a resize, kept across
 * restarts). `undefined` for an empty `env`.
 *
 * @example
 * ```ts
 * import { workerEnv } from "./_worker_env.ts";
 * const env = workerEnv({ CUDA_VISIBLE_DEVICES: "{index}", OMP_NUM_THREADS: "2" });
 * console.log(env?.("w2", { index: 1 })); // { CUDA_VISIBLE_DEVICES: "1", OMP_NUM_THREADS: "2" }
 * ```
 */
export function workerEnv(
  env: Record<string, string>,
):
  | ((workerId: string, slot: { index: number }) => Record<string, string>)
  | undefined {
  const entries = Object.entries(env);
  if (entries.length === 0) return undefined;
  return (workerId, { index }) =>
    // fromEntries: a variable named "__proto__" stays a variable.
    Object.fromEntries(
      entries.map(([name, value]) => [
        name,
        value.replaceAll("{worker}", workerId).replaceAll(
          "{index}",
          String(index),
        ),
      ]),
    );
}
