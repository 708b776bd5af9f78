/**
 * Prints the results table and writes `bench/results.json`.
 *
 * @module
 */
import type { ScenarioResult, Target } from "./types.ts";
import type { Summary } from "./stats.ts";

/**
 * A metric's value with 3–4 significant digits, "–" when not finite.
 *
 * @example
 * ```ts
 * import { fmtNumber } from "./table.ts";
 * console.log(fmtNumber(1.234567)); // "1.23"
 * ```
 */
export function fmtNumber(v: number): string {
  if (!Number.isFinite(v)) return "–";
  const abs = Math.abs(v);
  if (abs >= 1000) return Math.round(v).toString();
  if (abs >= 100) return v.toFixed(0);
  if (abs >= 10) return v.toFixed(1);
  if (abs >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

function fmtSummary(s: Summary | undefined): string {
  if (s === undefined || s.n === 0) return "";
  if (s.n === 1) return fmtNumber(s.median);
  return `${fmtNumber(s.median)} (${fmtNumber(s.min)}–${fmtNumber(s.max)})`;
}

function fmtTarget(t: Target): string {
  const mark = t.info ? "·" : t.pass === null ? "–" : t.pass ? "✓" : "✗";
  const value = t.value === null
    ? "not measured"
    : `${fmtNumber(t.value)}${t.unit}`;
  if (t.info) return `  ${mark} ${t.label}: ${value}`;
  return `  ${mark} ${t.label}: ${value} (target ${t.op} ${t.threshold}${t.unit})`;
}

/**
 * Renders the scenarios as plain-text tables: one row per implementation,
 * each metric as "median (min–max)" over the rounds, then the targets.
 *
 * @example
 * ```ts ignore
 * console.log(formatResults(results));
 * ```
 */
export function formatResults(results: ScenarioResult[]): string {
  const out: string[] = [];
  for (const sc of results) {
    out.push("", `## ${sc.id}: ${sc.title}  [${sc.seconds.toFixed(1)} s]`);
    if (sc.skipped !== undefined) {
      out.push(`  skipped: ${sc.skipped}`);
      continue;
    }
    const metrics: string[] = [];
    for (const row of sc.rows) {
      for (const k of Object.keys(row.metrics)) {
        if (!metrics.includes(k)) metrics.push(k);
      }
    }
    const header = ["implementation", ...metrics];
    const lines = sc.rows.map((row) =>
      row.skipped !== undefined
        ? [row.name, `skipped: ${row.skipped}`]
        : [row.name, ...metrics.map((m) => fmtSummary(row.metrics[m]))]
    );
    const widths = header.map((h, i) =>
      Math.max(
        h.length,
        ...lines.filter((l) => l.length === header.length).map((l) =>
          (l[i] ?? "").length
        ),
      )
    );
    const render = (cells: string[]): string =>
      "  " +
      cells.map((
        c,
        i,
      ) => (cells.length === header.length ? c.padEnd(widths[i] ?? 0) : c))
        .join("  ");
    out.push(render(header));
    for (const [i, line] of lines.entries()) {
      out.push(render(line));
      const note = sc.rows[i]?.note;
      if (note) out.push(`      ${note}`);
    }
    for (const t of sc.targets) out.push(fmtTarget(t));
  }
  const all = results.flatMap((r) => r.targets).filter((t) => !t.info);
  const passed = all.filter((t) => t.pass === true).length;
  const failed = all.filter((t) => t.pass === false).length;
  out.push(
    "",
    `targets: ${passed} met, ${failed} missed, ${
      all.length - passed - failed
    } not measured`,
  );
  return out.join("\n");
}

/**
 * Writes the results (plus machine info) as JSON.
 *
 * @example
 * ```ts ignore
 * await writeResults("bench/results.json", results, { quick: false });
 * ```
 */
export async function writeResults(
  path: string,
  results: ScenarioResult[],
  config: Record<string, unknown>,
): Promise<void> {
  const doc = {
    date: new Date().toISOString(),
    machine: {
      cpus: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      os: Deno.build.os,
    },
    config,
    scenarios: results,
  };
  await Deno.writeTextFile(path, JSON.stringify(doc, null, 2) + "\n");
}
