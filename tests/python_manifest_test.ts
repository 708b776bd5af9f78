import assert from "node:assert/strict";
import { PYTHON_MANIFEST } from "../src/runtime/python_manifest.ts";
import { PYTHON_SOURCES } from "../src/runtime/python_sources.ts";
import {
  collectPythonManifest,
  collectPythonSources,
  PYTHON_PACKAGES,
} from "../scripts/gen_python_manifest.ts";

Deno.test("PYTHON_MANIFEST matches the files under python/ (run scripts/gen_python_manifest.ts)", async () => {
  const onDisk = await collectPythonManifest();
  assert.deepEqual(
    PYTHON_MANIFEST,
    onDisk,
    "src/runtime/python_manifest.ts is stale: run `deno run -A scripts/gen_python_manifest.ts`",
  );
});

Deno.test("PYTHON_MANIFEST lists only files of the shipped packages", () => {
  for (const file of PYTHON_MANIFEST.files) {
    assert.ok(
      PYTHON_PACKAGES.some((pkg) => file.path.startsWith(`${pkg}/`)),
      file.path,
    );
    assert.doesNotMatch(file.path, /__pycache__|\.pyc$/);
  }
});

Deno.test("PYTHON_SOURCES holds the text of every file under python/ (run scripts/gen_python_manifest.ts)", async () => {
  const onDisk = await collectPythonSources(await collectPythonManifest());
  assert.deepEqual(
    Object.keys(PYTHON_SOURCES),
    Object.keys(onDisk),
    "src/runtime/python_sources.ts is stale: run `deno task manifest`",
  );
  for (const [path, text] of Object.entries(onDisk)) {
    assert.ok(
      PYTHON_SOURCES[path] === text,
      `src/runtime/python_sources.ts is stale (${path}): run \`deno task manifest\``,
    );
  }
});

Deno.test("collectPythonSources keeps each file's bytes, a leading BOM included (the carried text must match the manifest's SHA-256)", async () => {
  const root = await Deno.makeTempDir({ prefix: "pyproxy-sources-" });
  try {
    await Deno.writeTextFile(`${root}/deno.json`, '{"version": "0.0.0"}');
    for (const pkg of PYTHON_PACKAGES) {
      await Deno.mkdir(`${root}/python/${pkg}`, { recursive: true });
      await Deno.writeTextFile(`${root}/python/${pkg}/__init__.py`, "x = 1\n");
    }
    await Deno.writeTextFile(
      `${root}/python/${PYTHON_PACKAGES[0]}/bom.py`,
      "\uFEFF# -*- coding: utf-8 -*-\nx = 'é'\r\n",
    );
    const manifest = await collectPythonManifest(new URL(`file://${root}/`));
    const sources = await collectPythonSources(
      manifest,
      new URL(`file://${root}/`),
    );
    await assertCarriedMatch(manifest.files, sources);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("PYTHON_SOURCES' texts have the manifest's sizes and SHA-256s (else a binary downloads instead)", async () => {
  await assertCarriedMatch(PYTHON_MANIFEST.files, PYTHON_SOURCES);
});

async function assertCarriedMatch(
  files: readonly { path: string; size: number; sha256: string }[],
  sources: Readonly<Record<string, string>>,
): Promise<void> {
  for (const file of files) {
    const text = sources[file.path];
    assert.ok(text !== undefined, `${file.path} is not carried`);
    const data = new TextEncoder().encode(text);
    assert.equal(data.byteLength, file.size, file.path);
    const sha = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    assert.equal(sha, file.sha256, file.path);
  }
}
