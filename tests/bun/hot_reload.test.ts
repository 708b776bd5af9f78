// `bun --hot` runs a program's module again in the same process at each save:
// a module-level Pool.start leaves the previous pool's workers running, and
// the globalThis recipe of docs/runtimes.md ("A pool inside a Bun.serve
// service") closes them. Both are checked here, with a real `bun --hot`.
import { expect, test } from "bun:test";
import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { alive, waitGone } from "./_helpers.ts";

const MOD = fileURLToPath(new URL("../../mod.ts", import.meta.url));

/** A program that starts a pool of 2 and prints its workers' pids, a line per run. */
function program(recipe: boolean): string {
  const start = recipe
    ? `const hot = globalThis as { pyproxyPool?: Pool };
await hot.pyproxyPool?.close();
const pool = hot.pyproxyPool = await Pool.start({ workers: 2 });`
    : `const pool = await Pool.start({ workers: 2 });`;
  return `import { Pool } from ${JSON.stringify(MOD)};
${start}
console.log(JSON.stringify(pool.status().workers.map((w) => w.pid)));
setInterval(() => {}, 1000); // a service keeps running
`;
}

/**
 * Runs `program(recipe)` under `bun --hot`, saves it once more, and gives
 * `check` the workers' pids of the first run and of the second; then ends
 * the process (SIGTERM: its pools close) and makes sure no worker is left.
 */
async function twoRuns(
  recipe: boolean,
  check: (first: number[], second: number[]) => void | Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-hot-"));
  const file = join(dir, "app.ts");
  await writeFile(file, program(recipe));
  const child = Bun.spawn([process.execPath, "--hot", "run", file], {
    cwd: dir,
    stdout: "pipe",
    stderr: "inherit",
  });
  const seen: number[][] = [];
  try {
    const reader = child.stdout.getReader();
    const decoder = new TextDecoder();
    let text = "";
    const nextRun = async (): Promise<number[]> => {
      while (!text.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`bun --hot ended: ${text}`);
        text += decoder.decode(value, { stream: true });
      }
      const line = text.slice(0, text.indexOf("\n"));
      text = text.slice(line.length + 1);
      const pids = JSON.parse(line) as number[];
      seen.push(pids);
      return pids;
    };
    const first = await nextRun();
    await appendFile(file, "// saved again\n");
    const second = await nextRun();
    expect(second).not.toEqual(first);
    await check(first, second);
  } finally {
    child.kill("SIGTERM");
    await child.exited;
    const all = seen.flat();
    const left = await waitGone(all, 10_000);
    for (const pid of left) process.kill(pid, "SIGKILL");
    await rm(dir, { recursive: true, force: true });
    expect(left).toEqual([]);
  }
}

test(
  "bun --hot: a module-level Pool.start leaves the previous run's workers running",
  async () => {
    await twoRuns(false, (first) => {
      expect(first.filter(alive)).toEqual(first);
    });
  },
  60_000,
);

test(
  "bun --hot: the docs' globalThis recipe closes the previous run's pool",
  async () => {
    await twoRuns(true, async (first) => {
      expect(await waitGone(first, 10_000)).toEqual([]);
    });
  },
  60_000,
);
