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
      : editDistance(name, known, MAX_EDITS);
    if (score < bestScore) {
      best = option;
      bestScore = score;
    }
  }
  return bestScore <= MAX_EDITS ? best : undefined;
}

/** Edits at most between a name and the one it is taken for. */
const MAX_EDITS = 2;

/**
 * The edit distance (Levenshtein) of `a` and `b` when it is at most `max`,
 * else `max + 1`. Only the cells within `max` of the diagonal are computed,
 * and none when the lengths alone differ by more: a gateway's 404 of an
 * unknown model looks for the name meant among up to 200, and a tenant's
 * flood of 128-character names cost it 128 × n cells a name (25 times a
 * plain 404's CPU before chaos55), now at most 5 × 128.
 *
 * @example
 * ```ts
 * import { editDistance } from "./_closest_name.ts";
 * console.log(editDistance("scorer", "scorre", 2)); // 2
 * console.log(editDistance("scorer", "doubler", 2)); // 3
 * ```
 */
export function editDistance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  const over = max + 1;
  // prev[j]: the distance of a[0..i-1] and b[0..j]; cells off the band
  // hold `over` (a distance there exceeds max).
  let prev = Array.from(
    { length: b.length + 1 },
    (_, j) => j <= max ? j : over,
  );
  for (let i = 1; i <= a.length; i++) {
    const row = new Array<number>(b.length + 1).fill(over);
    const from = Math.max(1, i - max);
    const to = Math.min(b.length, i + max);
    if (i <= max) row[0] = i;
    let least = row[0]!;
    for (let j = from; j <= to; j++) {
      const cell = Math.min(
        prev[j]! + 1,
        row[j - 1]! + 1,
        prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
        over,
      );
      row[j] = cell;
      if (cell < least) least = cell;
    }
    if (least > max) return over;
    prev = row;
  }
  return Math.min(prev[b.length]!, over);
}
