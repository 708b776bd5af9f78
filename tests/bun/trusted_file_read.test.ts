// A token file of another user's swapped in for the read alone, on Bun
// (Runtime.readRegularFile's fstat there): refused, where the path's check
// after the read let it in (security27).
import { expect, test } from "bun:test";
import {
  chmod,
  chown,
  copyFile,
  mkdtemp,
  rename,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bunRuntime, type ResolvedConfig, type Runtime } from "../../mod.ts";
import { readTokenFiles } from "../../src/gateway/_token_files.ts";

test.skipIf(process.platform === "win32")(
  "readTokenFiles on Bun refuses a token file of another user's swapped in for the read alone",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-trusted-read-"));
    try {
      const path = join(dir, "token");
      await writeFile(path, "good-token-0123456789\n", { mode: 0o600 });
      // Another user's (uid 4242) as root; else one every user can write.
      const their = join(dir, "their-token");
      await writeFile(their, "their-token-0123456789\n");
      const root = process.getuid!() === 0;
      if (root) await chown(their, 4242, 4242);
      else await chmod(their, 0o666);
      const base = bunRuntime();
      const runtime: Runtime = {
        ...base,
        readRegularFile: async (p, limit) => {
          if (p !== path) return base.readRegularFile!(p, limit);
          await rename(path, `${path}.aside`);
          await copyFile(their, path);
          if (root) await chown(path, 4242, 4242);
          else await chmod(path, 0o666);
          try {
            return await base.readRegularFile!(p, limit);
          } finally {
            await rename(`${path}.aside`, path);
          }
        },
      };
      const config = { tokenFile: path } as ResolvedConfig;
      let error: unknown;
      try {
        await readTokenFiles(runtime, config);
      } catch (err) {
        error = err;
      }
      expect(String(error)).toMatch(
        root
          ? /tokenFile: cannot use .*: the file read from it belongs to another user \(uid 4242\)/
          : /tokenFile: cannot use .*: every user can write to the file read from it/,
      );
      expect(await readTokenFiles(base, config)).toEqual({
        token: ["good-token-0123456789"],
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);
