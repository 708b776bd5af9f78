/**
 * Scenario 5: an eval atom printing ~100 MB in 100-byte lines; MB/s
 * delivered to the host and the host's peak memory. The reference is the
 * same Python loop writing to a plain pipe read by Deno (the ceiling).
 *
 * @module
 */
import { poolCaller } from "../callers.ts";
import { oneLine, summarizeRounds } from "../drivers.ts";
import { peakRss } from "../memory.ts";
import { infoRatio } from "../targets.ts";
import type { BenchConfig, Row, Scenario, Target } from "../types.ts";

const MB = 1_000_000;
const LINE = 100; // 99 characters + newline

function printCode(lines: number): string {
  return `line = "x" * ${
    LINE - 1
  }\nfor _ in range(${lines}):\n    print(line)\n`;
}

function totalBytes(config: BenchConfig): number {
  return config.quick ? 20 * MB : 100 * MB;
}

async function viaPyproxy(
  config: BenchConfig,
  rounds: number,
): Promise<Record<string, number>[]> {
  const caller = await poolCaller("echo").open();
  try {
    const pool = caller.pool;
    if (pool?.eval === undefined) {
      throw new Error("pool.eval does not exist yet");
    }
    const bytes = totalBytes(config);
    const out: Record<string, number>[] = [];
    for (let i = 0; i < rounds; i++) {
      const t = performance.now();
      const atom = pool.eval(printCode(bytes / LINE));
      let got = 0;
      const drained = (async () => {
        for await (const chunk of atom.output) {
          if (chunk.fd === 1) got += chunk.data.length;
        }
      })();
      await atom.result;
      await drained;
      const s = (performance.now() - t) / 1000;
      if (got !== bytes) {
        throw new Error(
          `Cannot benchmark: got ${got} bytes of output, expected ${bytes}`,
        );
      }
      out.push({ "MB/s": bytes / MB / s, "s": s });
    }
    return out;
  } finally {
    await caller.close();
  }
}

async function viaPipe(
  config: BenchConfig,
  rounds: number,
): Promise<Record<string, number>[]> {
  const bytes = totalBytes(config);
  const out: Record<string, number>[] = [];
  for (let i = 0; i < rounds; i++) {
    const child = new Deno.Command("python3", {
      args: ["-c", printCode(bytes / LINE)],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
      // Plain block-buffered stdout, as a pipe normally gets (this machine's
      // environment sets PYTHONUNBUFFERED, which would make it one write per line).
      env: { PYTHONUNBUFFERED: "" },
    }).spawn();
    let got = 0;
    // Timed from the first output: the pyproxy rows time an eval on a running
    // worker, so the interpreter's start (0.05 s for /usr/bin/python3, 0.2–0.36 s
    // through a pyenv shim on the benchmark machine) is not the pipe's cost.
    let t = NaN;
    try {
      for await (const chunk of child.stdout) {
        if (got === 0) t = performance.now();
        got += chunk.length;
      }
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited already
      }
      await child.status;
    }
    const s = (performance.now() - t) / 1000;
    if (got !== bytes) {
      throw new Error(`Cannot benchmark: got ${got} bytes, expected ${bytes}`);
    }
    out.push({ "MB/s": bytes / MB / s, "s": s });
  }
  return out;
}

/**
 * Eval output throughput.
 *
 * @example
 * ```ts ignore
 * const rows = await evalOutput.run({ rounds: 3, roundMs: 1000, quick: true }, "pyproxy eval");
 * ```
 */
export const evalOutput: Scenario = {
  id: "eval",
  title: "eval output (an atom printing ~100 MB in 100 B lines)",
  cases: () => ["pyproxy eval (print)", "python → pipe (reference)"],
  async run(config: BenchConfig, caseName?: string): Promise<Row[]> {
    const name = caseName ?? "pyproxy eval (print)";
    const rounds = Math.min(config.rounds, 3);
    try {
      const results = name.startsWith("pyproxy")
        ? await viaPyproxy(config, rounds)
        : await viaPipe(config, rounds);
      const metrics = summarizeRounds(results);
      metrics["host peak RSS MB"] = {
        median: peakRss() / MB,
        min: peakRss() / MB,
        max: peakRss() / MB,
        n: 1,
      };
      return [{
        name,
        metrics,
        note: `${totalBytes(config) / MB} MB per round`,
      }];
    } catch (err) {
      return [{ name, metrics: {}, skipped: oneLine(err) }];
    }
  },
  targets(rows: Row[]): Target[] {
    return [
      infoRatio(rows, {
        label: "pyproxy eval MB/s / python → pipe",
        num: "pyproxy eval (print)",
        den: "python → pipe (reference)",
        metric: "MB/s",
        threshold: 1,
      }),
    ];
  },
  timeoutMs: (config) => (config.quick ? 90_000 : 180_000),
};
