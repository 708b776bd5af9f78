// The gateway over TLS under Bun (Bun.serve's tls), with the two tokens.
import { expect, test } from "bun:test";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { selfSignedCert } from "../_self_signed_cert.ts";
import { loadConfig, serve } from "../../mod.ts";
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

test("serve()'s reload on Bun: the new certificate on new connections, the new token", async () => {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-tls-"));
  try {
    const first = await selfSignedCert(dir, "tls");
    const second = await selfSignedCert(dir, "next");
    await writeFile(join(dir, "echo.py"), ECHO_MODEL);
    const write = (token: string) =>
      writeFile(
        join(dir, "pyproxy.json"),
        JSON.stringify({
          token,
          modelsDir: ".",
          tls: { cert: "tls.crt", key: "tls.key" },
        }),
      );
    await write(TOKEN);
    const load = () =>
      loadConfig({
        path: join(dir, "pyproxy.json"),
        cli: { port: 0, workers: 1 },
      });
    const server = await serve(await load(), { reloadConfig: load });
    try {
      // A new connection each: the certificate is a connection's.
      const call = (token: string, ca: string) =>
        fetch(`${server.url}/v1/models/echo/execute`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}` },
          body: '{"x":1}',
          keepalive: false,
          tls: { ca },
        } as RequestInit).then(async (res) => {
          await res.body?.cancel();
          return res.status;
        }, () => "failed");
      expect(await call(TOKEN, first.pem)).toBe(200);
      await copyFile(second.cert, first.cert);
      await copyFile(second.key, first.key);
      await write(MANAGE);
      const result = await server.reload();
      expect(result.changed[0]).toBe("token (1)");
      expect(result.changed[1]).toMatch(/^tls \(/);
      expect(await call(MANAGE, second.pem)).toBe(200);
      expect(await call(TOKEN, second.pem)).toBe(401);
      expect(await call(MANAGE, first.pem)).toBe("failed");
    } finally {
      await server.shutdown();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('serve() over TLS on Bun offers no HTTP/2 by ALPN: an h2 client falls back to HTTP/1.1 (docs/gateway.md, "HTTP/2")', async () => {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-tls-"));
  try {
    const { cert, key, pem: ca } = await selfSignedCert(dir);
    await withGateway(
      { "echo.py": ECHO_MODEL },
      { tls: { cert, key } },
      async (server) => {
        const { hostname, port } = new URL(server.url);
        // What Bun.serve chose when offered h2 first (Deno's server picks "h2"):
        // false (no ALPN answer) or "http/1.1". Bun's `http2: true` option would
        // make it "h2"; the adapter leaves it off (silent HTTP/2 connections are
        // never closed: docs/gateway.md, "HTTP/2"). Should a later Bun negotiate
        // h2 without it, this fails: then the docs' Bun notes are outdated.
        const chosen = await new Promise<string | false>((resolve, reject) => {
          const socket = connect({
            host: hostname,
            port: Number(port),
            ca,
            servername: "localhost",
            ALPNProtocols: ["h2", "http/1.1"],
          }, () => {
            resolve(socket.alpnProtocol ?? false);
            socket.end();
          });
          socket.on("error", reject);
        });
        expect(chosen === false || chosen === "http/1.1").toBe(true);
      },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
