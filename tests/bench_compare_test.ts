/**
 * `deno task bench:compare` / `bench --compare`: the comparison of two
 * benchmark runs (bench/compare.ts). Synthetic results files; no timing.
 */
import assert from "node:assert/strict";
import {
  compareResults,
  parseResultsFile,
  type ResultsFile,
  ResultsFileError,
} from "../bench/compare.ts";

const REPO = new URL("../", import.meta.url).pathname;

function summary(median: number, min = median, max = median) {
  return { median, min, max, n: 5 };
}

function run(
  date: string,
  opts: {
    ratio: number;
    callsPerS: number;
    range?: [number, number];
    p99: number;
    extra?: boolean;
  },
): ResultsFile {
  const [min, max] = opts.range ?? [opts.callsPerS, opts.callsPerS];
  return {
    date,
    scenarios: [
      {
        id: "pipelined",
        title: "pipelined execute",
        rows: [
          {
            name: "pyproxy Pool",
            metrics: {
              "calls/s": summary(opts.callsPerS, min, max),
              "p99 ms": summary(opts.p99),
            },
          },
          { name: "stdio", metrics: { "calls/s": summary(1000) } },
        ],
        targets: [
          {
            label: "Pool ≥ 1.0x stdio",
            value: opts.ratio,
            threshold: 1,
            op: ">=",
            unit: "x",
            pass: opts.ratio >= 1,
          },
          {
            label: "Pool / floor",
            value: 2,
            threshold: 0,
            op: ">=",
            unit: "x",
            pass: null,
            info: true,
          },
        ],
      },
      ...(opts.extra
        ? [{
          id: "gateway",
          title: "gateway",
          rows: [],
          targets: [],
          skipped: "wrk missing",
        }]
        : []),
    ],
  };
}

/** The line whose cells (split on runs of spaces) start with `cells`. */
function line(text: string, ...cells: string[]): string {
  const start = cells.join(" ");
  const found = text.split("\n").find((l) =>
    l.trim().split(/ {2,}/).slice(0, cells.length).join(" ") === start
  );
  assert.ok(found !== undefined, `no line starting with ${start} in:\n${text}`);
  return found;
}

Deno.test("compareResults: targets before → after, counted by their direction", () => {
  const text = compareResults(
    run("2026-12-05T01:00:00Z", { ratio: 0.9, callsPerS: 900, p99: 2 }),
    run("2026-12-05T02:00:00Z", { ratio: 1.2, callsPerS: 1200, p99: 1 }),
  );
  assert.match(
    text,
    /^before: 2026-12-05T01:00:00Z\nafter: {2}2026-12-05T02:00:00Z/,
  );
  const target = line(text, "✗→✓");
  assert.match(
    target,
    /Pool ≥ 1\.0x stdio \(>= 1x\)\s+0\.900x\s+1\.20x\s+\+33\.3% better/,
  );
  // An informational ratio is shown, not counted.
  assert.match(line(text, "·"), /Pool \/ floor\s+2\.00x\s+2\.00x\s+\+0\.0%$/);
  assert.equal(
    text.split("\n").at(-1),
    "targets: 0 → 1 met (of 1 in both runs); 1 better, 0 worse",
  );
});

Deno.test("compareResults: a lower latency is better, a lower rate worse; ~ marks the old run's spread", () => {
  const text = compareResults(
    run("a", { ratio: 1.1, callsPerS: 1000, range: [950, 1100], p99: 2 }),
    run("b", { ratio: 1.0, callsPerS: 1050, p99: 1.5 }),
  );
  // 1050 lies within the old rounds' 950–1100: noise, whichever way it moved.
  assert.match(
    line(text, "pyproxy Pool", "calls/s"),
    /1000\s+1050\s+\+5\.0% ~$/,
  );
  assert.match(
    line(text, "pyproxy Pool", "p99 ms"),
    /2\.00\s+1\.50\s+-25\.0% better$/,
  );
  assert.match(line(text, "✓→✓"), /1\.10x\s+1\.00x\s+-9\.1% worse$/);
  assert.equal(
    text.split("\n").at(-1),
    "targets: 1 → 1 met (of 1 in both runs); 0 better, 1 worse",
  );
  const slower = compareResults(
    run("a", { ratio: 1.1, callsPerS: 1000, p99: 2 }),
    run("b", { ratio: 1.1, callsPerS: 800, p99: 3 }),
  );
  assert.match(line(slower, "pyproxy Pool", "calls/s"), /-20\.0% worse$/);
  assert.match(line(slower, "pyproxy Pool", "p99 ms"), /\+50\.0% worse$/);
});

