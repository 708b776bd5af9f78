/**
 * The TypeScript in the docs type-checks against the code: README.md and
 * docs/*.md code blocks (`ts ignore` blocks excepted), as a reader would
 * paste them. A renamed option or export fails here, not in a user's editor.
 * (docs/migrating.md's ported Python files also run: migrating_doc_test.ts.)
 */
import assert from "node:assert/strict";
import { assertDenoChecks } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("the code blocks of README.md and docs/*.md, and the @example blocks of the JSDoc (src/, plugins/, mod.ts), type-check (`ts ignore` ones excepted)", async () => {
  // What a reader pastes from the docs, or copies from `deno doc` or the JSR
  // pages: an example that no longer compiles misleads as much as a wrong
  // doc. (`deno test --doc` would also run them: a minute, for what this
  // finds in seconds.) One `deno check --doc` of the sources and the
  // Markdown files checks both kinds of block: it type-checks mod.ts's graph
  // once, where a `--doc-only` run of the Markdown and a `--doc` run of the
  // sources each checked it (uncached, as on a fresh CI machine: 6.1 + 6.9 s
  // of CPU -> 7.4 s).
  const files = ["mod.ts"];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(`${ROOT}${dir}`)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) walk(path);
      else if (entry.isFile && entry.name.endsWith(".ts")) files.push(path);
    }
  };
  walk("src");
  walk("plugins");
  const docs = ["README.md"];
  for (const entry of Deno.readDirSync(`${ROOT}docs`)) {
    if (entry.isFile && entry.name.endsWith(".md")) {
      docs.push(`docs/${entry.name}`);
    }
  }
  await assertDenoChecks(["--doc", ...files.sort(), ...docs.sort()]);
});

Deno.test("no JSDoc line starts with '>' (Markdown would show it as a quote)", () => {
  // A wrapped "a number\n * >= 0" showed in \`deno doc\` (and on JSR) as a
  // quote block: "a number" then "│ = 0, ...".
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(`${ROOT}${dir}`)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) walk(path);
      else if (entry.isFile && entry.name.endsWith(".ts")) {
        const lines = Deno.readTextFileSync(`${ROOT}${path}`).split("\n");
        let fence = false;
        lines.forEach((line, i) => {
          if (/^\s*\* ```/.test(line)) fence = !fence;
          else if (!fence && /^\s*\* >/.test(line)) {
            found.push(`${path}:${i + 1}: ${line.trim()}`);
          }
        });
      }
    }
  };
  walk("src");
  walk("plugins");
  assert.deepEqual(found, []);
});

/** `deno doc --json mod.ts`, parsed. */
async function docJson(): Promise<unknown> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", "mod.ts"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** The exported symbols in `doc` (`deno doc --json`) whose JSDoc has no `@example`. */
function withoutExample(doc: unknown): string[] {
  const { nodes } = doc as {
    nodes: Record<string, {
      symbols?: Array<{
        name: string;
        declarations: Array<{
          location: { filename: string; line: number };
          jsDoc?: { tags?: Array<{ kind: string }> };
        }>;
      }>;
    }>;
  };
  const missing = new Set<string>();
  for (const node of Object.values(nodes)) {
    for (const symbol of node.symbols ?? []) {
      for (const { location, jsDoc } of symbol.declarations) {
        if (!jsDoc?.tags?.some((t) => t.kind === "example")) {
          const file = location.filename.slice(`file://${ROOT}`.length);
          missing.add(`${symbol.name} (${file}:${location.line})`);
        }
      }
    }
  }
  return [...missing].sort();
}

/** Each relative import (`from "./x.ts"`) in the JSDoc texts of `doc`'s symbols and their members. */
function relativeImports(doc: unknown): string[] {
  const found: string[] = [];
  const walk = (node: unknown, where: string): void => {
    if (Array.isArray(node)) {
      for (const item of node) walk(item, where);
    } else if (node !== null && typeof node === "object") {
      const record = node as Record<string, unknown>;
      const here = typeof record.name === "string"
        ? `${where}${where ? "." : ""}${record.name}`
        : where;
      for (const [key, value] of Object.entries(record)) {
        if (key === "jsDoc" && value !== null && typeof value === "object") {
          const { doc, tags } = value as {
            doc?: string;
            tags?: Array<{ doc?: string }>;
          };
          for (const text of [doc, ...(tags ?? []).map((t) => t.doc)]) {
            for (const m of (text ?? "").matchAll(/from "(\.\.?\/[^"]*)"/g)) {
              found.push(`${here}: ${m[1]}`);
            }
          }
        } else {
          walk(value, here);
        }
      }
    }
  };
  walk(Object.values((doc as { nodes: Record<string, unknown> }).nodes), "");
  return found;
}

// One `deno doc --json mod.ts` (a Deno start that documents the whole graph)
// for both steps, where each test ran its own.
Deno.test("the JSDoc of mod.ts's public exports (deno doc --json)", async (t) => {
  const doc = await docJson();
  await t.step(
    "every public export of mod.ts has an @example (plugins/mod.ts's included)",
    () => {
      // `deno doc --lint` asks for JSDoc, not for an example: a reader of a
      // type's page should see it used.
      assert.deepEqual(withoutExample(doc), []);
    },
  );
  await t.step(
    "the JSDoc that JSR shows imports the package by its name, never a relative path",
    () => {
      // A reader of a symbol's page on JSR copies its example: `from "./pool.ts"`
      // (as 270 of them read until 2026-12-07) resolves to nothing in their
      // project; `from "@pyproxy/pyproxy"` is what `deno add` gives them (and
      // what the package's own examples resolve to here: Deno maps a package's
      // own name to its exports). Every doc text of every public symbol, its
      // members' included.
      assert.deepEqual(relativeImports(doc), []);
    },
  );
});
