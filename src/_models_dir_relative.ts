/**
 * Internals: a text from a worker with the models directory's paths made
 * relative to it.
 *
 * @module
 */

/**
 * `text` with each path inside one of `dirs` (the models directory: as
 * given, its real path) made relative to it, and the directory itself
 * called "the models directory", as the gateway words errors without
 * `--debug`: the Python server reports absolute paths, and a model's
 * `file` is relative to the models directory anyway.
 *
 * @example
 * ```ts
 * import { relativeToModelsDir } from "./_models_dir_relative.ts";
 * console.log(relativeToModelsDir("No such file: '/srv/models/w.bin'", ["/srv/models"]));
 * // "No such file: 'w.bin'"
 * ```
 */
export function relativeToModelsDir(
  text: string,
  dirs: readonly string[],
): string {
  // Longest first: one may be a prefix of the other.
  const found = [...new Set(dirs)]
    .filter((dir) => dir.length > 1 && text.includes(dir))
    .sort((a, b) => b.length - a.length);
  for (const dir of found) {
    text = text.replaceAll(`${dir}/`, "").replaceAll(
      dir,
      "the models directory",
    );
  }
  return text;
}
