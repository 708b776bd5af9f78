// readPemFile's bounds: a read without an answer (a hung network file
// system) fails instead of holding a reload or a TLS files' poll for good.
import assert from "node:assert/strict";
import {
  CERTIFICATE,
  firstPemBlock,
  MAX_PEM_FILE_BYTES,
  PemFileError,
  PRIVATE_KEY,
  readPemFile,
} from "../src/gateway/_pem_file.ts";
import { readTls } from "../src/gateway/_tls_files.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { getLogger } from "@logtape/logtape";
import { tempDir } from "./_harness.ts";
import { certificateSummary } from "../src/gateway/_config_reload.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

/** `promise`, or a rejection after 5 s (a read that hangs for good). */
async function within<T>(promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("still waiting after 5 s")),
          5000,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The default runtime, whose reads of `path` never answer. */
function hungAt(path: string): Runtime {
  const base = defaultRuntime();
  const never = () => new Promise<never>(() => {});
  return {
    ...base,
    readFile: (p) => p === path ? never() : base.readFile(p),
    ...(base.readRegularFile === undefined ? {} : {
      readRegularFile: (p: string, limit: number) =>
        p === path ? never() : base.readRegularFile!(p, limit),
    }),
  };
}

Deno.test("readPemFile fails a read without an answer after its timeout, with a PemFileError saying so; a file that answers is read", async () => {
  await using dir = await tempDir("pyproxy-pem-file-test-");
  const path = `${dir.path}/cert.pem`;
  await Deno.writeTextFile(path, "-----BEGIN CERTIFICATE-----\n");
  const runtime = hungAt(path);
  await assert.rejects(
    within(readPemFile(runtime, path, 50)),
    (err: unknown) =>
      err instanceof PemFileError &&
      err.message === "had no answer within 50 ms (a hung file system?)",
  );
  assert.equal(
    await readPemFile(defaultRuntime(), path, 50),
    "-----BEGIN CERTIFICATE-----\n",
  );
});

Deno.test("readTls (a start's, a reload's, a TLS files' poll's read) fails as a ConfigError naming the option when its certificate's file system hangs", async () => {
  await using dir = await tempDir("pyproxy-pem-file-test-");
  const cert = `${dir.path}/cert.pem`;
  await Deno.writeTextFile(cert, "x");
  await assert.rejects(
    within(readTls(
      hungAt(cert),
      { cert, key: `${dir.path}/key.pem` },
      undefined,
      getLogger(["pyproxy", "test"]),
    )),
    /^ConfigError: tls\.cert: cannot read .*cert\.pem: had no answer within 2000 ms/,
  );
});

Deno.test({
  name:
    "certificateSummary (a reload's and a TLS files' poll's log) names the certificate of a file with the key first",
  ignore: !HAS_OPENSSL,
}, async () => {
  // HAProxy's form is served; the log said only "tls (certificate)" for it
  // on Deno, whose node:crypto parses a text's first block alone.
  await using dir = await tempDir("pyproxy-pem-file-test-");
  const tls = await selfSignedCert(dir.path);
  const key = await Deno.readTextFile(tls.key);
  for (
    const cert of [
      tls.pem,
      key + tls.pem,
      `\uFEFFleading text\r\n${key}${tls.pem}`,
    ]
  ) {
    assert.match(
      certificateSummary({ cert }),
      /^CN=localhost, valid until \w{3} +\d+ [\d:]+ \d{4} GMT$/,
    );
  }
});

Deno.test("firstPemBlock reads a file of the largest size in one pass, whatever its markers (unclosed blocks, ENDs of other labels)", async () => {
  // The lazy regex looked for each BEGIN's END up to the file's end: 4 MiB
  // of unclosed BEGIN lines took minutes (368 KB: 2.9 s), holding the event
  // loop at a start, a reload or each TLS files' poll. In a worker, ended
  // after a bound far above one pass (milliseconds).
  const worker = new Worker(
    URL.createObjectURL(
      new Blob([
        `import { CERTIFICATE, firstPemBlock } from "${
          new URL("../src/gateway/_pem_file.ts", import.meta.url).href
        }";
        const line = "-----BEGIN X-----\\nQUJD\\n-----END Y-----\\n-----BEGIN CERTIFICATE-----\\n";
        const text = line.repeat(Math.floor(${MAX_PEM_FILE_BYTES} / line.length));
        postMessage(firstPemBlock(text, CERTIFICATE) ?? "none");`,
      ], { type: "text/javascript" }),
    ),
    { type: "module" },
  );
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const answer = await Promise.race([
      new Promise((resolve) => worker.onmessage = (e) => resolve(e.data)),
      new Promise((resolve) => {
        timer = setTimeout(() => resolve("still scanning after 30 s"), 30_000);
      }),
    ]);
    assert.equal(answer, "none");
  } finally {
    clearTimeout(timer);
    worker.terminate();
  }
  // Blocks found past others: unclosed, closed by another label's END.
  const cert = "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----";
  for (
    const text of [
      cert,
      `-----BEGIN X-----\n${cert}`,
      `-----BEGIN \n${cert}`,
      `-----BEGIN X-----\nQUJD\n-----END Y-----\n${cert}\n`,
      `\uFEFFtext\r\n-----BEGIN PRIVATE KEY-----\r\nQUJD\r\n-----END PRIVATE KEY-----\r\n${cert}`,
    ]
  ) assert.equal(firstPemBlock(text, CERTIFICATE), cert, JSON.stringify(text));
  assert.equal(
    firstPemBlock(
      `${cert}\n-----BEGIN EC PRIVATE KEY-----\nQQ==\n-----END EC PRIVATE KEY-----`,
      PRIVATE_KEY,
    ),
    "-----BEGIN EC PRIVATE KEY-----\nQQ==\n-----END EC PRIVATE KEY-----",
  );
  assert.equal(
    firstPemBlock("-----BEGIN CERTIFICATE-----\nQUJD\n", CERTIFICATE),
    undefined,
  );
});
