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
