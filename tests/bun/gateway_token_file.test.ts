// `bun run mod.ts serve --token-file` with a Kubernetes-style secret (the
// file a link to `..data/token`, `..data` swapped by a rename): read at
// start (Runtime.readRegularFile on Bun), the rotation taken by the poll
// without a signal, and no token ever in the log.
import { expect, test } from "bun:test";
import {
  mkdir,
  mkdtemp,
  rename,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ECHO_MODEL } from "./_helpers.ts";
import { startServe } from "./_serve_process.ts";

const T1 = "bun-first-token-0123456789abcdef";
const T2 = "bun-second-token-0123456789abcdef";

async function call(url: string, token: string): Promise<number> {
  const res = await fetch(`${url}/v1/models/echo/execute`, {
    method: "POST",
    body: "{}",
    headers: { authorization: `Bearer ${token}` },
  });
  await res.body?.cancel();
  return res.status;
}

/** Waits until `token` gets `status` (the poll read the file). */
async function until(url: string, token: string, status: number) {
  const deadline = Date.now() + 5000;
  while ((await call(url, token)) !== status) {
    if (Date.now() > deadline) throw new Error(`no ${status} for ${token}`);
    await Bun.sleep(10);
  }
}

test(
  "bun run mod.ts serve --token-file takes a secret's rotation (..data swap) by its poll, never logs a token",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-token-file-"));
    await mkdir(join(dir, "models"));
    await writeFile(join(dir, "models", "echo.py"), ECHO_MODEL);
    const secret = join(dir, "secret");
    await mkdir(secret);
    let version = 0;
    const update = async (text: string) => {
      const data = `..2026_12_06_${version++}`;
      await mkdir(join(secret, data));
      await writeFile(join(secret, data, "token"), text, { mode: 0o600 });
      await symlink(data, join(secret, "..data_tmp"));
      await rename(join(secret, "..data_tmp"), join(secret, "..data"));
    };
    await update(`${T1}\n`);
    await symlink("..data/token", join(secret, "token"));
    const { child, url, stderr } = await startServe([
      "--port",
      "0",
      "--workers",
      "1",
      "--models",
      join(dir, "models"),
      "--token-file",
      join(secret, "token"),
      "--token-file-interval",
      "100",
    ], { env: { PYPROXY_TOKEN: "" } });
    try {
      expect(await call(url, T1)).toBe(200);
      expect(await call(url, T2)).toBe(401);
      await update(`${T1}\n${T2}\n`);
      await until(url, T2, 200);
      await update(`${T2}\n`);
      await until(url, T1, 401);
      expect(await call(url, T2)).toBe(200);
      child.kill("SIGTERM");
      expect(await child.exited).toBe(0);
      const log = await stderr;
      expect(log).toMatch(/Read the token files again: "?token \(2\)/);
      expect([T1, T2].some((t) => log.includes(t))).toBe(false);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
      await rm(dir, { recursive: true, force: true });
    }
  },
  20_000,
);
