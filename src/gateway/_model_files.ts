/**
 * The `*.py` names of a models directory that are no directories: what the
 * start loads and the repository index lists.
 *
 * @module
 */
import type { Runtime } from "../runtime/types.ts";

/**
 * The entries of `names` (in directory `dir`) that are not directories, in
 * their order. A directory named `x.py` is no model file (a package is not
 * loaded as a model): listed, it could never load.
 *
 * @example
 * ```ts ignore
 * await modelFiles(runtime, "/srv/models", ["a.py", "pkg.py"]); // ["a.py"]
 * ```
 */
export async function modelFiles(
  runtime: Pick<Runtime, "stat">,
  dir: string,
  names: readonly string[],
): Promise<string[]> {
  const stats = await Promise.all(
    names.map((name) => runtime.stat(`${dir}/${name}`).catch(() => null)),
  );
  // Kept when it cannot be read (a dangling symlink): its load says why.
  return names.filter((_, i) => stats[i]?.isDirectory !== true);
}
