/**
 * docs/runtimes.md, "Testing your app": the files of the section (each code
 * block whose first line is a comment naming its path, `// tests/x_test.ts`
 * or `# models/x.py`) are written into a project of their own and run by
 * `deno test`, type-checked, as an app's team would run them: every test
 * passes, with the sanitizers the blocks turn on, and leaves no worker.
 * (The blocks import `@pyproxy/pyproxy`, which tests/docs_check_test.ts
 * cannot resolve: they are `ts ignore` there, and checked here.)
 *
 * The project is also the consuming project of docs/runtimes.md ("From a
 * checkout, in your own project"), which type-checks pyproxy's sources with
 * its own `compilerOptions`, not the checkout's: `deno test` (which checks)
 * of a service with `noImplicitReturns` failed in src/gateway/security.ts
 * before its first line ran. Its `compilerOptions` are the checkout's plus
 * the options of strict tsconfig presets that the code meets
 * (`noPropertyAccessFromIndexSignature` is not one of them: docs/runtimes.md
 * says so), so its type check is mod.ts's whole graph under them (each is
 * stricter only: what passes them passes the checkout's own). One check for
 * both: a `deno check` of mod.ts of its own took a full type check more
 * (~7 s of CPU, uncached as in CI after any change).
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
const PAGE = `${ROOT}docs/runtimes.md`;
const FENCE = /^```(\w*)[^\n]*\n([\s\S]*?)^```$/gm;

/** The section's files: path → text. */
export function sectionFiles(markdown: string): Map<string, string> {
  const start = markdown.indexOf("\n### Testing your app\n");
  assert.ok(start >= 0, "docs/runtimes.md has no 'Testing your app'");
  const end = markdown.indexOf("\n## ", start);
  const section = markdown.slice(start, end < 0 ? undefined : end);
  const files = new Map<string, string>();
  for (const m of section.matchAll(FENCE)) {
    const path = /^(?:\/\/|#) ([\w./-]+)\n/.exec(m[2]!)?.[1];
    if (path !== undefined) files.set(path, m[2]!);
  }
  return files;
}

Deno.test("docs/runtimes.md's 'Testing your app' files pass `deno test` in a project of their own, whose stricter compilerOptions mod.ts type-checks under", async () => {
  const files = sectionFiles(await Deno.readTextFile(PAGE));
  assert.deepEqual([...files.keys()].sort(), [
    "models/scorer.py",
    "src/label.ts",
    "tests/_pool.ts",
    "tests/fake_model_test.ts",
    "tests/label_test.ts",
    "tests/scorer_steps_test.ts",
    "tests/scorer_test.ts",
  ]);
  // The type check of `deno test` covers mod.ts's graph through them.
  assert.ok(
    [...files.values()].some((text) =>
      text.includes('from "@pyproxy/pyproxy"')
    ),
    "a file of the section imports @pyproxy/pyproxy (mod.ts)",
  );
  const own = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)) as {
    imports: Record<string, string>;
    compilerOptions: Record<string, unknown>;
    unstable: string[];
  };
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-testing-doc-" });
  try {
    // The checkout as the package (what `links` does), its npm imports mapped.
    await Deno.writeTextFile(
      `${dir}/deno.json`,
      JSON.stringify({
        imports: { ...own.imports, "@pyproxy/pyproxy": `${ROOT}mod.ts` },
        unstable: own.unstable,
        // A consuming project's stricter options (see the top).
        compilerOptions: {
          ...own.compilerOptions,
          noImplicitReturns: true,
          noFallthroughCasesInSwitch: true,
          noUnusedLocals: true,
          noUnusedParameters: true,
          allowUnreachableCode: false,
          allowUnusedLabels: false,
        },
      }),
    );
    for (const [path, text] of files) {
      await Deno.mkdir(`${dir}/${path.slice(0, path.lastIndexOf("/"))}`, {
        recursive: true,
      });
      await Deno.writeTextFile(`${dir}/${path}`, text);
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", "tests/"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const text = new TextDecoder().decode(out.stdout) +
      new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    // Two tests, one of two steps, two without a pool, one with a stand-in.
    assert.match(text, /ok \| 6 passed \(2 steps\) \| 0 failed/, text);
    // logDir "-": nothing written into the models directory.
    assert.deepEqual(
      [...Deno.readDirSync(`${dir}/models`)].map((e) => e.name).sort(),
      ["scorer.py"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
