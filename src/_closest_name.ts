/**
 * The known name most like a mistyped one, for "did you mean" hints: serve's
 * flags (`--models-dir` → `--models`) and `Pool.start`'s options (`worker` →
 * `workers`). Internal.
 *
 * @module
 */

/**
 * The name of `names` most like `given` (case aside): one that starts with
 * it or that it starts with (the nearest in length), else the nearest within
 * 2 edits; `undefined`
 * when none is that close, or `given` is shorter than 2 characters.
 *
 * @example
 * ```ts
 * import { closestName } from "./_closest_name.ts";
 * console.log(closestName("worker", ["workers", "python"])); // "workers"
 * console.log(closestName("zzz", ["workers", "python"])); // undefined
 * ```
 */
export function closestName(
  given: string,
  names: Iterable<string>,
): string | undefined {
  const name = given.toLowerCase();
  if (name.length < 2) return undefined;
  let best: string | undefined;
  let bestScore = Infinity;
  for (const option of names) {
    const known = option.toLowerCase();
    // A prefix either way wins over any edit; among prefixes, the nearest
    // length (`maxSerie`: `maxSeries`, not `maxSeriesPerModel`).
    const score = known.startsWith(name) || name.startsWith(known)
      ? Math.abs(known.length - name.length) / 1e6
      : editDistance(name, known);
    if (score < bestScore) {
      best = option;
      bestScore = score;
    }
  }
  return bestScore <= 2 ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(
        prev[j]! + 1,
        row[j - 1]! + 1,
        prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    prev = row;
  }
  return prev[b.length]!;
}
