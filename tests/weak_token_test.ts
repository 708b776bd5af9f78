/**
 * Clearly weak tokens (`aaaaaaaaaaaaaaaa`, `password12345678`) are refused
 * wherever a configuration's tokens are checked, saying how to make one;
 * generated tokens and random ones pass; a token file's poll or a reload
 * that reads a weak one keeps the tokens in force and logs why.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import fc from "fast-check";
import { ConfigError } from "../src/errors.ts";
import { parseConfig, resolveConfig } from "../src/gateway/config.ts";
import { tokenList } from "../src/gateway/config.ts";
import { checkToken } from "../src/gateway/_token_files.ts";
import { createGateway, type GatewayOptions } from "../src/gateway/app.ts";
import type { GatewayPool } from "../src/gateway/gateway_pool.ts";
import {
  tokenStrength,
  WEAK_TOKEN_BITS,
  weakTokenProblem,
} from "../src/gateway/_weak_token.ts";
import { TOKEN_FILE_INTERVAL_FLOOR } from "../src/gateway/_token_file_interval.ts";
import { tempDir, waitFor } from "./_harness.ts";
import { startGateway, withLogs } from "./_gateway_harness.ts";

const STRONG = "4a8e2c7f1b9d3e6a0c5f8b2d7e1a4c9f";
const STRONG_2 = "c3e7a1f9b5d2e8c4a6f0b3d9e7c1a5f2";

const WEAK = [
  "aaaaaaaaaaaaaaaa",
  "password12345678",
  "1212121212121212",
  "abcdefgh12345678",
  "1234567890123456",
  "PASSWORD12345678",
  "zyxwvutsrqponmlk",
  // A pattern repeated, then something else: only one repeated to the end
  // was seen (~200 bits each, chaos51).
  "ab".repeat(19) + "1",
  "xyz".repeat(22) + "1234",
  "abcabcabcabcabcX",
];

Deno.test("weakTokenProblem refuses what a guesser tries first, and says how to make a token", () => {
  for (const token of WEAK) {
    const problem = weakTokenProblem(token);
    assert.ok(problem !== undefined, token);
    assert.match(problem, /openssl rand -base64 32/);
    assert.ok(!problem.includes(token), "the token is never in the message");
  }
  assert.match(weakTokenProblem("aaaaaaaaaaaaaaaa")!, /a character repeated/);
  assert.match(
    weakTokenProblem("password12345678")!,
    /a common password word, a run of consecutive characters/,
  );
});

Deno.test("weakTokenProblem takes random tokens, generated ones and the docs' and tests' examples", () => {
  for (
    const token of [
      STRONG,
      "d6f41502211c66ec", // 16 hex digits: 64 bits
      "test-token-0123456789",
      "a-long-random-secret-token",
      "first-token-0123456789abcdef",
      "tenant-0000-0123456789abcdef",
      "my-gateway-token-0123",
      "Zm9vYmFyYmF6cXV4cXV1eA",
    ]
  ) assert.equal(weakTokenProblem(token), undefined, token);
  // serve's generated token (24 random bytes, base64url): far above.
  for (let i = 0; i < 20; i++) {
    const config = resolveConfig({ cwd: "/", cli: { allowEval: true } });
    const token = tokenList(config.token)[0]!;
    assert.ok(tokenStrength(token).bits > 3 * WEAK_TOKEN_BITS, token);
  }
});

Deno.test("a weak token is refused from pyproxy.json, the environment, a flag and a token list, naming its place", () => {
  assert.throws(
    () => resolveConfig({ cwd: "/", envToken: "aaaaaaaaaaaaaaaa" }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /^token: a weak token .*\(at environment: PYPROXY_TOKEN\)$/.test(
        err.message,
      ),
  );
  assert.throws(
    () => resolveConfig({ cwd: "/", cli: { token: "password12345678" } }),
    ConfigError,
  );
  assert.throws(
    () =>
      resolveConfig({
        cwd: "/",
        file: parseConfig(
          { token: STRONG, manageToken: "1212121212121212" },
          "/srv/pyproxy.json",
        ),
      }),
    (err: unknown) =>
      err instanceof ConfigError && /^manageToken: a weak token/.test(
        err.message,
      ),
  );
  assert.throws(
    () => checkToken("token", [STRONG, "aaaaaaaaaaaaaaaa"], "tokenFile: /x"),
    (err: unknown) =>
      err instanceof ConfigError &&
      /^token: token 2 of 2 is a weak token/.test(err.message),
  );
});

Deno.test("createGateway refuses a weak or short token as serve's configuration does (ConfigError, never the token), and takes a random one", () => {
  const pool = {
    status: () => ({ workers: [], models: [] }),
  } as unknown as GatewayPool;
  const create = (options: GatewayOptions) =>
    createGateway(pool, { ...options, stopSignal: AbortSignal.abort() });
  for (const token of WEAK) {
    assert.throws(
      () => create({ token }),
      (err: unknown) =>
        err instanceof ConfigError && err.code === "CONFIG_INVALID" &&
        /^token: a weak token .*openssl rand -base64 32.*\(at createGateway's options\)$/
          .test(err.message) &&
        !err.message.includes(token),
      token,
    );
  }
  // By its place in a list; the management token too.
  assert.throws(
    () => create({ token: [STRONG, "aaaaaaaaaaaaaaaa"] }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /^token: token 2 of 2 is a weak token/.test(err.message),
  );
  assert.throws(
    () => create({ token: STRONG, manageToken: "password12345678" }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /^manageToken: a weak token/.test(err.message),
  );
  assert.throws(
    () => create({ token: "s3cr3t" }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /^token: expected a token of at least 16 characters/.test(err.message),
  );
  create({ token: [STRONG, STRONG_2] });
  create({ token: STRONG, manageToken: STRONG_2 });
  create({});
});

Deno.test("serve keeps the tokens in force when a token file's poll or a reload reads a weak one, and logs why", async () => {
  await using dir = await tempDir("pyproxy-weak-token-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${STRONG}\n`, { mode: 0o600 });
  const floor = TOKEN_FILE_INTERVAL_FLOOR.ms;
  TOKEN_FILE_INTERVAL_FLOOR.ms = 1;
  try {
    await withLogs(async (records) => {
      const cli = { tokenFile, tokenFileInterval: 5 };
      // A SIGHUP's reload reads the configuration (and the file) again.
      let modelsDir = "";
      await using gw = await startGateway(cli, {}, {
        reloadConfig: () =>
          Promise.resolve(
            resolveConfig({
              cwd: dir.path,
              cli: { ...cli, port: 0, workers: 1, modelsDir },
            }),
          ),
      });
      modelsDir = gw.dir;
      const status = async (token: string) => {
        const res = await gw.fetch("/v1/models", {
          headers: { authorization: `Bearer ${token}` },
        });
        await res.body?.cancel();
        return res.status;
      };
      assert.equal(await status(STRONG), 200);
      await Deno.writeTextFile(tokenFile, `${STRONG_2}\npassword12345678\n`);
      const lines = () => records.map((r) => r.message.join(""));
      await waitFor(() =>
        lines().some((l) => l.startsWith("Token file changed, but cannot"))
      );
      const line = lines().find((l) => l.startsWith("Token file changed"))!;
      assert.match(line, /token 2 of 2 is a weak token/);
      assert.match(line, /openssl rand -base64 32/);
      assert.ok(!line.includes("password12345678"), line);
      // A reload refuses it too, and says why.
      await assert.rejects(gw.reload(), ConfigError);
      assert.ok(
        lines().some((l) =>
          l.startsWith(
            "Reload failed; the settings in force are kept: token: token 2 of 2 is a weak token",
          )
        ),
        lines().join("\n"),
      );
      // The old set, whole: neither of the new tokens.
      assert.equal(await status(STRONG), 200);
      assert.equal(await status(STRONG_2), 401);
      assert.equal(await status("password12345678"), 401);
    }, "info");
  } finally {
    TOKEN_FILE_INTERVAL_FLOOR.ms = floor;
  }
});

Deno.test("weakTokenProblem reads a token file's longest line (256 KiB) in linear time", async () => {
  // Run in a worker, ended past a bound far above the few ms it takes: the
  // search for a repeated pattern at each character was cubic, and such a
  // line blocked the event loop (4096 characters: 37 s; 256 KiB: days)
  // at start and at every poll that read it.
  const url = new URL("../src/gateway/_weak_token.ts", import.meta.url).href;
  const source = `import { tokenStrength } from ${JSON.stringify(url)};
    const n = ${256 * 1024};
    const tokens = ["ab".repeat(n / 2 - 1) + "aX", "0123456789".repeat(n / 10) + "!"];
    postMessage(tokens.map((t) => tokenStrength(t).bits));`;
  const worker = new Worker(
    URL.createObjectURL(new Blob([source], { type: "text/javascript" })),
    { type: "module" },
  );
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const bits = await Promise.race([
      new Promise<number[]>((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(e.error ?? new Error(e.message));
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("tokenStrength did not answer within 60 s")),
          60_000,
        );
      }),
    ]);
    // Estimated, and weak: a pattern repeated, then one more character
    // (each passed, as long as it was, before chaos51).
    for (const b of bits) {
      assert.ok(Number.isFinite(b) && b < WEAK_TOKEN_BITS, String(b));
    }
  } finally {
    clearTimeout(timer);
    worker.terminate();
  }
});

Deno.test("weakTokenProblem takes random tokens of the lengths openssl rand gives", () => {
  // `openssl rand -hex|-base64 N` and base64url: the 16 hex digits of
  // -hex 8 (the shortest a token may be) are the closest, about 1 in a
  // million of them under WEAK_TOKEN_BITS (docs/gateway.md, "Weak tokens").
  const encodings = {
    hex: (b: Uint8Array) => Buffer.from(b).toString("hex"),
    base64: (b: Uint8Array) => Buffer.from(b).toString("base64"),
    base64url: (b: Uint8Array) => Buffer.from(b).toString("base64url"),
  };
  fc.assert(
    fc.property(
      fc.constantFrom(...Object.values(encodings)),
      fc.constantFrom(12, 16, 24, 32, 48, 64),
      fc.uint8Array({ minLength: 64, maxLength: 64 }),
      (encode, size, bytes) => {
        const token = encode(bytes.subarray(0, size));
        return token.length < 16 || weakTokenProblem(token) === undefined;
      },
    ),
    { numRuns: 20_000, seed: 49 },
  );
});
