/**
 * Builds speed targets from the rows of the same run.
 *
 * @module
 */
import type { Row, Target } from "./types.ts";

/** Options for {@linkcode ratioTarget}. */
export interface RatioTargetOptions {
  /** Printed label. */
  label: string;
  /** Numerator row name. */
  num: string;
  /** Denominator row name. */
  den: string;
  /** Metric of the numerator row. */
  metric: string;
  /** Metric of the denominator row. @default metric */
  denMetric?: string;
  /** Bound on num/den. */
  threshold: number;
  /** @default ">=" */
  op?: ">=" | "<";
  /** Multiply the denominator by this (e.g. a payload size). @default 1 */
  scale?: number;
  /**
   * Which of the denominator's rounds to compare with: `"best"` is its
   * highest value for `>=` targets and its lowest for `<` ones (a reference
   * whose rounds swing for reasons of its own is taken at its best).
   * @default "median"
   */
  denStat?: "median" | "best";
}

/**
 * `rows[num].metric / rows[den].metric` (medians) against a bound; not
 * measurable (pass = null) when a row is missing or skipped.
 *
 * @example
 * ```ts ignore
 * ratioTarget(rows, { label: "≥ 1.5x floor", num: "pyproxy", den: "floor", metric: "calls/s", threshold: 1.5 });
 * ```
 */
export function ratioTarget(rows: Row[], options: RatioTargetOptions): Target {
  const op = options.op ?? ">=";
  // A skipped row's numbers, if it had any, were not measured in this run.
  const row = (name: string) =>
    rows.find((r) => r.name === name && r.skipped === undefined);
  const a = row(options.num)?.metrics[options.metric]?.median;
  const den = row(options.den)?.metrics[options.denMetric ?? options.metric];
  const b =
    (options.denStat === "best"
      ? (op === ">=" ? den?.max : den?.min)
      : den?.median) ?? NaN;
  const scaled = b * (options.scale ?? 1);
  const value = a === undefined || !Number.isFinite(a) ||
      !Number.isFinite(scaled) || scaled === 0
    ? null
    : a / scaled;
  return {
    label: options.label,
    value,
    threshold: options.threshold,
    op,
    unit: "x",
    pass: value === null
      ? null
      : op === ">="
      ? value >= options.threshold
      : value < options.threshold,
  };
}

/**
 * A same-run ratio to a reference with no target: printed with `·`, not
 * counted (every scenario is reported as a ratio to its references).
 *
 * @example
 * ```ts ignore
 * infoRatio(rows, { label: "pyproxy / floor", num: "pyproxy", den: "floor", metric: "calls/s", threshold: 1 });
 * ```
 */
export function infoRatio(rows: Row[], options: RatioTargetOptions): Target {
  return { ...ratioTarget(rows, options), pass: null, info: true };
}
