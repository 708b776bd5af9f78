/**
 * The shapes shared by the benchmark harness: scenarios, result rows,
 * targets.
 *
 * @module
 */
import type { Summary } from "./stats.ts";

/** How long and how often to measure. */
export interface BenchConfig {
  /** Rounds per implementation. */
  rounds: number;
  /** Length of one throughput round in ms. */
  roundMs: number;
  /** `--quick`: fewer, shorter rounds and smaller payloads. */
  quick: boolean;
}

/** One implementation's results in a scenario, or why it did not run. */
export interface Row {
  /** Implementation name, e.g. "pyproxy Session", "floor", "stdio". */
  name: string;
  /** Metric name ("calls/s", "p99 ms", ...) → summary over rounds. */
  metrics: Record<string, Summary>;
  /** Set when the implementation could not run. */
  skipped?: string;
  /** Free text shown after the row. */
  note?: string;
}

/** One speed target, checked against the rows of the same run. */
export interface Target {
  /** What is compared, e.g. "pipelined ≥ 1.5x floor". */
  label: string;
  /** The measured ratio or value, or null when a side is missing. */
  value: number | null;
  /** The required bound. */
  threshold: number;
  /** ">=" (value must reach the threshold) or "<". */
  op: ">=" | "<";
  /** Unit of `value` ("x" for ratios). */
  unit: string;
  /** null when not measurable in this run. */
  pass: boolean | null;
  /** Informational ratio with no target: printed, not counted. */
  info?: boolean;
}

/** The result of one scenario. */
export interface ScenarioResult {
  /** Short id (for `--only`). */
  id: string;
  /** Human title. */
  title: string;
  /** One row per implementation. */
  rows: Row[];
  /** Targets computed from the rows. */
  targets: Target[];
  /** Wall time of the scenario in seconds. */
  seconds: number;
  /** Set when the whole scenario was skipped. */
  skipped?: string;
}

/** A benchmark scenario. */
export interface Scenario {
  /** Short id (for `--only`). */
  id: string;
  /** Human title. */
  title: string;
  /**
   * Cases run each in a fresh process (for peak-memory measurements).
   * Absent: `run` is called once with no case and returns every row.
   */
  cases?(config: BenchConfig): string[];
  /** Runs the scenario (or one case of it) and returns its rows. */
  run(config: BenchConfig, caseName?: string): Promise<Row[]>;
  /** Computes the targets from all rows. */
  targets(rows: Row[]): Target[];
  /** Time limit for one child run, in ms. */
  timeoutMs(config: BenchConfig): number;
}
