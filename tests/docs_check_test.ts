/**
 * The TypeScript in the docs type-checks against the code: README.md and
 * docs/*.md code blocks (`ts ignore` blocks excepted), as a reader would
 * paste them. A renamed option or export fails here, not in a user's editor.
 * (docs/migrating.md's ported Python files also run: migrating_doc_test.ts.)
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("the code blocks of README.md and docs/*.md type-check", async () => {
  const docs = ["README.md"];
  for (const entry of Deno.readDirSync(`${ROOT}docs`)) {
    if (entry.isFile && entry.name.endsWith(".md")) {
      docs.push(`docs/${entry.name}`);
    }
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["check", "--doc-only", ...docs.sort()],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  assert.equal(
    out.code,
    0,
    // deno's report, without the colour codes
    // deno-lint-ignore no-control-regex
    text.replace(/\x1b\[[0-9;]*m/g, "").split("\n").filter((l) =>
      /TS\d+|at file:|error/.test(l)
    ).join("\n"),
  );
});
