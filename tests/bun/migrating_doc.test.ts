// docs/migrating.md on Bun, as its reader would run it: the files the page
// marks with `<!-- file: <path> -->` are written to a directory, its
// TypeScript blocks run there with `bun run` (the package imported from this
// checkout), and its gateway commands run as `bun run mod.ts serve`, then get
// the page's requests and a SIGTERM (the drain runs the model's close()).
// tests/migrating_doc_test.ts checks the same on Deno, in more detail.
import { expect, test } from "bun:test";
import {
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Buffer } from "node:buffer";
import { startServe } from "./_serve_process.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const MOD = join(ROOT, "mod.ts");
const FENCE = /^```(\w*)([^\n]*)\n([\s\S]*?)^```$/gm;

/**
 * Writes the page's marked files and its runnable TypeScript blocks
 * (`block-<n>.ts`, importing this checkout) into a fresh directory.
 */
async function extract(): Promise<{ dir: string; scripts: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-migrating-"));
  const page = await readFile(join(ROOT, "docs/migrating.md"), "utf8");
  const scripts: string[] = [];
  for (const m of page.matchAll(FENCE)) {
    const before = page.slice(0, m.index).trimEnd().split("\n").at(-1);
    const file = /^<!-- file: (\S+) -->$/.exec(before ?? "")?.[1];
    const text = m[3]!;
    if (file !== undefined) {
      await mkdir(dirname(join(dir, file)), { recursive: true });
      await writeFile(join(dir, file), text);
    } else if (m[1] === "ts" && !m[2]!.includes("ignore")) {
      const name = `block-${scripts.length}.ts`;
      await writeFile(
        join(dir, name),
        text.replaceAll('"@pyproxy/pyproxy"', JSON.stringify(MOD)),
      );
      scripts.push(name);
    }
  }
  // The blocks' own imports (@logtape/logtape) resolve from the checkout's.
  await symlink(join(ROOT, "node_modules"), join(dir, "node_modules"));
  return { dir, scripts };
}

/** The lines the risk model's close() wrote to the log files in `logs`. */
async function closeLinesIn(logs: string): Promise<string[]> {
  const lines: string[] = [];
  for (const name of await readdir(logs)) {
    if (!name.endsWith(".log")) continue;
    const text = await readFile(join(logs, name), "utf8");
    lines.push(...text.match(/shutting down after \d+ calls/g) ?? []);
  }
  return lines.sort();
}

/** The same in the gateway's log directory, `models/logs`. */
function closeLines(dir: string): Promise<string[]> {
  return closeLinesIn(join(dir, "models/logs"));
}

/**
 * The same in a library pool's default log directory, under the scripts'
 * temp directory (`<dir>/tmp`, their TMPDIR):
 * `pyproxy-logs-<uid>/models-<hash>/`.
 */
async function libraryCloseLines(dir: string): Promise<string[]> {
  const lines: string[] = [];
  const tmp = join(dir, "tmp");
  for (const root of await readdir(tmp)) {
    if (!root.startsWith("pyproxy-logs")) continue;
    for (const sub of await readdir(join(tmp, root))) {
      lines.push(...await closeLinesIn(join(tmp, root, sub)));
    }
  }
  return lines.sort();
}

