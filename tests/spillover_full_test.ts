/**
 * Spill-over on a full file system (a container's 64 MiB /dev/shm): a
 * message whose spill file is refused goes inline when it fits the frame
 * limit, on the host and on the server, and is logged and counted.
 *
 * The file system is real: a 1 MiB tmpfs mounted for the test (root only,
 * Linux: the tests are ignored elsewhere; the server side's refusal is also
 * covered without root in python/tests/test_spill_refusals.py, through
 * RLIMIT_FSIZE).
 *
 * @module
 */
import assert from "node:assert/strict";
import { SpillError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import { Pool } from "../src/pool.ts";
import { spillover } from "../plugins/spillover.ts";

const canMount = Deno.build.os === "linux" && Deno.uid() === 0;
const MODELS = new URL("../python/tests/models/", import.meta.url).pathname;

/** A 1 MiB tmpfs at a fresh directory, unmounted and removed at dispose. */
async function tinyTmpfs(): Promise<AsyncDisposable & { dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-spillfull-" });
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", dir],
    stderr: "piped",
  }).output();
  assert.ok(
    mount.success,
    `mount tmpfs: ${new TextDecoder().decode(mount.stderr)}`,
  );
  return {
    dir,
    async [Symbol.asyncDispose]() {
      await new Deno.Command("umount", { args: [dir] }).output();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A logger keeping its warnings (and the Python servers' log lines). */
function warnings(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (message: string, props?: Record<string, unknown>) => {
    lines.push(
      message.replace(/\{(\w+)\}/g, (_, k) => String(props?.[k] ?? `{${k}}`)),
    );
  };
  const none = () => {};
  return {
    lines,
    trace: none,
    debug: none,
    info: keep,
    warn: keep,
    error: keep,
    fatal: keep,
  };
}

async function startPool(
  dir: string,
  logger: Logger,
  maxFrameSize?: number,
  logDir?: string,
): Promise<Pool & { spill: ReturnType<typeof spillover> }> {
  const spill = spillover({ threshold: 64 * 1024, dir });
  const pool = await Pool.start({
    workers: 1,
    modelsDir: MODELS,
    handleSignals: false,
    logger,
    ...(logDir === undefined ? {} : { logDir }),
    ...(maxFrameSize === undefined ? {} : { maxFrameSize }),
    plugins: { defaults: false, use: [spill] },
  });
  try {
    await pool.addModel("spill_echo", { file: "spill_echo.py" });
  } catch (err) {
    await pool.close();
    throw err;
  }
  return Object.assign(pool, { spill });
}

Deno.test({
  name:
    "spillover on a full file system sends a request that fits a frame inline, logs it once a minute and counts it",
  ignore: !canMount,
  async fn() {
    await using fs = await tinyTmpfs();
    const logger = warnings();
    const pool = await startPool(fs.dir, logger);
    try {
      const data = "z".repeat(3 * 1024 * 1024); // 3 MB: over the threshold, over the tmpfs
      for (let i = 0; i < 3; i++) {
        const result = await pool.execute("spill_echo", {
          op: "len",
          data,
        }) as {
          len: number;
        };
        assert.equal(result.len, data.length);
      }
      const { stats } = pool.spill;
      assert.equal(stats.spilledOut, 0);
      assert.equal(stats.writeFailures, 3);
      assert.equal(stats.inlineFallbacks, 3);
      assert.equal(pool.spill.pendingBytes, 0);
      const refused = logger.lines.filter((l) =>
        l.startsWith("Spill-over: cannot write a spill file")
      );
      assert.equal(refused.length, 1, logger.lines.join("\n"));
      assert.match(refused[0]!, /No space left on device/);
      assert.match(refused[0]!, /went inline instead/);
      // No partial file stays behind in the full directory.
      const left: string[] = [];
      for await (const e of Deno.readDir(`${pool.spill.dir}`)) {
        for await (const f of Deno.readDir(`${pool.spill.dir}/${e.name}`)) {
          left.push(f.name);
        }
      }
      assert.deepEqual(left, []);
      const samples = pool.spill.metrics();
      const value = (name: string) =>
        samples.find((s) => s.name === name)?.value;
      assert.equal(value("pyproxy_spillover_write_failures_total"), 3);
      assert.equal(value("pyproxy_spillover_inline_fallbacks_total"), 3);
    } finally {
      await pool.close();
    }
  },
});

Deno.test({
  name:
    "spillover on a full file system fails a request above the frame limit with a SpillError naming the directory and its free space",
  ignore: !canMount,
  async fn() {
    await using fs = await tinyTmpfs();
    const logger = warnings();
    const pool = await startPool(fs.dir, logger, 2 * 1024 * 1024);
    try {
      const data = "z".repeat(3 * 1024 * 1024);
      await assert.rejects(
        pool.execute("spill_echo", { op: "len", data }),
        (err: unknown) => {
          assert.ok(err instanceof SpillError, String(err));
          assert.match(
            err.message,
            /^Cannot send executeModel: its spill file in \/.*pyproxy-spillfull-.* was refused \(No space left on device \(os error 28\); \d+ bytes free there\) and it is larger than the server's frame limit of 2097152 bytes, so it cannot go inline$/,
          );
          return true;
        },
      );
      assert.equal(pool.spill.stats.writeFailures, 1);
      assert.equal(pool.spill.stats.inlineFallbacks, 0);
      assert.ok(logger.lines.some((l) => l.includes("too large to go inline")));
    } finally {
      await pool.close();
    }
  },
});

Deno.test({
  name:
    "spillover on a full file system: the server sends a large reply inline and logs it",
  ignore: !canMount,
  async fn() {
    await using fs = await tinyTmpfs();
    const logDir = await Deno.makeTempDir({ prefix: "pyproxy-spillfull-log-" });
    const pool = await startPool(fs.dir, warnings(), undefined, logDir);
    try {
      for (let i = 0; i < 2; i++) {
        const result = await pool.execute("spill_echo", {
          op: "make",
          n: 3 * 1024 * 1024,
        }) as { data: string };
        assert.equal(result.data.length, 3 * 1024 * 1024);
      }
      assert.equal(pool.spill.stats.spilledIn, 0);
      // The server log (a file per worker in logDir): one line for both.
      let log = "";
      for await (const e of Deno.readDir(logDir)) {
        log += await Deno.readTextFile(`${logDir}/${e.name}`);
      }
      const refused = log.split("\n").filter((l) =>
        l.includes("spill-over: cannot write a spill file")
      );
      assert.equal(refused.length, 1, log);
      assert.match(
        refused[0]!,
        /WARNING .* pyproxy_server\.spill: spill-over: cannot write a spill file in \/.* \(No space left on device\): the message \(\d+ bytes\) went inline instead$/,
      );
    } finally {
      await pool.close();
      await Deno.remove(logDir, { recursive: true });
    }
  },
});
