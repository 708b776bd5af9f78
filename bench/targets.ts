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
  const a = rows.find((r) => r.name === options.num)?.metrics[options.metric]
    ?.median;
  const den = rows.find((r) => r.name === options.den)
    ?.metrics[options.denMetric ?? options.metric];
  const b = options.denStat === "best"
    ? (op === ">=" ? den?.max : den?.min)
    : den?.median;
  const value = a === undefined || b === undefined || !Number.isFinite(a) ||
      !Number.isFinite(b) || b === 0
    ? null
    : a / (b * (options.scale ?? 1));
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
