/**
 * Compares two benchmark runs: `deno task bench:compare BEFORE.json AFTER.json`
 * (or `deno task bench --compare BEFORE.json`, which compares the run it has
 * just made with an earlier one).
 *
 * On a shared machine, absolute numbers from two runs are not comparable: the
 * same build can be a third faster an hour later. What can be compared are the
 * targets, each a ratio to references measured **in the same run**; so the
 * comparison shows them first, and the rows' raw medians after, with their
 * change marked `~` where the new median lies within the old run's spread of
 * rounds (min–max), i.e. within that run's own noise.
 *
 * @module
 */
import * as v from "valibot";
import { fmtNumber } from "./table.ts";

/** A number from `results.json`; `null` stands for NaN or ±Infinity (JSON has neither). */
const NumberOrNull = v.pipe(
  v.nullable(v.number()),
  v.transform((n) => n ?? Number.NaN),
);

const SummarySchema = v.object({
  median: NumberOrNull,
  min: NumberOrNull,
  max: NumberOrNull,
  n: v.number(),
});

const RowSchema = v.object({
  name: v.string(),
  metrics: v.record(v.string(), SummarySchema),
  skipped: v.optional(v.string()),
});

const TargetSchema = v.object({
  label: v.string(),
  value: v.nullable(v.number()),
  threshold: v.number(),
  op: v.picklist([">=", "<"]),
  unit: v.string(),
  pass: v.nullable(v.boolean()),
  info: v.optional(v.boolean()),
});

const ScenarioSchema = v.object({
  id: v.string(),
  title: v.string(),
  rows: v.array(RowSchema),
  targets: v.array(TargetSchema),
  skipped: v.optional(v.string()),
});

const ResultsFileSchema = v.object({
  date: v.string(),
  /** The run's options (`quick`, `rounds`, `roundMs`, `only`). */
  config: v.optional(v.record(v.string(), v.unknown())),
  machine: v.optional(v.record(v.string(), v.unknown())),
  scenarios: v.array(ScenarioSchema),
});

/** A `results.json` written by `deno task bench`, as far as the comparison reads it. */
export type ResultsFile = v.InferOutput<typeof ResultsFileSchema>;

/** A results file that cannot be read or is not one `deno task bench` wrote. */
export class ResultsFileError extends Error {
  override readonly name = "ResultsFileError";
  /** Stable code. */
  readonly code = "RESULTS_FILE";
}

/**
 * Parses the text of a `results.json`; `source` names it in errors.
 *
 * @example
 * ```ts
 * import { parseResultsFile } from "./compare.ts";
 * const run = parseResultsFile('{"date":"2026-12-05T01:24:32Z","scenarios":[]}', "run.json");
 * console.log(run.date); // "2026-12-05T01:24:32Z"
 * ```
 */
export function parseResultsFile(text: string, source: string): ResultsFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ResultsFileError(
      `Cannot read ${source}: not JSON (${(err as Error).message})`,
    );
  }
  const parsed = v.safeParse(ResultsFileSchema, json);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const path = issue.path?.map((p) => String(p.key)).join(".") ?? "";
    throw new ResultsFileError(
      `Cannot read ${source}: not a results file of \`deno task bench\` (${
        path === "" ? "" : `at ${path}: `
      }${issue.message})`,
    );
  }
  return parsed.output;
}

/**
 * Lower is better for durations, latencies and sizes; higher for rates
 * ("calls/s", "MB/s", but not "promoted MB/scavenge").
 */
function higherIsBetter(metric: string): boolean {
  return /\/s$/.test(metric) || !/\b(ms|s|MB)\b/.test(metric);
}

function change(before: number, after: number): string {
  if (!Number.isFinite(before) || !Number.isFinite(after) || before === 0) {
    return "";
  }
  const pct = (after / before - 1) * 100;
  return `${pct >= 0 ? "+" : ""}${pct.toFixed(1)}%`;
}

/** better / worse / same, by the metric's direction. */
function verdict(
  before: number,
  after: number,
  higher: boolean,
): "better" | "worse" | "same" {
  if (!Number.isFinite(before) || !Number.isFinite(after)) return "same";
  if (after === before) return "same";
  return (after > before) === higher ? "better" : "worse";
}

function mark(pass: boolean | null | undefined): string {
  return pass === true ? "✓" : pass === false ? "✗" : "–";
}

function table(header: string[], lines: string[][]): string[] {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...lines.map((l) => (l[i] ?? "").length))
  );
  const render = (cells: string[]): string =>
    ("  " + cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  "))
      .trimEnd();
  return [render(header), ...lines.map(render)];
}

/**
 * Renders the comparison of two runs as plain text: per scenario present in
 * both, its targets (same-run ratios: comparable) before → after, then each
 * row's medians with their change (`~`: within the first run's min–max);
 * ends with one summary line of targets met and changed.
 *
 * @example
 * ```ts
 * import { compareResults } from "./compare.ts";
 * const run = (value: number) => ({
 *   date: "2026-12-05T01:24:32Z",
 *   scenarios: [{
 *     id: "pipelined", title: "pipelined", rows: [],
 *     targets: [{ label: "≥ 1.5x floor", value, threshold: 1.5, op: ">=" as const, unit: "x", pass: value >= 1.5 }],
 *   }],
 * });
 * console.log(compareResults(run(1.4), run(1.6)).split("\n").at(-1));
 * // "targets: 0 → 1 met (of 1 in both runs); 1 better, 0 worse"
 * ```
 */
