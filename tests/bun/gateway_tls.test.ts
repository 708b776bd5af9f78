// The gateway over TLS under Bun (Bun.serve's tls), with the two tokens.
import { expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { selfSignedCert } from "../_self_signed_cert.ts";
import { ECHO_MODEL, withGateway } from "./_helpers.ts";

const TOKEN = "inference-token-0123456789";
const MANAGE = "management-token-0123456789";

test("serve() over TLS on Bun: https, execute with either token, eval only with the management token", async () => {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-tls-"));
  try {
    const { cert, key, pem: ca } = await selfSignedCert(dir);
    await withGateway({ "echo.py": ECHO_MODEL }, {
      tls: { cert, key },
      token: TOKEN,
      manageToken: MANAGE,
      allowEval: true,
    }, async (server) => {
      expect(server.url).toMatch(/^https:\/\//);
      const call = (path: string, token: string, body: string) =>
        fetch(`${server.url}${path}`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}` },
          body,
          tls: { ca },
        } as RequestInit);
      for (const token of [TOKEN, MANAGE]) {
        const res = await call("/v1/models/echo/execute", token, '{"x":1}');
        expect(res.status).toBe(200);
        expect(await res.json()).toMatchObject({ msg: { x: 1 } });
      }
      const refused = await call("/v1/eval", TOKEN, '{"code":"1"}');
      expect(refused.status).toBe(403);
      await refused.body?.cancel();
      const ran = await call("/v1/eval", MANAGE, '{"code":"1 + 1"}');
      expect(ran.status).toBe(200);
      expect(await ran.text()).toContain('"value":2');
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
