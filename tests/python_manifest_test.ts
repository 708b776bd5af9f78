import assert from "node:assert/strict";
import { PYTHON_MANIFEST } from "../src/runtime/python_manifest.ts";
import {
  collectPythonManifest,
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
