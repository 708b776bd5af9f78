// materializePythonPackage under Bun: download through Bun.serve + fetch,
// verify, atomic rename, reuse.
import { expect, test } from "bun:test";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bunRuntime } from "../../src/runtime/bun.ts";
import {
  materializePythonPackage,
  type PythonManifest,
} from "../../src/runtime/python_package.ts";

const PYTHON = new URL("../../python/", import.meta.url);

async function manifestOf(paths: string[]): Promise<PythonManifest> {
  const files = [];
  for (const path of paths) {
    const data = await readFile(new URL(path, PYTHON));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
    files.push({
      path,
      size: data.byteLength,
      sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(
        "",
      ),
    });
  }
  return { version: "0.0.0-test", files };
}

test("materializePythonPackage downloads, verifies and reuses on Bun", async () => {
  const rt = bunRuntime();
  const names = (await readdir(new URL("pyproxy_server/", PYTHON))).filter((
    n,
  ) => n.endsWith(".py"));
  const manifest = await manifestOf(names.map((n) => `pyproxy_server/${n}`));
  let hits = 0;
  const server = await rt.serve(
    { hostname: "127.0.0.1", port: 0 },
    async (req) => {
      hits++;
      const path = new URL(req.url).pathname.replace(/^\/python\//, "");
      if (path.includes("..")) return new Response("no", { status: 403 });
      return new Response(await readFile(new URL(path, PYTHON)));
    },
  );
  const cacheDir = await mkdtemp(join(tmpdir(), "pyproxy-bun-pkg-"));
  try {
    const base = `http://127.0.0.1:${server.port}/python/`;
    const dir = await materializePythonPackage(rt, base, {
      cacheDir,
      manifest,
    });
    expect(dir.startsWith(join(cacheDir, "0.0.0-test-"))).toBe(true);
    expect(hits).toBe(manifest.files.length);
    for (const f of manifest.files) {
      expect(await readFile(join(dir, f.path))).toEqual(
        await readFile(new URL(f.path, PYTHON)),
      );
    }
    expect(await materializePythonPackage(rt, base, { cacheDir, manifest }))
      .toBe(dir);
    expect(hits).toBe(manifest.files.length);
    expect(await materializePythonPackage(rt, PYTHON)).toBe(
      fileURLToPath(PYTHON).replace(/\/$/, ""),
    );
  } finally {
    await server.shutdown();
    await rm(cacheDir, { recursive: true, force: true });
  }
});
