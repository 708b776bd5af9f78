/**
 * Internals: where a library pool's workers write their log files when
 * `logDir` is not given: outside the models directory.
 *
 * @module
 */
import { ConfigError } from "./errors.ts";
import { hash32 } from "./_hash32.ts";
import { isPrivateDir } from "./_private_dir.ts";
import type { Runtime } from "./runtime/types.ts";

/**
 * The default log directory of a pool serving `modelsDir`:
 * `<temp>/pyproxy-logs-<uid>/<name>-<hash>`, `<name>` the models
 * directory's own name and `<hash>` one of its real path (the same
 * directory each start, another for another models directory). Not inside
 * the models directory (its `logs/` before): a file watcher on the models
 * (`deno test --watch=models/`, `deno run --watch`) saw each call's log
 * lines as a change and restarted for ever. The parent directory is made
 * private (0700) and must be this user's: in a shared temp directory
 * another user's one of that name would let them read the logs (a
 * `ConfigError` then, naming `logDir`). Each start also removes the log
 * directories whose models directory is gone (a test's temporary one).
 *
 * @example
 * ```ts ignore
 * const dir = await defaultLogDir(runtime, "./models");
 * // "/tmp/pyproxy-logs-1000/models-3f2a9c1e"
 * ```
 */
export async function defaultLogDir(
  runtime: Runtime,
  modelsDir: string,
): Promise<string> {
  let real = modelsDir;
  try {
    real = await runtime.realPath(modelsDir);
  } catch {
    // Checked to be a directory already; the path as given names it.
  }
  const name = real.split(/[\\/]/).filter((p) => p !== "").at(-1) ?? "models";
  const safe = name.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 48);
  const hash = hash32(real, 0).toString(16).padStart(8, "0");
  const uid = runtime.uid?.();
  const temp = runtime.tempDir();
  const sep = temp.includes("\\") ? "\\" : "/";
  // macOS's TMPDIR ends with a "/".
  const base = temp.length > 1 ? temp.replace(/[\\/]+$/, "") : temp;
  const root = `${base}${sep}pyproxy-logs${uid === undefined ? "" : `-${uid}`}`;
  try {
    await runtime.mkdir(root, 0o700);
  } catch {
    // Checked below.
  }
  if (!(await isPrivateDir(runtime, root))) {
    throw new ConfigError(
      `Cannot start pool: logDir: the default log directory's parent '${root}' is not a private directory of this user (another user's, or its mode lets others in): pass logDir (or "-")`,
      { details: { field: "logDir", dir: root } },
    );
  }
  await sweepLogDirs(runtime, root, sep);
  const dir = `${root}${sep}${safe}-${hash}`;
  // Which models directory it is for: the next starts' sweep reads it.
  try {
    await runtime.mkdir(dir, 0o700);
    await runtime.writeFile(
      `${dir}${sep}${MODELS_DIR_FILE}`,
      new TextEncoder().encode(real),
    );
  } catch {
    // The log directory's own check (Pool.start) says what is wrong.
  }
  return dir;
}

/** The file in a default log directory naming its models directory. */
export const MODELS_DIR_FILE = ".models-dir";

/**
 * Removes the default log directories under `root` whose models directory
 * is gone (its path in their {@linkcode MODELS_DIR_FILE}): a test suite that
 * makes a models directory per test left one log directory per test behind
 * it, for ever. Those without the file, or whose models directory is still
 * there, stay. Never throws.
 */
async function sweepLogDirs(
  runtime: Runtime,
  root: string,
  sep: string,
): Promise<void> {
  let names: string[];
  try {
    names = await runtime.readDir(root);
  } catch {
    return;
  }
  const decoder = new TextDecoder();
  for (const name of names) {
    if (!/-[0-9a-f]{8}$/.test(name)) continue;
    const dir = `${root}${sep}${name}`;
    try {
      const models = decoder.decode(
        await runtime.readFile(`${dir}${sep}${MODELS_DIR_FILE}`),
      );
      if (models === "" || (await runtime.stat(models)) !== null) continue;
      await runtime.remove(dir, { recursive: true });
    } catch {
      // No such file (not ours, or from before it), or gone meanwhile.
    }
  }
}
