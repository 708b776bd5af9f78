// docs/runtimes.md, "Testing your app", on Bun: the section's `bun test` file
// (a pool shared by beforeAll/afterAll) and its model, written into a
// directory of their own (the package imported from this checkout) and run
// by `bun test` there. tests/docs_testing_test.ts runs the Deno files.
import { expect, test } from "bun:test";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = new URL("../..", import.meta.url).pathname;
const FENCE = /^```(\w*)[^\n]*\n([\s\S]*?)^```$/gm;

test(
  "docs/runtimes.md's 'Testing your app' bun test file passes",
  async () => {
    const page = await readFile(join(ROOT, "docs/runtimes.md"), "utf8");
    const start = page.indexOf("\n### Testing your app\n");
    const section = page.slice(start, page.indexOf("\n## ", start));
    const blocks = [...section.matchAll(FENCE)].map((m) => m[2]!);
    const model = blocks.find((b) => b.startsWith("# models/scorer.py\n"));
    const bunTest = blocks.find((b) =>
      b.startsWith("// scorer.test.ts, run by bun test\n")
    );
    expect(model).toBeDefined();
    expect(bunTest).toBeDefined();
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-testing-doc-"));
    try {
      await mkdir(join(dir, "models"));
      await writeFile(join(dir, "models/scorer.py"), model!);
      await writeFile(
        join(dir, "scorer.test.ts"),
        bunTest!.replaceAll(
          '"@pyproxy/pyproxy"',
          JSON.stringify(join(ROOT, "mod.ts")),
        ),
      );
      const child = Bun.spawn([process.execPath, "test", "scorer.test.ts"], {
        cwd: dir,
        stdout: "pipe",
        stderr: "pipe",
        env: { ...process.env, NO_COLOR: "1" },
      });
      const [out, err, code] = await Promise.all([
        new Response(child.stdout).text(),
        new Response(child.stderr).text(),
        child.exited,
      ]);
      expect({ code, out: out + err }).toMatchObject({ code: 0 });
      expect(err).toMatch(/ 1 pass\n 0 fail/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
  60_000,
);
