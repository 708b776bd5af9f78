// Measures one large executeModel round trip (echo of `--mb` MiB) inline vs through spill-over:
//   deno run -A scripts/measure_spill.ts            (runs both modes, each in a fresh process)
//   deno run -A scripts/measure_spill.ts spill 100 3  (one mode, MiB, round trips)
// Prints the wall time of the round trip and the peak RSS of the host above its baseline
// (the kernel's high-water mark, so short peaks inside synchronous steps count).
import { Pool } from "../src/pool.ts";
import { spillover } from "../plugins/spillover.ts";

const MODELS = new URL("../python/tests/models/", import.meta.url).pathname;
const [mode, mbArg] = Deno.args;
const mb = Number(mbArg ?? 100);
const rounds = Number(Deno.args[2] ?? 3);

if (mode === undefined) {
  for (const m of ["inline", "spill"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--max-old-space-size=4096",
        new URL(import.meta.url).pathname,
        m,
        String(mb),
        String(rounds),
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!out.success) Deno.exit(1);
  }
  Deno.exit(0);
}

const frameLimit = (mb + 16) * 1024 * 1024;
const pool = await Pool.start({
  workers: 1,
  modelsDir: MODELS,
  handleSignals: false,
  maxFrameSize: frameLimit,
  plugins: { defaults: false, use: mode === "spill" ? [spillover()] : [] },
});
try {
  await pool.addModel("spill_echo", { file: "spill_echo.py" });
  await pool.execute("spill_echo", { op: "echo", data: "warm-up" });
  const baseline = Deno.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(
    () => (peak = Math.max(peak, Deno.memoryUsage().rss)),
    5,
  );
  let data: string | undefined = "x".repeat(mb * 1024 * 1024);
  const times: number[] = [];
  let result: { data?: string } | undefined;
  for (let i = 0; i < rounds; i++) {
    result = undefined;
    const started = performance.now();
    result = await pool.execute("spill_echo", { op: "echo", data }) as {
      data: string;
    };
    times.push(performance.now() - started);
  }
  const ms = Math.min(...times);
  peak = Math.max(peak, Deno.memoryUsage().rss, highWaterMark());
  clearInterval(sampler);
  if (result?.data?.length !== data.length) throw new Error("echo mismatch");
  data = undefined;
  result = undefined;
  const payload = mb * 1024 * 1024;
  console.log(
    `${mode.padEnd(6)} ${mb} MiB echo: ${
      ms.toFixed(0)
    } ms (best of ${rounds}: ${
      times.map((t) => t.toFixed(0)).join(", ")
    }), peak RSS +${((peak - baseline) / 2 ** 20).toFixed(0)} MiB ` +
      `(${((peak - baseline) / payload).toFixed(2)}x payload, baseline ${
        (baseline / 2 ** 20).toFixed(0)
      } MiB)`,
  );
} finally {
  await pool.close();
}

/** The kernel's peak RSS of this process (exact, unlike sampling), or 0 where /proc is missing. */
function highWaterMark(): number {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
    return kb === undefined ? 0 : Number(kb) * 1024;
  } catch {
    return 0;
  }
}
