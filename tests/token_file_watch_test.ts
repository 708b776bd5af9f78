/**
 * TokenFileWatch on its own: what a failing apply logs.
 */
import assert from "node:assert/strict";
import type { Logger } from "@logtape/logtape";
import { resolveConfig } from "../src/gateway/config.ts";
import { TokenFileWatch } from "../src/gateway/_token_files.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import { tempDir } from "./_harness.ts";

const T1 = "first-token-x7Qp2mVz9LkR4wB8";
const T2 = "second-token-Jc3Hn6Ty1Gd5Fs0";

/** A logger that keeps its error lines' messages. */
function errorLog(): { logger: Logger; errors: string[] } {
  const errors: string[] = [];
  const logger = {
    error: (message: string, props?: { message?: string }) =>
      errors.push(`${message} ${props?.message ?? ""}`),
    warn: () => {},
    info: () => {},
    debug: () => {},
  } as unknown as Logger;
  return { logger, errors };
}

Deno.test("TokenFileWatch logs an apply that fails the same way once, not at every second poll", async () => {
  await using dir = await tempDir("pyproxy-token-file-watch-test-");
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`, { mode: 0o600 });
  const config = resolveConfig({
    cwd: dir.path,
    cli: { port: 0, tokenFile: path, tokenFileInterval: 100 },
  });
  await Deno.writeTextFile(path, `${T2}\n`);
  const { logger, errors } = errorLog();
  let applies = 0;
  let failWith = "manageToken cannot be turned off while serving";
  const { promise: sixth, resolve } = Promise.withResolvers<void>();
  const watch = new TokenFileWatch({
    runtime: defaultRuntime(),
    logger,
    interval: 100,
    reading: new Map(),
    warned: new Map(),
    current: () => config,
    apply: () => {
      applies++;
      if (applies === 4) failWith = "another reason";
      if (applies === 6) resolve();
      return Promise.reject(new Error(failWith));
    },
  });
  try {
    await sixth;
  } finally {
    watch.stop();
  }
  const applyErrors = errors.filter((e) => e.startsWith("Cannot apply"));
  // Tried six times; said once per reason.
  assert.deepEqual(applyErrors, [
    "Cannot apply the token files: {message} manageToken cannot be turned off while serving",
    "Cannot apply the token files: {message} another reason",
  ]);
});
