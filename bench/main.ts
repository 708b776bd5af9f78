/**
 * `deno task bench`: runs every scenario, each in a fresh process with a time
 * limit, prints one table (median/min/max over rounds, ratios against the
 * floor and stdio references measured in the same run, targets with ✓/✗)
 * and writes `bench/results.json`. A scenario whose pieces are missing or
 * fail shows as "skipped: <reason>"; the run always completes.
 *
 *     deno task bench [--quick] [--only sequential,pipelined] [--rounds N] [--verbose]
 *                     [--out FILE] [--compare EARLIER.json]
 *
 * @module
 */
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { SCENARIOS } from "./scenarios/mod.ts";
import { formatResults, writeResults } from "./table.ts";
import type { BenchConfig, Row, Scenario, ScenarioResult } from "./types.ts";
import { loadPyproxy } from "./pyproxy.ts";
import {
  compareResults,
  parseResultsFile,
  type ResultsFile,
  ResultsFileError,
} from "./compare.ts";

const HERE = new URL("./", import.meta.url).pathname;

interface ChildOutcome {
  rows?: Row[];
  error?: string;
}

async function runChild(
  scenario: Scenario,
  config: BenchConfig,
  caseName: string | undefined,
  verbose: boolean,
): Promise<ChildOutcome> {
  const args = [
    "run",
    "-A",
    HERE + "run_scenario.ts",
    "--scenario",
    scenario.id,
    "--config",
    JSON.stringify(config),
  ];
  if (caseName !== undefined) args.push("--case", caseName);
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: verbose ? "inherit" : "piped",
  }).spawn();
  const timeoutMs = scenario.timeoutMs(config);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // exited meanwhile
    }
  }, timeoutMs);
  try {
    const out = await child.output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = verbose ? "" : new TextDecoder().decode(out.stderr);
    const line = stdout.split("\n").find((l) => l.startsWith("BENCH_ROWS "));
    if (timedOut) return { error: `timed out after ${timeoutMs / 1000} s` };
    if (line === undefined) {
      const tail = stderr.trim().split("\n").slice(-3).join(" | ");
      return {
        error: `the scenario process failed (exit ${out.code}): ${
          tail.slice(0, 400)
        }`,
      };
    }
    return { rows: JSON.parse(line.slice("BENCH_ROWS ".length)) };
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
  }
}

async function runScenario(
  scenario: Scenario,
  config: BenchConfig,
  verbose: boolean,
): Promise<ScenarioResult> {
  const started = performance.now();
  const cases = scenario.cases?.(config) ?? [undefined];
  const rows: Row[] = [];
  for (const caseName of cases) {
    console.error(
      `[bench] ${scenario.id}${
        caseName === undefined ? "" : ` / ${caseName}`
      } ...`,
    );
    const outcome = await runChild(scenario, config, caseName, verbose);
    if (outcome.rows !== undefined) rows.push(...outcome.rows);
    else {rows.push({
        name: caseName ?? scenario.id,
        metrics: {},
        skipped: outcome.error ?? "unknown failure",
      });}
  }
  return {
    id: scenario.id,
    title: scenario.title,
    rows,
    targets: scenario.targets(rows),
    seconds: (performance.now() - started) / 1000,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string", multiple: true },
      rounds: { type: "string" },
      "round-ms": { type: "string" },
      out: { type: "string", default: HERE + "results.json" },
      verbose: { type: "boolean", default: false },
      list: { type: "boolean", default: false },
      compare: { type: "string" },
    },
  });
  if (values.list) {
    for (const s of SCENARIOS) console.log(`${s.id.padEnd(12)} ${s.title}`);
    Deno.exit(0);
  }
  const config: BenchConfig = {
    quick: values.quick ?? false,
    rounds: Number(values.rounds ?? (values.quick ? 3 : 5)),
    roundMs: Number(values["round-ms"] ?? (values.quick ? 300 : 1000)),
  };
  // Checked now: a NaN would make every time limit 0 ("timed out after NaN
  // s"), 0 rounds would print empty rows as if measured.
  if (!Number.isInteger(config.rounds) || config.rounds < 1) {
    console.error(
      `Cannot run: --rounds: expected an integer >= 1, got ${values.rounds}`,
    );
    Deno.exit(2);
  }
  if (!Number.isFinite(config.roundMs) || config.roundMs <= 0) {
    console.error(
      `Cannot run: --round-ms: expected a number > 0, got ${
        values["round-ms"]
      }`,
    );
    Deno.exit(2);
  }
  const only = (values.only ?? []).flatMap((o) => o.split(",")).map((o) =>
    o.trim()
  ).filter(Boolean);
  if (values.only !== undefined && only.length === 0) {
    // Not "every scenario": an empty list is a mistake, not a 5-minute run.
    console.error(
      `Cannot run: --only: expected scenario ids (${
        SCENARIOS.map((s) => s.id).join(", ")
      }), got none`,
    );
    Deno.exit(2);
  }
  const unknown = only.filter((o) => !SCENARIOS.some((s) => s.id === o));
  if (unknown.length > 0) {
    console.error(
      `Cannot run: unknown scenario ${unknown.join(", ")} (known: ${
        SCENARIOS.map((s) => s.id).join(", ")
      })`,
    );
    Deno.exit(2);
  }
  // Read before the run: a wrong path fails now, not after minutes of measuring.
  let before: ResultsFile | undefined;
  if (values.compare !== undefined) {
    try {
      before = parseResultsFile(
        await Deno.readTextFile(values.compare),
        values.compare,
      );
    } catch (err) {
      console.error(
        err instanceof ResultsFileError
          ? err.message
          : `Cannot read ${values.compare}: ${(err as Error).message}`,
      );
      Deno.exit(2);
    }
  }
  // Likewise the output: a missing or read-only directory fails now (a temp
  // file in it, removed at once; an earlier results file there is kept).
  const out = values.out ?? HERE + "results.json";
  try {
    await Deno.remove(await Deno.makeTempFile({ dir: dirname(out) }));
  } catch (err) {
    console.error(`Cannot write ${out}: ${(err as Error).message}`);
    Deno.exit(2);
  }
  const api = await loadPyproxy();
  for (const [piece, reason] of Object.entries(api.missing)) {
    console.error(`[bench] note: ${piece}: ${reason}`);
  }
  const started = performance.now();
  const results: ScenarioResult[] = [];
  for (const scenario of SCENARIOS) {
    if (only.length > 0 && !only.includes(scenario.id)) continue;
    results.push(await runScenario(scenario, config, values.verbose ?? false));
  }
  console.log(formatResults(results));
  await writeResults(out, results, { ...config, only });
  console.log(
    `total ${
      ((performance.now() - started) / 1000).toFixed(0)
    } s; results in ${out}`,
  );
  if (before !== undefined) {
    console.log(
      "\n# compared with " + values.compare + "\n" +
        compareResults(
          before,
          parseResultsFile(await Deno.readTextFile(out), out),
        ),
    );
  }
}
