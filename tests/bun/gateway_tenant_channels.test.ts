// `bun run mod.ts serve` with tenants' tokens: one tenant's channels keep to
// their share of the hub (chaos52). A tenant's 1000 publishes to names of its
// own made the hub forget another tenant's channel and its history; past its
// 100 channels followed, a WebSocket subscription was upgraded, then refused:
// on Bun the socket opened with nothing behind it and never closed.
import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ECHO_MODEL } from "./_helpers.ts";
import { startServe } from "./_serve_process.ts";

const OPERATOR = "9f1c6ad2e07b4b3c8e5d1a6f2b7c9e04";
const TENANT_A = "4a8e2c7f1b9d3e6a0c5f8b2d7e1a4c9f";
const TENANT_B = "c3e7a1f9b5d2e8c4a6f0b3d9e7c1a5f2";
const idOf = (token: string) =>
  createHash("sha256").update(token).digest("hex").slice(0, 16);
const A = idOf(TENANT_A);
const B = idOf(TENANT_B);

test(
  "bun run mod.ts serve keeps a tenant to its share of the channel hub: another's history stays, and a WebSocket past its share is refused before its handshake",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-tenant-channels-"));
    await mkdir(join(dir, "models"));
    await writeFile(join(dir, "models", "echo.py"), ECHO_MODEL);
    const tokens = join(dir, "tokens");
    await writeFile(
      tokens,
      `${OPERATOR}\n${TENANT_A} tenant\n${TENANT_B} tenant\n`,
      { mode: 0o600 },
    );
    const { child, url } = await startServe([
      "--port",
      "0",
      "--workers",
      "1",
      "--models",
      join(dir, "models"),
      "--token-file",
      tokens,
    ], { env: { PYPROXY_TOKEN: "" } });
    const held: Response[] = [];
    try {
      const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
      const post = async (channel: string, token: string) => {
        const res = await fetch(`${url}/v1/channels/${channel}`, {
          method: "POST",
          body: '{"n":1}',
          headers: bearer(token),
        });
        await res.body?.cancel();
        return res.status;
      };
      expect(await post(`${B}.orders`, TENANT_B)).toBe(200);
      for (let i = 0; i < 1000; i++) {
        expect(await post(`${A}x${i}`, TENANT_A)).toBe(200);
      }
      const list = await fetch(`${url}/v1/channels`, {
        headers: bearer(OPERATOR),
      });
      const channels = (await list.json()).channels as Array<
        { name: string; history: unknown[] }
      >;
      const orders = channels.find((c) => c.name === `${B}.orders`);
      expect(orders?.history.length).toBe(1);
      expect(channels.filter((c) => c.name.startsWith(A)).length).toBe(100);
      for (let i = 0; i < 100; i++) {
        const res = await fetch(`${url}/v1/channels/${A}s${i}`, {
          headers: bearer(TENANT_A),
        });
        expect(res.status).toBe(200);
        held.push(res);
      }
      const ws = new WebSocket(
        `${url.replace("http", "ws")}/v1/channels/${A}w`,
        ["pyproxy.v1", `pyproxy.bearer.${TENANT_A}`],
      );
      const opened = await new Promise<boolean>((resolve) => {
        ws.onopen = () => resolve(true);
        ws.onerror = () => resolve(false);
      });
      if (opened) ws.close();
      expect(opened).toBe(false);
    } finally {
      for (const res of held) await res.body?.cancel();
      child.kill("SIGTERM");
      await child.exited;
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);