Deno.test("compareResults: every metric the scenarios report is judged in its direction", () => {
  // Each metric name the scenarios write, and whether more of it is better.
  const higher: Record<string, boolean> = {
    "calls/s": true,
    "seq calls/s": true,
    "pipelined calls/s": true,
    "req/s": true,
    "MB/s": true,
    "p50 ms": false,
    "p99 ms": false,
    "seq p99 ms": false,
    "s/round trip": false,
    "s": false,
    "host peak RSS MB": false,
    "host growth 1st trip MB": false,
    "python peak RSS MB": false,
    "scavenge ms": false,
    "promoted MB/scavenge": false,
  };
  const file = (value: number): ResultsFile => ({
    date: "d",
    scenarios: [{
      id: "x",
      title: "x",
      rows: [{
        name: "impl",
        metrics: Object.fromEntries(
          Object.keys(higher).map((m) => [m, summary(value)]),
        ),
      }],
      targets: [],
    }],
  });
  const text = compareResults(file(1), file(2));
  for (const [metric, up] of Object.entries(higher)) {
    assert.match(
      line(text, "impl", metric),
      up ? / better$/ : / worse$/,
      `${metric} doubled`,
    );
  }
});

Deno.test("compareResults: scenarios in one run only are named, skipped ones say so", () => {
  const text = compareResults(
    run("a", { ratio: 1, callsPerS: 1, p99: 1, extra: true }),
    run("b", { ratio: 1, callsPerS: 1, p99: 1 }),
  );
  assert.match(text, /\nnot compared: gateway \(only before\)\n/);
  const both = compareResults(
    run("a", { ratio: 1, callsPerS: 1, p99: 1, extra: true }),
    run("b", { ratio: 1, callsPerS: 1, p99: 1, extra: true }),
  );
  assert.match(
    both,
    /## gateway: gateway\n {2}skipped: before wrk missing, after wrk missing/,
  );
});

Deno.test("compareResults: notes runs made with other options or on another machine", () => {
  const a = {
    ...run("a", { ratio: 1, callsPerS: 1, p99: 1 }),
    config: { quick: false, rounds: 5, only: [] },
    machine: { cpus: 2, deno: "2.9.6" },
  };
  const b = {
    ...run("b", { ratio: 1, callsPerS: 1, p99: 1 }),
    config: { quick: true, rounds: 3, only: ["pipelined"] },
    machine: { cpus: 2, deno: "2.9.6" },
  };
  const text = compareResults(a, b);
  assert.match(
    text,
    /\nnote: the runs differ in config: quick false → true, rounds 5 → 3\n/,
  );
  assert.doesNotMatch(text, /differ in machine/);
  assert.doesNotMatch(compareResults(a, a), /note:/);
});

Deno.test("parseResultsFile: real results files; NaN written as null; clear errors", () => {
  const file = run("a", { ratio: 1, callsPerS: 1, p99: 1 });
  const row = file.scenarios[0]!.rows[0]!;
  row.metrics["p99 ms"] = summary(Number.NaN);
  const back = parseResultsFile(JSON.stringify(file), "x.json");
  assert.ok(
    Number.isNaN(back.scenarios[0]!.rows[0]!.metrics["p99 ms"]!.median),
  );
  // Its change is left blank instead of printing NaN.
  assert.match(
    line(compareResults(back, back), "pyproxy Pool", "p99 ms"),
    /–\s+–$/,
  );
  assert.throws(
    () => parseResultsFile("{", "a.json"),
    (e) =>
      e instanceof ResultsFileError && e.code === "RESULTS_FILE" &&
      /^Cannot read a\.json: not JSON/.test(e.message),
  );
  assert.throws(
    () =>
      parseResultsFile(
        JSON.stringify({ date: "d", scenarios: [{ id: 1 }] }),
        "b.json",
      ),
    (e) =>
      e instanceof ResultsFileError &&
      /^Cannot read b\.json: not a results file of `deno task bench` \(at scenarios\.0\.id: /
        .test(e.message),
  );
});

Deno.test("bench:compare and bench --compare: usage and unreadable files exit 2 at once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-compare-" });
  try {
    const good = `${dir}/good.json`;
    await Deno.writeTextFile(
      good,
      JSON.stringify(run("a", { ratio: 1, callsPerS: 1, p99: 1 })),
    );
    const deno = (args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", ...args],
        cwd: REPO,
        stdout: "piped",
        stderr: "piped",
      }).output();
    const dec = (b: Uint8Array) => new TextDecoder().decode(b);
    const ok = await deno(["bench/compare.ts", good, good]);
    assert.equal(ok.code, 0, dec(ok.stderr));
    assert.match(
      dec(ok.stdout),
      /targets: 1 → 1 met \(of 1 in both runs\); 0 better, 0 worse\n$/,
    );
    const usage = await deno(["bench/compare.ts", good]);
    assert.equal(usage.code, 2);
    assert.match(
      dec(usage.stderr),
      /^usage: deno task bench:compare BEFORE\.json AFTER\.json/,
    );
    // The whole benchmark is not run when its --compare file cannot be read.
    const bad = await deno([
      "bench/main.ts",
      "--only",
      "sequential",
      "--out",
      `${dir}/out.json`,
      "--compare",
      `${dir}/missing.json`,
    ]);
    assert.equal(bad.code, 2);
    assert.match(dec(bad.stderr), /Cannot read .*missing\.json/);
    await assert.rejects(Deno.stat(`${dir}/out.json`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