export function compareResults(
  before: ResultsFile,
  after: ResultsFile,
): string {
  const out: string[] = [
    `before: ${before.date}`,
    `after:  ${after.date}`,
    "Targets are same-run ratios: they compare across runs. Raw medians do not",
    "on a shared machine (~: the new median is within the old run's min–max).",
  ];
  // Runs made differently (--quick, other rounds, another machine) are
  // compared all the same, with a note: their numbers differ for that too.
  for (const key of ["config", "machine"] as const) {
    const differs = Object.entries({ ...before[key], ...after[key] })
      .filter(([k]) => k !== "only")
      .filter(([k]) =>
        JSON.stringify(before[key]?.[k]) !== JSON.stringify(after[key]?.[k])
      )
      .map(([k]) =>
        `${k} ${JSON.stringify(before[key]?.[k])} → ${
          JSON.stringify(after[key]?.[k])
        }`
      );
    if (differs.length > 0) {
      out.push(`note: the runs differ in ${key}: ${differs.join(", ")}`);
    }
  }
  let metBefore = 0;
  let metAfter = 0;
  let counted = 0;
  let better = 0;
  let worse = 0;
  const onlyIn = (a: ResultsFile, b: ResultsFile) =>
    a.scenarios.filter((s) => !b.scenarios.some((t) => t.id === s.id)).map((
      s,
    ) => s.id);
  for (const sa of after.scenarios) {
    const sb = before.scenarios.find((s) => s.id === sa.id);
    if (sb === undefined) continue;
    out.push("", `## ${sa.id}: ${sa.title}`);
    if (sb.skipped !== undefined || sa.skipped !== undefined) {
      out.push(
        `  skipped: before ${sb.skipped ?? "no"}, after ${sa.skipped ?? "no"}`,
      );
      continue;
    }
    const targetLines: string[][] = [];
    for (const ta of sa.targets) {
      const tb = sb.targets.find((t) => t.label === ta.label);
      if (tb === undefined) continue;
      const vb = tb.value ?? Number.NaN;
      const va = ta.value ?? Number.NaN;
      const fmt = (x: number) =>
        Number.isFinite(x) ? `${fmtNumber(x)}${ta.unit}` : "not measured";
      let which = "";
      if (!ta.info) {
        counted++;
        if (tb.pass === true) metBefore++;
        if (ta.pass === true) metAfter++;
        const v = verdict(vb, va, ta.op === ">=");
        if (v === "better") better++;
        if (v === "worse") worse++;
        if (v !== "same") which = ` ${v}`;
      }
      targetLines.push([
        ta.info ? "·" : `${mark(tb.pass)}→${mark(ta.pass)}`,
        ta.info ? ta.label : `${ta.label} (${ta.op} ${ta.threshold}${ta.unit})`,
        fmt(vb),
        fmt(va),
        `${change(vb, va)}${which}`,
      ]);
    }
    if (targetLines.length > 0) {
      out.push(
        ...table(["", "target", "before", "after", "change"], targetLines),
      );
    }
    const rowLines: string[][] = [];
    for (const ra of sa.rows) {
      const rb = sb.rows.find((r) => r.name === ra.name);
      if (rb === undefined || ra.skipped !== undefined) continue;
      if (rb.skipped !== undefined) continue;
      for (const [metric, a] of Object.entries(ra.metrics)) {
        const b = rb.metrics[metric];
        if (b === undefined) continue;
        const within = a.median >= b.min && a.median <= b.max;
        const which = verdict(b.median, a.median, higherIsBetter(metric));
        rowLines.push([
          ra.name,
          metric,
          fmtNumber(b.median),
          fmtNumber(a.median),
          `${change(b.median, a.median)}${
            within ? " ~" : which === "same" ? "" : ` ${which}`
          }`,
        ]);
      }
    }
    if (rowLines.length > 0) {
      out.push(
        ...table(
          ["implementation", "metric", "before", "after", "change"],
          rowLines,
        ),
      );
    }
  }
  const missing = [
    ...onlyIn(before, after).map((id) => `${id} (only before)`),
    ...onlyIn(after, before).map((id) => `${id} (only after)`),
  ];
  if (missing.length > 0) out.push("", `not compared: ${missing.join(", ")}`);
  out.push(
    "",
    `targets: ${metBefore} → ${metAfter} met (of ${counted} in both runs); ${better} better, ${worse} worse`,
  );
  return out.join("\n");
}

/**
 * Reads two results files and prints their comparison.
 *
 * @example
 * ```ts ignore
 * console.log(await compareFiles("/tmp/before.json", "bench/results.json"));
 * ```
 */
export async function compareFiles(
  beforePath: string,
  afterPath: string,
): Promise<string> {
  const read = async (path: string): Promise<ResultsFile> => {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (err) {
      throw new ResultsFileError(
        `Cannot read ${path}: ${(err as Error).message}`,
      );
    }
    return parseResultsFile(text, path);
  };
  return compareResults(await read(beforePath), await read(afterPath));
}

if (import.meta.main) {
  if (Deno.args.length !== 2 || Deno.args.some((a) => a.startsWith("-"))) {
    console.error(
      "usage: deno task bench:compare BEFORE.json AFTER.json\n" +
        "  (files written by `deno task bench --out FILE`; bench/results.json is the latest run)",
    );
    Deno.exit(2);
  }
  try {
    console.log(await compareFiles(Deno.args[0]!, Deno.args[1]!));
  } catch (err) {
    if (!(err instanceof ResultsFileError)) throw err;
    console.error(err.message);
    Deno.exit(2);
  }
}
