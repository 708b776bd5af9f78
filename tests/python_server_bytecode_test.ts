/**
 * A server started from a copy `materializePythonPackage` made (the package
 * as fetched from JSR) writes that copy's bytecode once under
 * `PYTHONDONTWRITEBYTECODE`, and later starts load it instead of compiling
 * the package again (~80 ms of CPU each). A checkout and the models' own
 * files keep Python's setting; a copy whose bytecode cannot be written is
 * served all the same. Real Python servers.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  BYTECODE_MARKER,
  materializePythonPackage,
} from "../src/runtime/python_package.ts";
import { denoRuntime } from "../src/runtime/deno.ts";
import { PythonServer } from "../src/python_server.ts";
import { collectPythonManifest } from "../scripts/gen_python_manifest.ts";

const PYTHON_DIR = fileURLToPath(new URL("../python/", import.meta.url));
const manifest = await collectPythonManifest();

/** A copy of python/ as from JSR: fetched (from the checkout's files) into a cache. */
async function copyFromJsr(cacheDir: string): Promise<string> {
  return await materializePythonPackage(
    denoRuntime(),
    "https://jsr.invalid/@pyproxy/pyproxy/0.1.0/python/",
    {
      cacheDir,
      manifest,
      fetch: async (url) =>
        new Response(
          await Deno.readFile(
            join(PYTHON_DIR, url.pathname.replace(/^.*?\/python\//, "")),
          ),
        ),
    },
  );
}

/** The `.pyc` files under `dir`, path → mtime in ms. */
async function pycs(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const walk = async (d: string): Promise<void> => {
    for await (const e of Deno.readDir(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.name.endsWith(".pyc")) {
        out.set(p, (await Deno.stat(p)).mtime!.getTime());
      }
    }
  };
  await walk(dir).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  return out;
}

/** Starts a server from `pythonPath` with `env`, checks it answers, stops it. */
async function startOnce(
  pythonPath: string,
  path: string,
  env: Record<string, string>,
  model?: string,
): Promise<void> {
  const server = await PythonServer.start({ path, pythonPath, env });
  try {
    await using session = await server.connect();
    assert.equal(await session.ping(), "pong");
    if (model !== undefined) await session.addModel("m", { file: model });
  } finally {
    await server.kill("SIGKILL");
  }
}

/** The interpreter's `.pyc` tag (`cpython-312`). */
async function cacheTag(): Promise<string> {
  const { stdout } = await new Deno.Command("python3", {
    args: ["-c", "import sys; print(sys.implementation.cache_tag)"],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(stdout).trim();
}

Deno.test("PythonServer from a materialized copy under PYTHONDONTWRITEBYTECODE: the package's bytecode is written at the first start and loaded after; the models' own is not", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "pyproxy-bc-" });
  const models = await Deno.makeTempDir({ prefix: "pyproxy-bc-models-" });
  try {
    const dir = await copyFromJsr(cacheDir);
    assert.ok((await Deno.stat(join(dir, BYTECODE_MARKER))).isFile);
    await Deno.writeTextFile(join(models, "helper.py"), "K = 2\n");
    await Deno.writeTextFile(
      join(models, "model.py"),
      "import helper\n\nclass M:\n    def execute(self, msg):\n        return msg * helper.K\n",
    );
    const env = { PYTHONDONTWRITEBYTECODE: "1" };
    await startOnce(dir, models, env, "model.py");
    const tag = await cacheTag();
    const written = await pycs(dir);
    // Every module of both packages, for this interpreter.
    const want = manifest.files.filter((f) => f.path.endsWith(".py")).map((
      f,
    ) => {
      const [pkg, name] = f.path.split("/");
      return join(dir, pkg!, "__pycache__", `${name!.slice(0, -3)}.${tag}.pyc`);
    }).sort();
    assert.deepEqual([...written.keys()].sort(), want);
    // The models' directory keeps the setting: no bytecode there.
    assert.deepEqual([...(await pycs(models)).keys()], []);
    // Loaded, not written again, by the next starts.
    await startOnce(dir, models, env);
    await startOnce(dir, models, env);
    assert.deepEqual(await pycs(dir), written);
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
    await Deno.remove(models, { recursive: true });
  }
});

Deno.test("PythonServer under PYTHONDONTWRITEBYTECODE: a checkout (no marker) gets no bytecode; PYTHONPYCACHEPREFIX is followed; a prefix that cannot be written is no error", async () => {
  const scratch = await Deno.makeTempDir({ prefix: "pyproxy-bc-" });
  try {
    const models = join(scratch, "models");
    await Deno.mkdir(models);
    // A checkout: the same files, no marker.
    const checkout = join(scratch, "checkout");
    for (const f of manifest.files) {
      await Deno.mkdir(join(checkout, f.path, ".."), { recursive: true });
      await Deno.copyFile(join(PYTHON_DIR, f.path), join(checkout, f.path));
    }
    await startOnce(checkout, models, { PYTHONDONTWRITEBYTECODE: "1" });
    assert.deepEqual([...(await pycs(checkout)).keys()], []);
    // A copy with PYTHONPYCACHEPREFIX: the bytecode goes there.
    const dir = await copyFromJsr(join(scratch, "cache"));
    const prefix = join(scratch, "prefix");
    await startOnce(dir, models, {
      PYTHONDONTWRITEBYTECODE: "1",
      PYTHONPYCACHEPREFIX: prefix,
    });
    assert.deepEqual([...(await pycs(dir)).keys()], []);
    assert.equal(
      (await pycs(prefix)).size,
      manifest.files.filter((f) => f.path.endsWith(".py")).length,
    );
    // A prefix under a file: nothing can be written, the server starts.
    const file = join(scratch, "a-file");
    await Deno.writeTextFile(file, "");
    const other = await copyFromJsr(join(scratch, "cache2"));
    await startOnce(other, models, {
      PYTHONDONTWRITEBYTECODE: "1",
      PYTHONPYCACHEPREFIX: join(file, "prefix"),
    });
    assert.deepEqual([...(await pycs(other)).keys()], []);
  } finally {
    await Deno.remove(scratch, { recursive: true });
  }
});