async function run(
  cwd: string,
  args: string[],
  env: Record<string, string> = {},
) {
  const child = Bun.spawn([process.execPath, "run", ...args], {
    cwd,
    env: { ...process.env, NO_COLOR: "1", ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  try {
    const [out, err, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ]);
    return { out, err, code };
  } finally {
    child.kill("SIGKILL");
    await child.exited;
  }
}

test(
  "docs/migrating.md's TypeScript blocks run with bun run and print what the page says",
  async () => {
    const { dir, scripts } = await extract();
    try {
      expect(scripts.length).toBe(5);
      // The image the image model's block reads: a 1x1 PNG.
      await writeFile(
        join(dir, "kitten.png"),
        Buffer.from(
          "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==",
          "base64",
        ),
      );
      // One at a time: the pools share the workers' log files (in their
      // temp directory: a library pool's default log directory).
      await mkdir(join(dir, "tmp"));
      const outputs = [];
      for (const script of scripts) {
        outputs.push(
          await run(dir, [script], {
            RISK_WEIGHTS: "weights.json",
            TMPDIR: join(dir, "tmp"),
          }),
        );
      }
      const [fastapi, torchserve, stamp, shell, notebook] = outputs;
      expect(stamp!.code).toBe(0);
      expect(stamp!.out).toContain("67 → 105 bytes");
      const stamped = await readFile(join(dir, "stamped.png"));
      expect(stamped.subarray(37, 48).toString("latin1")).toBe("tEXtComment");
      expect(fastapi!.code).toBe(0);
      expect(fastapi!.out).toContain('label: "review"');
      expect(fastapi!.out).toContain("approve: 0.0545");
      expect(fastapi!.out).toContain(
        "422 HTTPError: not numbers: income, debt, age",
      );
      // The page's configure() shows the model's records made as it loads;
      // close()'s reach each worker's log file, as the page says.
      expect(fastapi!.out).toContain(
        "INF pyproxy·python·risk model loaded from weights.json",
      );
      expect(await libraryCloseLines(dir)).toEqual([
        "shutting down after 0 calls",
        "shutting down after 1 calls",
      ]);
      expect(torchserve!.code).toBe(0);
      expect(torchserve!.out.match(/label: "\w+"/g)).toEqual([
        'label: "positive"',
        'label: "negative"',
        'label: "negative"',
      ]);
      // "From Jupyter kernels": a session's cells, output and completion.
      expect(notebook!.code).toBe(0);
      expect(notebook!.out).toContain("1 area\n");
      expect(notebook!.out).toContain("12.566370614359172");
      expect(notebook!.out).toContain('"math.floor("');
      expect(shell!.code).toBe(0);
      expect(shell!.out.replace(/\s+/g, " ")).toContain(
        'words: 6, first: [ "to", "be", "or" ]',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  60_000,
);

const post = (body: string, type?: string): RequestInit => ({
  method: "POST",
  body,
  ...(type ? { headers: { "content-type": type } } : {}),
});

test(
  "docs/migrating.md's gateways on Bun: the FastAPI port's answers, error.fields and its close() at SIGTERM; the TorchServe port's config and hints for its old clients",
  async () => {
    const { dir } = await extract();
    try {
      const fastapi = await startServe(
        ["--models", "./models", "--port", "0"],
        { cwd: dir, env: { RISK_WEIGHTS: "weights.json" } },
      );
      try {
        const url = fastapi.url;
        const ok = await fetch(
          `${url}/v1/models/risk/execute`,
          post('{"income": 30000, "debt": 20000, "age": 30}'),
        );
        expect(ok.status).toBe(200);
        expect((await ok.json()).label).toBe("review");
        const bad = await fetch(
          `${url}/v1/models/risk/execute`,
          post('{"income": "a lot"}'),
        );
        expect(bad.status).toBe(400);
        const { error } = await bad.json();
        expect(error.message).toBe(
          "Cannot execute model 'risk': income: expected a number; debt: is required; age: is required",
        );
        expect(error.fields[0]).toEqual({
          path: ["income"],
          message: "expected a number",
          expected: "number",
          received: "string",
        });
        const health = await fetch(`${url}/health`);
        expect(health.status).toBe(404);
        expect((await health.json()).error.message).toContain(
          "GET /healthz",
        );
        fastapi.child.kill("SIGTERM");
        expect(await fastapi.child.exited).toBe(0);
      } finally {
        fastapi.child.kill("SIGKILL");
        await fastapi.child.exited;
      }
      expect(await closeLines(dir)).toEqual([
        "shutting down after 0 calls",
        "shutting down after 1 calls",
      ]);

      const torchserve = await startServe([
        "--config",
        "pyproxy.json",
        "--port",
        "0",
      ], { cwd: dir });
      try {
        const url = torchserve.url;
        const res = await fetch(
          `${url}/v1/models/textclf/execute`,
          post('{"text": "great, I love it"}'),
        );
        expect(res.status).toBe(200);
        expect(await res.json()).toMatchObject({ label: "positive" });
        const desc = await (await fetch(`${url}/v1/models/textclf`)).json();
        expect(desc.batch).toEqual({ size: 8, delayMs: 50 });
        expect(desc.timeout).toBe(120_000);
        const old = await fetch(`${url}/predictions/textclf`, post("great"));
        expect(old.status).toBe(404);
        expect((await old.json()).error.message).toContain(
          "POST /v1/models/textclf/execute",
        );
        const raw = await fetch(
          `${url}/v1/models/textclf/execute`,
          post("great", "text/plain"),
        );
        expect(raw.status).toBe(400);
        expect((await raw.json()).error.message).toContain(
          "JSON bodies only, not text/plain",
        );
        torchserve.child.kill("SIGTERM");
        expect(await torchserve.child.exited).toBe(0);
      } finally {
        torchserve.child.kill("SIGKILL");
        await torchserve.child.exited;
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  60_000,
);
