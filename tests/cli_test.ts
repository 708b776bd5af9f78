import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import denoJson from "../deno.json" with { type: "json" };
import { tempDir, waitFor } from "./_harness.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";
import { type ServeCli, startServeCli } from "./_serve_cli.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD, ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/**
 * {@linkcode cli} for each of `runs` (arguments, environment), 4 at a time:
 * each is a Deno start of ~0.3 s that mostly waits, one after the other they
 * took seconds. The results in the order of `runs`.
 */
async function cliEach(
  runs: Array<[string[], Record<string, string>?]>,
): Promise<Array<{ code: number; stdout: string; stderr: string }>> {
  const results: Array<{ code: number; stdout: string; stderr: string }> = [];
  let next = 0;
  const worker = async () => {
    while (next < runs.length) {
      const i = next++;
      const [args, env] = runs[i]!;
      results[i] = await cli(args, env);
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return results;
}

/**
 * `mod.ts serve ...` as a child process, once it has printed its banner
 * (through the dashboard line, or `until`); disposing kills it if it still
 * runs. With `bound`, a start that takes longer is killed (the banner then
 * ends early).
 */
function startServe(
  args: string[],
  env: Record<string, string> = {},
  until?: RegExp,
  bound?: number,
  cwd: string = ROOT,
): Promise<ServeCli> {
  return startServeCli(args, {
    env,
    cwd,
    ...(until === undefined ? {} : { until }),
    ...(bound === undefined ? {} : { bound }),
  });
}

Deno.test("main prints the version from deno.json", async () => {
  const { code, stdout } = await cli(["--version"]);
  assert.equal(code, 0);
  assert.equal(stdout.trim(), `pyproxy ${denoJson.version}`);
});

Deno.test("main serve --help lists every option", async () => {
  const { code, stdout } = await cli(["serve", "--help"]);
  assert.equal(code, 0);
  for (
    const flag of [
      "--port",
      "--host",
      "--workers",
      "--models",
      "--config",
      "--token",
      "--allow-eval",
      "--allow-manage",
      "--autoscale",
      "--no-cancel-on-disconnect",
      "--no-sched-batch",
      "--oom-score-adj",
      "--compress",
      "--compress-min-bytes",
      "--no-compress",
      "--trace-endpoint",
      "--log-level",
      "--debug",
      "--version",
      "--allowed-host",
      "--forward-header",
      "--cors-origin",
      "--stream-idle-timeout",
      "--stream-keep-alive",
      "--stream-first-item-timeout",
      "--keep-alive-timeout",
      "--eval-replay-budget",
      "--env",
      "--manage-token",
      "--tls-cert",
      "--tls-key",
      "--plugin",
    ]
  ) assert.ok(stdout.includes(flag), flag);
});

Deno.test("main serve --help lists every route the gateway registers", async () => {
  const { code, stdout } = await cli(["serve", "--help"]);
  assert.equal(code, 0);
  // The routes as registered: app.get("/v1/models/:name", ...) in src/gateway/.
  const routes: string[] = [];
  const dir = new URL("../src/gateway/", import.meta.url);
  for await (const e of Deno.readDir(dir)) {
    if (!e.name.endsWith(".ts")) continue;
    const text = await Deno.readTextFile(new URL(e.name, dir));
    for (
      const [, method, path] of text.matchAll(
        /\bapp\.(get|post|put|delete|patch|all)\(\s*"([^"]+)"/g,
      )
    ) {
      routes.push(
        `${method!.toUpperCase()} ${path!.replace(/:(\w+)/g, "{$1}")}`,
      );
    }
  }
  assert.ok(routes.length >= 14, routes.join(", "));
  // TensorFlow Serving's :predict: answered by the app's 404 handler, not a
  // route (_predict_routes.ts).
  routes.push(
    "POST /v1/models/{name}:predict",
    "POST /v1/models/{name}/versions/{version}:predict",
    // Every model's statistics: GET /v2/models/{name}'s handler answers it.
    "GET /v2/models/stats",
  );
  const listed = new Set(
    [...stdout.matchAll(/^ {2}([A-Z]+) +(\/\S*)/gm)].map(([, m, p]) =>
      `${m} ${p}`
    ),
  );
  for (const route of routes) assert.ok(listed.has(route), route);
  assert.equal(listed.size, new Set(routes).size, [...listed].join(", "));
});

Deno.test("main rejects bad flags and commands with a clear error", async () => {
  // The exit code, and what stderr matches (a string: is).
  const cases: Array<[string[], number, RegExp | string]> = [
    [
      ["serve", "--workers", "0"],
      1,
      /error: workers: expected an integer from 1 to 1024 \(at command line: --workers\)/,
    ],
    [
      ["serve", "--host", "0.0.0.0", "--port", "0"],
      1,
      /Cannot serve on 0\.0\.0\.0: binding a non-loopback address requires a token/,
    ],
    // Accepted (the error is the next one's), not an unknown option.
    [
      ["serve", "--no-cancel-on-disconnect", "--workers", "0"],
      1,
      /error: workers: expected an integer/,
    ],
    [
      ["serve", "--no-sched-batch", "--workers", "0"],
      1,
      /error: workers: expected an integer/,
    ],
    [
      ["serve", "--oom-score-adj", "1001"],
      1,
      /error: .*oomScoreAdj.*1000/,
    ],
    [
      ["serve", "--compress", "--workers", "0"],
      1,
      /error: workers: expected an integer/,
    ],
    [
      ["serve", "--compress-min-bytes", "0"],
      1,
      /error: compress\.minBytes: expected an integer >= 1 \(at command line: --compress-min-bytes\)/,
    ],
    // A tenant's share of the channels: flags checked as the config's.
    [
      ["serve", "--tenant-max-channels", "0"],
      1,
      /error: channels\.tenantMaxChannels: expected an integer >= 1 \(at command line: --tenant-max-channels\)/,
    ],
    [
      ["serve", "--tenant-max-subscribers", "x"],
      1,
      /error: channels\.tenantMaxSubscribers: .*\(at command line: --tenant-max-subscribers\)/,
    ],
    [
      ["serve", "--tenant-max-history-bytes", "0", "--workers", "0"],
      1,
      /error: workers: expected an integer/,
    ],
    [
      ["serve", "--trace-endpoint", "localhost:4318"],
      1,
      /error: tracing\.endpoint: expected an http\(s\) URL .*\(at command line: --trace-endpoint\)/,
    ],
    [
      ["serve", "--stream-idle-timeout", "0"],
      1,
      /error: limits\.streamIdleTimeout: expected an integer >= 1 \(at command line: --stream-idle-timeout\)/,
    ],
    [
      ["serve", "--stream-first-item-timeout", "0"],
      1,
      /error: limits\.streamFirstItemTimeout: expected an integer >= 1 \(at command line: --stream-first-item-timeout\)/,
    ],
    [
      // A comment every few ms would be the stream's traffic.
      ["serve", "--stream-keep-alive", "50"],
      1,
      /error: limits\.streamKeepAlive: expected an integer from 100 to 2147483647 \(at command line: --stream-keep-alive\)/,
    ],
    [
      ["serve", "--keep-alive-timeout", "300000"],
      1,
      /error: limits\.keepAliveTimeout: expected an integer from 1000 to 255000 \(at command line: --keep-alive-timeout\)/,
    ],
    [
      ["serve", "--grpc-port", "0", "--grpc-stream-window", "0"],
      1,
      /error: grpc\.streamWindow: expected an integer from 1 to 1024 \(at command line: --grpc-stream-window\)/,
    ],
    [
      ["serve", "--grpc-port", "0", "--grpc-max-unread", "1000"],
      1,
      /error: grpc\.maxUnreadBytes: expected an integer >= 65536 \(at command line: --grpc-max-unread\)/,
    ],
    [
      ["serve", "--grpc-port", "0", "--grpc-max-connections", "-1"],
      1,
      /error: grpc\.maxConnections: expected an integer from 0 to 2147483647 \(at command line: --grpc-max-connections\)/,
    ],
    [
      ["serve", "--token-file-interval", "-1"],
      1,
      /error: tokenFileInterval: expected an integer from 0 to 2147483647 \(at command line: --token-file-interval\)/,
    ],
    [
      [
        "serve",
        "--token",
        "0123456789abcdef",
        "--token-file",
        "/run/secrets/token",
      ],
      1,
      /error: tokenFile: --token and --token-file are both set; set one/,
    ],
    [
      ["serve", "--token-file", "/nonexistent/token"],
      1,
      /error: tokenFile: cannot read \/nonexistent\/token: no such file/,
    ],
    [
      ["serve", "--tls-cert", "cert.pem"],
      1,
      /error: --tls-cert: needs --tls-key too/,
    ],
    [
      ["serve", "--tls-key", "key.pem"],
      1,
      /error: --tls-key: needs --tls-cert too/,
    ],
    [
      [
        "serve",
        "--port",
        "0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
      ],
      1,
      /error: tls\.cert: cannot read \/nonexistent\/cert\.pem/,
    ],
    [
      ["serve", "--manage-token", "short"],
      1,
      /error: manageToken: expected a token of at least 16 characters \(at command line: --manage-token\)/,
    ],
    [
      ["serve", "--nope"],
      2,
      "error: unknown option --nope (run with --help for usage)\n",
    ],
    // An unknown command: "main reports every failure in one error line".
    [
      ["serve", "--config", "/nonexistent/pyproxy.json"],
      1,
      /Cannot read config file \/nonexistent\/pyproxy\.json/,
    ],
  ];
  const results = await cliEach(cases.map(([args]) => [args]));
  for (const [i, [, code, stderr]] of cases.entries()) {
    const r = results[i]!;
    assert.equal(r.code, code);
    if (typeof stderr === "string") assert.equal(r.stderr, stderr);
    else assert.match(r.stderr, stderr);
  }
});

Deno.test("main serve with no other flag serves the example models and stops on SIGINT", async () => {
  await using serve = await startServe(["--port", "0"]);
  const { child, banner: text } = serve;
  const m =
    /^pyproxy \S+ listening on (http:\/\/127\.0\.0\.1:\d+) \(2 workers, models: ([^)]*)\)$/m
      .exec(text);
  assert.ok(m, `unexpected output: ${JSON.stringify(text)}`);
  const url = m[1]!;
  assert.ok(
    m[2]!.split(", ").includes("echo") &&
      m[2]!.split(", ").includes("scorer"),
    m[2],
  );
  assert.match(
    text,
    /curl -s -X POST http:\/\/127\.0\.0\.1:\d+\/v1\/models\/echo\/execute -d '\{"hello":"world"\}'/,
  );
  const res = await fetch(`${url}/v1/models/echo/execute`, {
    method: "POST",
    body: '{"hello":"world"}',
  });
  assert.deepEqual(await res.json(), { hello: "world" });
  child.kill("SIGINT");
  assert.equal((await child.status).code, 0);
});

Deno.test("main serve's try: line works for a model that declares inputs", async () => {
  // No echo model: the line names the first model, doubler, whose declared
  // inputs ({x: "number"}) refused {"hello":"world"} with a 400.
  await using models = await tempDir();
  await Deno.copyFile(
    `${ROOT}/examples/models/doubler.py`,
    `${models.path}/doubler.py`,
  );
  await using serve = await startServe(
    ["--port", "0", "--workers", "1", "--models", models.path],
  );
  const m = /try: +curl -s -X POST (\S+) -d '([^']*)'\n/.exec(serve.banner);
  assert.ok(m, serve.banner);
  assert.match(m[1]!, /\/v1\/models\/doubler\/execute$/);
  const res = await fetch(m[1]!, { method: "POST", body: m[2]! });
  assert.equal(res.status, 200, await res.clone().text());
  assert.deepEqual(await res.json(), { y: 2 });
});

Deno.test({
  name:
    "main serve's try: line over TLS with a self-signed certificate trusts it (--cacert), and works as printed",
  ignore: !HAS_OPENSSL || (() => {
    try {
      return !new Deno.Command("curl", { args: ["--version"] }).outputSync()
        .success;
    } catch {
      return true;
    }
  })(),
}, async () => {
  // Printed without it, curl refused the gateway's own certificate.
  await using dir = await tempDir();
  // A path the line must quote.
  const { cert, key } = await selfSignedCert(dir.path, "key", "my cert.pem");
  await using serve = await startServe([
    "--port",
    "0",
    "--workers",
    "1",
    "--tls-cert",
    cert,
    "--tls-key",
    key,
  ]);
  const line = /try: +(curl .*)\n/.exec(serve.banner)?.[1];
  assert.ok(line, serve.banner);
  assert.ok(line.includes(` --cacert '${cert}' `), line);
  const out = await new Deno.Command("sh", {
    args: ["-c", line],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  // The answer in the failure's message (once, under load, it was not this).
  const answer = new TextDecoder().decode(out.stdout);
  assert.deepEqual(JSON.parse(answer), { hello: "world" }, answer);
});

Deno.test({
  name:
    "main serve's try: line trusts a self-signed certificate in one file after its key (--cacert)",
  ignore: !HAS_OPENSSL,
}, async () => {
  // HAProxy's form is served; the line left --cacert out for it on Deno
  // (its node:crypto parsed the key's block as the certificate).
  await using dir = await tempDir();
  const { key, pem } = await selfSignedCert(dir.path);
  const both = `${dir.path}/both.pem`;
  await Deno.writeTextFile(both, (await Deno.readTextFile(key)) + pem, {
    mode: 0o600,
  });
  await using serve = await startServe([
    "--port",
    "0",
    "--workers",
    "1",
    "--tls-cert",
    both,
    "--tls-key",
    both,
  ]);
  const line = /try: +(curl .*)\n/.exec(serve.banner)?.[1];
  assert.ok(line?.includes(` --cacert ${both} `), serve.banner);
});

Deno.test("main serve's banner names a model with versions once, with its labels and default", async () => {
  // Each version was listed as the name: "models: classifier, classifier".
  await using models = await tempDir();
  await Deno.copyFile(
    `${ROOT}/examples/models/doubler.py`,
    `${models.path}/doubler.py`,
  );
  await Deno.writeTextFile(
    `${models.path}/pyproxy.json`,
    JSON.stringify({
      modelsDir: ".",
      models: [
        { name: "clf", file: "doubler.py", version: "1" },
        { name: "clf", file: "doubler.py", version: "2" },
        { name: "plain", file: "doubler.py" },
      ],
    }),
  );
  await using serve = await startServe([
    "--port",
    "0",
    "--workers",
    "1",
    "--config",
    `${models.path}/pyproxy.json`,
  ]);
  assert.match(
    serve.banner,
    /, models: clf \(versions 1, 2; default 1\), plain\)\n/,
  );
});

Deno.test("main serve's try: line prefers a model that declares inputs to one that does not", async () => {
  // "a" sorts first and declares nothing: {"hello":"world"} failed there
  // with a KeyError (422), while "scorer" says what it needs.
  await using models = await tempDir();
  await Deno.writeTextFile(
    `${models.path}/a.py`,
    "class A:\n    def execute(self, msg):\n        return msg['x']\n",
  );
  await Deno.copyFile(
    `${ROOT}/examples/models/doubler.py`,
    `${models.path}/scorer.py`,
  );
  await using serve = await startServe(
    ["--port", "0", "--workers", "1", "--models", models.path],
  );
  const m = /try: +curl -s -X POST (\S+) -d '([^']*)'\n/.exec(serve.banner);
  assert.ok(m, serve.banner);
  assert.match(m[1]!, /\/v1\/models\/scorer\/execute$/);
  const res = await fetch(m[1]!, { method: "POST", body: m[2]! });
  assert.equal(res.status, 200, await res.clone().text());
  await res.body?.cancel();
});

/** Processes whose command line contains `text` (Linux; 0 elsewhere). */
async function processesWith(text: string): Promise<number> {
  let n = 0;
  try {
    for await (const e of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      const cmdline = await Deno.readTextFile(`/proc/${e.name}/cmdline`)
        .catch(() => "");
      if (cmdline.includes(text)) n++;
    }
  } catch {
    return 0;
  }
  return n;
}

/** A models directory with `echo.py` and `hang.py`, whose import hangs. */
async function hangingModels(): Promise<{ path: string } & AsyncDisposable> {
  const models = await tempDir();
  await Deno.copyFile(
    `${ROOT}/examples/models/echo.py`,
    `${models.path}/echo.py`,
  );
  await Deno.writeTextFile(
    `${models.path}/hang.py`,
    "import time\ntime.sleep(120)\n\n\nclass Hang:\n    def execute(self, msg):\n        return msg\n",
  );
  return models;
}

Deno.test("main serve skips a model whose import hangs after --load-timeout", async () => {
  await using models = await hangingModels();
  // Without the bound the start would wait for the import (120 s): the
  // test's own bound makes it fail instead.
  await using serve = await startServe(
    [
      "--port=0",
      "--workers=1",
      `--models=${models.path}`,
      "--load-timeout=2000",
    ],
    {},
    /skipped model .*\n/,
    30_000,
  );
  assert.match(serve.banner, /listening on .*models: echo\)/);
  assert.match(
    serve.banner,
    /skipped model hang: .*timed out after 2000 ms \(limits\.loadTimeout, --load-timeout\)/,
  );
});

Deno.test({
  name:
    "main serve whose stderr cannot be written (a full disk) serves and stops with status 0",
  // /dev/full fails every write with ENOSPC, as a full disk does.
  ignore: !existsSync("/dev/full"),
}, async () => {
  await using models = await tempDir();
  // A warning while starting: held, and written once the start succeeded.
  await Deno.writeTextFile(
    `${models.path}/noisy.py`,
    "import sys\n\nclass Noisy:\n    def __init__(self, options):\n" +
      "        print('loading', file=sys.stderr)\n\n" +
      "    def execute(self, msg):\n        return msg\n",
  );
  const child = new Deno.Command("/bin/sh", {
    args: [
      "-c",
      'exec "$0" run -A "$1" serve --port=0 --workers=1 --models="$2" 2>/dev/full',
      Deno.execPath(),
      MOD,
      models.path,
    ],
    cwd: ROOT,
    stdout: "piped",
  }).spawn();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let banner = "";
    while (!/dashboard: .*\n/.test(banner)) {
      const { value, done } = await stdout.read();
      if (done) break;
      banner += value;
    }
    const url = /listening on (\S+)/.exec(banner)?.[1];
    assert.ok(url, `no banner: ${JSON.stringify(banner)}`);
    const res = await fetch(`${url}/v1/models/noisy/execute`, {
      method: "POST",
      body: '{"a":1}',
    });
    assert.deepEqual(await res.json(), { a: 1 });
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
    await stdout.cancel();
  }
});

/**
 * A model that writes to stderr and logs a traceback while it loads: a
 * record held while starting, and one that spans lines.
 */
const NOISY = "import logging, sys\n\nclass Noisy:\n" +
  "    def __init__(self, options):\n" +
  "        print('loading', file=sys.stderr)\n" +
  "        try:\n            1 / 0\n        except Exception:\n" +
  "            logging.getLogger('noisy').exception('init failed')\n\n" +
  "    def execute(self, msg):\n        return msg\n";

Deno.test("main serve --log-format json writes one JSON object a line, a traceback's newlines inside it", async () => {
  await using models = await tempDir();
  await Deno.writeTextFile(`${models.path}/noisy.py`, NOISY);
  await using serve = await startServe([
    "--port=0",
    "--workers=1",
    `--models=${models.path}`,
    "--log-format=json",
  ]);
  serve.child.kill("SIGTERM");
  assert.equal((await serve.child.status).code, 0);
  const lines = (await serve.stderr).split("\n").filter((l) => l !== "");
  const records = lines.map((line) => {
    try {
      return JSON.parse(line) as {
        "@timestamp": string;
        level: string;
        message: string;
        logger: string;
        properties: Record<string, unknown>;
      };
    } catch {
      throw new Error(`not a JSON line: ${JSON.stringify(line)}`);
    }
  });
  for (const r of records) {
    assert.match(r["@timestamp"], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  }
  const traceback = records.find((r) => r.message.includes("init failed"));
  assert.equal(traceback?.logger, "pyproxy.python.noisy");
  assert.equal(traceback?.level, "ERROR");
  assert.equal(traceback?.properties.model, "noisy");
  // The text as the model logged it, once: not quoted, not again in
  // properties.message (before: "\"init failed\\nTraceback ...\"" and the
  // text a second time).
  assert.match(
    traceback!.message,
    /^init failed\nTraceback \(most recent call last\):\n[^]*ZeroDivisionError: division by zero$/,
  );
  assert.equal(traceback?.properties.message, undefined);
  assert.equal(traceback?.properties.stream, "logging");
  assert.ok(
    records.some((r) =>
      r.logger === "pyproxy.python.noisy" && r.level === "WARN" &&
      r.message === "loading"
    ),
    JSON.stringify(records),
  );
  assert.ok(
    records.some((r) =>
      r.logger === "pyproxy.gateway" && r.message === "Stopped"
    ),
    JSON.stringify(records),
  );
});

/** Each line of `text` parsed as a JSON log record. */
function jsonRecords(text: string): Array<{
  level: string;
  message: string;
  logger: string;
  properties: Record<string, unknown>;
}> {
  return text.split("\n").filter((l) => l.startsWith("{")).map((l) =>
    JSON.parse(l)
  );
}

Deno.test("main serve --log-format json: a model that cannot be imported is one error record with its traceback; a worker that fails before its log is set up too, before the fatal line", async () => {
  await using models = await tempDir();
  await Deno.writeTextFile(
    `${models.path}/bad_import.py`,
    "import no_such_module_logs28\nclass M:\n    def execute(self, msg):\n        return msg\n",
  );
  await Deno.writeTextFile(
    `${models.path}/bad_syntax.py`,
    "class M:\n    def execute(self, msg)\n        return msg\n",
  );
  await Deno.writeTextFile(
    `${models.path}/good.py`,
    "class M:\n    def execute(self, msg):\n        return msg\n",
  );
  await using serve = await startServe([
    "--port=0",
    "--workers=1",
    `--models=${models.path}`,
    "--log-format=json",
  ]);
  serve.child.kill("SIGTERM");
  assert.equal((await serve.child.status).code, 0);
  const records = jsonRecords(await serve.stderr);
  for (
    const [name, exception, last] of [
      [
        "bad_import",
        "ModuleNotFoundError",
        /ModuleNotFoundError: No module named 'no_such_module_logs28'\n$/,
      ],
      ["bad_syntax", "SyntaxError", /SyntaxError: expected ':'\n$/],
    ] as const
  ) {
    const skipped = records.filter((r) =>
      r.message.startsWith("Skipped model") && r.properties.name === name
    );
    assert.equal(skipped.length, 1, JSON.stringify(records));
    assert.equal(skipped[0]!.level, "ERROR");
    assert.equal(skipped[0]!.properties.exception, exception);
    assert.equal(skipped[0]!.properties.workers, "w1");
    assert.match(String(skipped[0]!.properties.traceback), last);
  }

  // A module of the worker's own start shadowed (a project's argparse.py on
  // PYTHONPATH): it fails before its log is set up.
  await using shadow = await tempDir();
  await Deno.writeTextFile(
    `${shadow.path}/argparse.py`,
    "raise RuntimeError('shadowed argparse')\n",
  );
  const failed = await cli([
    "serve",
    "--port=0",
    "--workers=1",
    `--models=${models.path}`,
    "--log-format=json",
  ], { PYTHONPATH: shadow.path });
  assert.equal(failed.code, 1, failed.stderr);
  // ERROR and above: a start slower than 3 s writes its held records of
  // lower levels too (logs29).
  const start = jsonRecords(failed.stderr).filter((r) =>
    r.level === "ERROR" || r.level === "FATAL"
  );
  assert.deepEqual(
    start.map((r) => `${r.level} ${r.logger}`),
    ["ERROR pyproxy.python-server.stderr", "FATAL pyproxy.cli"],
    failed.stderr,
  );
  assert.equal(start[0]!.properties.id, "w1");
  // The worker's stderr as it wrote it is the message (once: not in `line`).
  assert.equal(start[0]!.properties.line, undefined);
  assert.match(
    start[0]!.message,
    /^Traceback \(most recent call last\):\n[^]*argparse\.py", line 1, in <module>\n[^]*RuntimeError: shadowed argparse$/,
  );
  assert.match(start[1]!.message, /RuntimeError: shadowed argparse$/);
});

Deno.test("main serve --log-format json: a worker's start-up exit that is not a traceback (--path, arguments, cannot listen, no secret) is one error record with its id before the fatal line", async () => {
  await using dir = await tempDir();
  // A wrapper as --python, which spoils what the worker is given.
  const cases = [
    [
      "path",
      '"$@" --path /nonexistent-logs29',
      /^--path '\/nonexistent-logs29' is not a directory$/,
    ],
    ["args", '"$@" --threads 0', /^bad arguments: --threads must be >= 1$/],
    ["unix", '"$@" --unix /nonexistent-logs29/w.sock', /^cannot listen: /],
    ["secret", '"$@" </dev/null', /^no secret on stdin \(end of file\)/],
  ] as const;
  for (const [name, args] of cases) {
    await Deno.writeTextFile(
      `${dir.path}/${name}`,
      `#!/bin/sh\nexec python3 ${args}\n`,
    );
    await Deno.chmod(`${dir.path}/${name}`, 0o755);
  }
  const serve = (name: string, format: string): [string[]] => [[
    "serve",
    "--port=0",
    "--workers=1",
    `--python=${dir.path}/${name}`,
    `--log-format=${format}`,
  ]];
  const runs = await cliEach([
    ...cases.map(([name]) => serve(name, "json")),
    serve("path", "text"),
  ]);
  cases.forEach(([name, , message], i) => {
    const r = runs[i]!;
    assert.equal(r.code, 1, r.stderr);
    // At error and above: a start slowed down by a loaded machine writes
    // its held records, the pool's warning that the worker exited among them.
    const records = jsonRecords(r.stderr).filter((r) =>
      r.level === "ERROR" || r.level === "FATAL"
    );
    // Before: the FATAL line alone, its message's tail the only trace.
    assert.deepEqual(
      records.map((r) => `${r.level} ${r.logger}`),
      ["ERROR pyproxy.python-server.stderr", "FATAL pyproxy.cli"],
      `${name}: ${r.stderr}`,
    );
    assert.equal(records[0]!.properties.id, "w1");
    assert.equal(records[0]!.properties.logger, "pyproxy_server");
    assert.match(String(records[0]!.properties.message), message, name);
  });
  // The text format's one line says it as before, without the record's time.
  assert.match(
    runs[4]!.stderr.trimEnd(),
    /^error: Cannot start pool: [^\n]*: pyproxy_server: --path '\/nonexistent-logs29' is not a directory$/,
  );
});

Deno.test({
  name:
    "main serve's one error line leaves out the colours of a Python 3.13 traceback (PYTHON_COLORS=1)",
  ignore: !(await Deno.stat("/root/.pyenv/versions/3.13.0/bin/python3").then(
    () => true,
    () => false,
  )),
  fn: async () => {
    await using shadow = await tempDir();
    await Deno.writeTextFile(
      `${shadow.path}/argparse.py`,
      "raise RuntimeError('shadowed argparse')\n",
    );
    const r = await cli([
      "serve",
      "--port=0",
      "--workers=1",
      "--python=/root/.pyenv/versions/3.13.0/bin/python3",
    ], { PYTHONPATH: shadow.path, PYTHON_COLORS: "1" });
    assert.equal(r.code, 1, r.stderr);
    assert.ok(!r.stderr.includes("\x1b"), r.stderr);
    assert.match(
      r.stderr.trimEnd(),
      /^error: Cannot start pool: [^\n]*: RuntimeError: shadowed argparse$/,
    );
  },
});

Deno.test("main serve --log-format journald writes each line with its record's syslog priority, no time stamp", async () => {
  await using models = await tempDir();
  await Deno.writeTextFile(`${models.path}/noisy.py`, NOISY);
  await using serve = await startServe([
    "--port=0",
    "--workers=1",
    `--models=${models.path}`,
    "--log-format=journald",
  ]);
  serve.child.kill("SIGTERM");
  assert.equal((await serve.child.status).code, 0);
  const lines = (await serve.stderr).split("\n").filter((l) => l !== "");
  // Every line: journald reads the priority of each (SyslogLevelPrefix=).
  for (const line of lines) {
    assert.match(line, /^<[2-7]>/, line);
  }
  // The traceback's lines at the error's priority, each.
  const at = lines.findIndex((l) => l.includes("init failed"));
  assert.match(lines[at]!, /^<3>\[ERR\] pyproxy·python·noisy: /);
  const tb = lines.slice(at, at + 8).join("\n");
  assert.match(tb, /^<3>Traceback \(most recent call last\):/m);
  assert.match(tb, /^<3>ZeroDivisionError/m);
  assert.ok(lines.some((l) => /^<4>.*loading/.test(l)), lines.join("\n"));
  assert.ok(
    lines.some((l) => l === "<6>[INF] pyproxy·gateway: Stopped"),
    lines.join("\n"),
  );
});

Deno.test("main serve names 50 models on its banner and counts the rest", async () => {
  await using models = await tempDir();
  for (let i = 0; i < 53; i++) {
    await Deno.writeTextFile(
      `${models.path}/m${String(i).padStart(2, "0")}.py`,
      "class M:\n    def execute(self, msg):\n        return msg\n",
    );
  }
  await using serve = await startServe([
    "--port=0",
    "--workers=1",
    `--models=${models.path}`,
  ]);
  const first = serve.banner.split("\n")[0]!;
  // 53 names made a line that grows with the models (tens of KiB with
  // thousands of them: split by container runtimes at 16 KiB).
  assert.match(first, /, m48, m49 and 3 more\)$/);
  assert.match(
    first,
    /^pyproxy \S+ listening on http:\/\/127\.0\.0\.1:\d+ \(1 worker, models: m00, m01, /,
  );
  assert.doesNotMatch(first, /m50/);
});

Deno.test("main serve says which model it still waits for while the start waits, and stops on SIGINT then", async () => {
  await using models = await hangingModels();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MOD,
      "serve",
      "--port=0",
      "--workers=1",
      `--models=${models.path}`,
    ],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  // The records of a start are held until it ends, unless it is slow: the
  // notice must come while the start still waits (for 120 s here).
  const guard = setTimeout(() => child.kill("SIGKILL"), 30_000);
  let log = "";
  try {
    while (!/Still loading model .*\n/.test(log)) {
      const { value, done } = await stderr.read();
      if (done) break;
      log += value;
    }
    assert.match(
      log,
      /Still loading model "hang" \("hang\.py"\) after 5 s; giving up after 120 s \(limits\.loadTimeout, --load-timeout\)/,
    );
    // Ctrl-C while it waits: the host stops the start, and its worker with
    // it; it used to die of the signal, leaving the worker to notice alone
    // and its socket directory behind.
    child.kill("SIGINT");
    const status = await child.status;
    assert.equal(status.code, 130);
    let rest = "";
    for (;;) {
      const { value, done } = await stderr.read();
      if (done) break;
      rest += value;
    }
    assert.match(rest, /pyproxy: stopped by SIGINT while starting/);
    assert.doesNotMatch(rest, /error:/);
    await waitFor(async () => (await processesWith(models.path)) === 0, {
      message: `no process with ${models.path} in its command line`,
    });
    const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
    const left: string[] = [];
    for await (const e of Deno.readDir(tmp)) {
      if (e.name.startsWith(`pyproxy-sock-${child.pid}-`)) left.push(e.name);
    }
    assert.deepEqual(left, [], "the workers' socket directories are removed");
  } finally {
    clearTimeout(guard);
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
    await stderr.cancel();
  }
});

Deno.test("main reports every failure in one error line on stderr", async () => {
  // A config file whose text V8 quotes with its line break.
  await using badJson = await tempDir();
  const BAD_JSON_DIR = badJson.path;
  await Deno.writeTextFile(`${BAD_JSON_DIR}/pyproxy.json`, "not json\n");
  const cases: Array<[string[], Record<string, string>, number, RegExp]> = [
    [
      ["serve", "--port", "-1"],
      {},
      1,
      /^error: port: expected an integer from 0 to 65535 \(at command line: --port\)$/,
    ],
    [
      ["serve", "-w", "-1"],
      {},
      1,
      /^error: workers: expected an integer from 1 to 1024/,
    ],
    [
      ["serve", "--max-queue", "-5"],
      {},
      1,
      /^error: limits\.maxQueue: expected an integer >= 0 \(at command line: --max-queue\)$/,
    ],
    [
      ["serve", "--max-integer-digits", "15"],
      {},
      1,
      /^error: limits\.maxIntegerDigits: expected an integer >= 16 \(at command line: --max-integer-digits\)$/,
    ],
    [
      ["serve", "--max-json-depth", "0"],
      {},
      1,
      /^error: limits\.maxJsonDepth: expected an integer >= 1 \(at command line: --max-json-depth\)$/,
    ],
    [
      ["serve", "--eval-replay-budget", "64Mi"],
      {},
      1,
      /^error: limits\.evalReplayBudget: expected an integer >= 0 \(at command line: --eval-replay-budget\)$/,
    ],
    [
      ["serve", "--timeout", "abc"],
      {},
      1,
      /^error: limits\.requestTimeout: expected an integer >= 1 \(at command line: --timeout\)$/,
    ],
    [
      ["serve", "--log-level", "pyproxy.pool=loud"],
      {},
      1,
      /^error: logLevels\["pyproxy\.pool"\]: expected one of .* \(at command line: --log-level\)$/,
    ],
    [
      ["serve", "--log-format", "xml"],
      {},
      1,
      /^error: logFormat: expected one of text, json, journald \(at command line: --log-format\)$/,
    ],
    [
      ["serve", "--python", "-x"],
      {},
      2,
      /^error: Option '--python' argument is ambiguous\. .*\(run with --help for usage\)$/,
    ],
    [
      ["serve", "--port", "0", "--python", "/nonexistent"],
      {},
      1,
      /^error: Cannot start pool: all 2 workers failed to start: Cannot start python server w1: cannot spawn '\/nonexistent'/,
    ],
    [
      ["serve", "--port", "0"],
      { PYPROXY_TOKEN: "short" },
      1,
      /^error: token: expected a token of at least 16 characters \(at environment: PYPROXY_TOKEN\)$/,
    ],
    // --env is checked as pyproxy.json's env is, and names the flag.
    [
      ["serve", "--port", "0", "--env", "OMP_NUM_THREADS"],
      {},
      1,
      /^error: env: expected NAME=VALUE, e\.g\. OMP_NUM_THREADS=2 \(got "OMP_NUM_THREADS"\) \(at command line: --env\)$/,
    ],
    [
      ["serve", "--port", "0", "--env", "PYPROXY_TOKEN=x"],
      {},
      1,
      /^error: env\.PYPROXY_TOKEN: PYPROXY_ names are the host's own .* \(at command line: --env\)$/,
    ],
    [
      ["serve", "--port", "0", "--env", "A=1", "--env", "PYTHONPATH=/x"],
      {},
      1,
      /^error: env\.PYTHONPATH: cannot be set for the workers: .* \(at command line: --env\)$/,
    ],
    [
      ["serve", "--port", "0", "--env", "A-B=1"],
      {},
      1,
      /^error: env\["A-B"\]: expected a variable name .* \(at command line: --env\)$/,
    ],
    [
      ["serve", "--models-dir", "m"],
      {},
      2,
      /^error: unknown option --models-dir \(did you mean --models\?\) \(run with --help for usage\)$/,
    ],
    [
      ["serve", "--prot", "8000"],
      {},
      2,
      /^error: unknown option --prot \(did you mean --port\?\)/,
    ],
    // An unknown option (--nope): "main rejects bad flags ...", whole.
    [["launch"], {}, 2, /^error: unknown command "launch"/],
    [
      ["serve", "--port", "0", "--models", `${BAD_JSON_DIR}/no-such-dir`],
      {},
      1,
      /^error: modelsDir: .*\/no-such-dir does not exist$/,
    ],
    [
      ["serve", "--port", "0", "--models", `${BAD_JSON_DIR}/pyproxy.json`],
      {},
      1,
      /^error: modelsDir: .*\/pyproxy\.json is not a directory$/,
    ],
    [
      ["serve", "now"],
      {},
      2,
      /^error: unexpected argument "now" after serve: it takes options only \(run with --help for usage\)$/,
    ],
    [
      ["serve", "--config", `${BAD_JSON_DIR}/pyproxy.json`],
      {},
      1,
      /^error: Cannot parse config file .*pyproxy\.json: Unexpected token 'o', "not json\\n" is not valid JSON$/,
    ],
  ];
  const results = await cliEach(cases.map(([args, env]) => [args, env]));
  for (const [i, [args, , code, line]] of cases.entries()) {
    const r = results[i]!;
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.match(lines[0]!, line);
  }
});

Deno.test("main's error line is a record of --log-format json or journald once the format is known", async () => {
  await using dir = await tempDir();
  const missing = `${dir.path}/no-such-dir`;
  const [json, journald, text] = await cliEach([
    [["serve", "--port", "0", "--log-format", "json", "--models", missing]],
    [["serve", "--port", "0", "--log-format", "journald", "--models", missing]],
    [["serve", "--port", "0", "--models", missing]],
  ]);
  assert.equal(json!.code, 1, json!.stderr);
  const lines = json!.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, json!.stderr);
  const record = JSON.parse(lines[0]!);
  assert.equal(record.level, "FATAL");
  assert.equal(record.logger, "pyproxy.cli");
  assert.match(
    record.message,
    /^error: modelsDir: .*\/no-such-dir does not exist$/,
  );
  assert.ok(!Number.isNaN(Date.parse(record["@timestamp"])));
  assert.equal(journald!.code, 1, journald!.stderr);
  assert.match(
    journald!.stderr.trimEnd(),
    /^<2>\[FTL\] pyproxy·cli: error: modelsDir: .*\/no-such-dir does not exist$/,
  );
  // The text format (the default) keeps its plain line.
  assert.match(
    text!.stderr.trimEnd(),
    /^error: modelsDir: .*no-such-dir does not exist$/,
  );
  // A failure to read the configuration itself (a token file missing, or
  // weak): the flag's format (it was a plain line among JSON records).
  const weak = `${dir.path}/weak-token`;
  await Deno.writeTextFile(weak, "aaaaaaaaaaaaaaaaaaaa\n", { mode: 0o600 });
  const tokenFiles = await cliEach([
    [["serve", "--log-format=json", "--token-file", `${dir.path}/none`]],
    [["serve", "--log-format", "json", "--token-file", weak]],
  ]);
  for (const [r, why] of tokenFiles.map((r, i) => [r, i] as const)) {
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(r.code, 1, r.stderr);
    assert.equal(lines.length, 1, r.stderr);
    const fatal = JSON.parse(lines[0]!);
    assert.equal(fatal.level, "FATAL");
    assert.match(
      fatal.message,
      why === 0
        ? /^error: tokenFile: cannot read .*\/none: no such file/
        : /^error: token: a weak token/,
    );
  }
});

/**
 * `serve --python <script>` with `script` as the interpreter (a shell
 * script): its exit code and stderr.
 */
async function serveWithPython(
  name: string,
  script: string,
): Promise<{ code: number; stderr: string }> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-cli-test-" });
  try {
    const python = `${dir}/${name}`;
    await Deno.writeTextFile(python, `#!/bin/sh\n${script}`);
    await Deno.chmod(python, 0o755);
    return await cli(
      ["serve", "--port", "0", "--workers", "1", "--python", python],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("main says why a Python that exits at start failed: the last line of its stderr", async () => {
  const r = await serveWithPython(
    "python3",
    "echo 'Traceback (most recent call last):' >&2\n" +
      "echo 'ModuleNotFoundError: No module named contextvars' >&2\nexit 1\n",
  );
  assert.equal(r.code, 1, r.stderr);
  assert.equal(
    r.stderr.trimEnd(),
    "error: Cannot start pool: all 1 workers failed to start: Cannot start python server w1: it exited (code 1) before it was ready: ModuleNotFoundError: No module named contextvars",
  );
});

Deno.test("main says why a --python that is not found (status 127) failed: the first line of its stderr", async () => {
  // What a pyenv shim says for a version that is not selected.
  const r = await serveWithPython(
    "python2",
    "echo 'pyenv: python2: command not found' >&2\necho >&2\n" +
      "echo \"Note: See 'pyenv help global' for tips on allowing both\" >&2\n" +
      "echo '      python2 and python3 to be found at the same time.' >&2\nexit 127\n",
  );
  assert.equal(r.code, 1, r.stderr);
  assert.equal(
    r.stderr.trimEnd(),
    "error: Cannot start pool: all 1 workers failed to start: Cannot start python server w1: it exited (code 127) before it was ready: pyenv: python2: command not found",
  );
});

Deno.test("main says which permissions serve needs when one is missing, narrower lists included", async () => {
  for (const flags of [[], ["--allow-read", "--allow-env", "--allow-write"]]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, MOD, "serve", "--port", "0", "--workers", "1"],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, stderr);
    assert.match(
      stderr,
      /^error: .*Requires \w+ access to .* \(serve needs -A, or all of --allow-read, --allow-write, --allow-net, --allow-run, --allow-env and --allow-sys, which may list what they allow: docs\/runtimes\.md\)\n$/,
    );
  }
});

Deno.test("main names the address it cannot listen on, before it loads any model", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  // A model whose import leaves a mark: the port is checked first, so that
  // a start does not load every model (minutes, for some) only to fail.
  await using models = await tempDir();
  await Deno.writeTextFile(
    `${models.path}/mark.py`,
    "import os\nopen(os.path.join(os.path.dirname(__file__), 'loaded'), 'w').close()\n\n\n" +
      "class Mark:\n    def execute(self, msg):\n        return msg\n",
  );
  const r = await cli([
    "serve",
    "--port",
    String(port),
    "--workers",
    "1",
    "--models",
    models.path,
  ]);
  assert.equal(r.code, 1);
  assert.equal(
    await Deno.stat(`${models.path}/loaded`).then(() => true, () => false),
    false,
    "the model was loaded before the port was found in use",
  );
  assert.match(
    r.stderr.trimEnd(),
    new RegExp(`^error: Cannot listen on 127\\.0\\.0\\.1:${port}: `),
  );
  // What to do about it, whatever the runtime's own words.
  assert.match(
    r.stderr,
    /\(another process listens there: stop it, or pass another --port, or 0 for a free one\)\n$/,
  );
});

Deno.test("main serve --host 0.0.0.0 prints URLs that work, and /healthz answers by the machine's IP", async () => {
  const token = "cli-test-token-0123456789";
  await using serve = await startServe(
    ["--port", "0", "--host", "0.0.0.0", "--workers", "1", "--grpc-port", "0"],
    { PYPROXY_TOKEN: token },
  );
  const { child, banner: text } = serve;
  const m =
    /^pyproxy \S+ listening on (http:\/\/127\.0\.0\.1:(\d+)) \(bound to 0\.0\.0\.0, 1 worker, models: /m
      .exec(text);
  assert.ok(m, `unexpected output: ${JSON.stringify(text)}`);
  const url = m[1]!;
  const tryUrl = /try: .* (http:\S+)/.exec(text)?.[1];
  assert.equal(tryUrl, `${url}/v1/models/echo/execute`);
  assert.match(text, /try: .* -H "Authorization: Bearer \$PYPROXY_TOKEN" /);
  const res = await fetch(tryUrl, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: '{"hello":"world"}',
  });
  assert.deepEqual(await res.json(), { hello: "world" });
  const dashboard = /dashboard: (\S+)/.exec(text)?.[1];
  assert.equal(dashboard, `${url}/?token=<token>`);
  const page = await fetch(dashboard.replace("<token>", token));
  assert.equal(page.status, 200);
  await page.body?.cancel();
  const ip = Deno.networkInterfaces().find((i) =>
    i.family === "IPv4" && !i.address.startsWith("127.")
  )?.address;
  if (ip !== undefined) {
    const health = await fetch(`http://${ip}:${m[2]}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
    // With the token, the machine's IP is a usable Host too.
    const status = await fetch(`http://${ip}:${m[2]}/v1/status`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(status.status, 200);
    await status.body?.cancel();
  }
  // The gRPC port is bound to every interface too, and the line says so.
  const grpc =
    /^ {2}gRPC: +127\.0\.0\.1:(\d+) \(bound to 0\.0\.0\.0, Open Inference Protocol/m
      .exec(text);
  assert.ok(grpc, `unexpected output: ${JSON.stringify(text)}`);
  child.kill("SIGTERM");
  assert.equal((await child.status).code, 0);
  // Off loopback with a token and no TLS: the token travels in clear text.
  assert.match(
    await serve.stderr,
    /Serving plain HTTP on "0\.0\.0\.0": the bearer token travels in clear text/,
  );
});

Deno.test("main serve warns that the token travels in clear text to a gRPC port off loopback, TLS or not", async () => {
  const token = "cli-test-token-0123456789";
  const models = new URL("../examples/models", import.meta.url).pathname;
  for (const grpcHost of ["0.0.0.0", "127.0.0.1"]) {
    await using serve = await startServe(
      [
        "--port",
        "0",
        "--grpc-port",
        "0",
        "--grpc-host",
        grpcHost,
        "--workers",
        "1",
        "--models",
        models,
      ],
      { PYPROXY_TOKEN: token },
    );
    const { child } = serve;
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    const stderr = await serve.stderr;
    // The HTTP port is on loopback: only the gRPC port's warning, if any.
    assert.doesNotMatch(stderr, /Serving plain HTTP/);
    if (grpcHost === "0.0.0.0") {
      assert.match(
        stderr,
        /Serving gRPC in plain text \(h2c\) on "0\.0\.0\.0": the bearer token travels in clear text/,
      );
    } else {
      assert.doesNotMatch(stderr, /Serving gRPC in plain text/);
    }
  }
});

Deno.test("main serve with the token in pyproxy.json does not point at $PYPROXY_TOKEN", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-cli-test-" });
  try {
    const token = "cli-file-token-0123456789";
    await Deno.writeTextFile(
      `${dir}/pyproxy.json`,
      JSON.stringify({
        token,
        modelsDir: new URL("../examples/models", import.meta.url).pathname,
      }),
    );
    await using serve = await startServe([
      "--config",
      `${dir}/pyproxy.json`,
      "--port",
      "0",
      "--workers",
      "1",
    ]);
    const { child, banner } = serve;
    const line = /^ {2}try: .*$/m.exec(banner)?.[0] ?? banner;
    assert.match(line, /-H "Authorization: Bearer <token>" /);
    assert.ok(!line.includes("PYPROXY_TOKEN"), line);
    assert.ok(!banner.includes(token), "the token itself is not printed");
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main serve warns of tokens other users can read: --token and --manage-token in its command line, a pyproxy.json holding one readable by others", async () => {
  // On a shared host every user reads a process's arguments (ps) and a
  // file of mode 0644: the token was theirs, and with it every model (and,
  // with the management token, eval).
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-cli-test-" });
  try {
    const models = new URL("../examples/models", import.meta.url).pathname;
    // One file a mode (the four starts run at once, each a serve of its
    // own: one after the other they took ~2 s).
    const configOf = async (name: string, mode: number) => {
      const config = `${dir}/${name}/pyproxy.json`;
      await Deno.mkdir(`${dir}/${name}`);
      await Deno.writeTextFile(
        config,
        JSON.stringify({
          token: "cli-file-token-0123456789",
          modelsDir: models,
        }),
      );
      await Deno.chmod(config, mode);
      return config;
    };
    const flags = [
      "--token",
      "cli-flag-token-0123456789",
      "--manage-token",
      "cli-flag-manage-0123456789",
    ];
    const warnings = async (
      args: string[],
      env = {},
      cwd: string = ROOT,
    ) => {
      await using serve = await startServe(
        [...args, "--port", "0", "--workers", "1"],
        env,
        undefined,
        undefined,
        cwd,
      );
      serve.child.kill("SIGTERM");
      assert.equal((await serve.child.status).code, 0);
      return await serve.stderr;
    };
    // Found in the working directory: its file and directory pass the
    // start's check, but a directory above every user can write (no sticky
    // bit) is what a reload refuses: said at start too.
    await Deno.mkdir(`${dir}/above/project`, { recursive: true });
    await Deno.writeTextFile(
      `${dir}/above/project/pyproxy.json`,
      JSON.stringify({ modelsDir: models }),
    );
    await Deno.chmod(`${dir}/above`, 0o777);
    const env = { PYPROXY_TOKEN: "cli-env-token-0123456789" };
    const [readable, own, writable, above] = await Promise.all([
      // Tokens in the command line, and in a file other users may read.
      configOf("readable", 0o644).then((config) =>
        warnings(["--config", config, "--models", models, ...flags])
      ),
      // The same tokens from the environment and a private file: nothing
      // said.
      configOf("own", 0o600).then((config) =>
        warnings(["--config", config, "--models", models], env)
      ),
      // Named by --config, a file every user can write is used, and said to
      // be refused by a reload (security27), which applies its tokens.
      configOf("writable", 0o666).then((config) =>
        warnings(["--config", config, "--models", models], env)
      ),
      warnings([], {}, `${dir}/above/project`),
    ]);
    assert.match(
      readable,
      /--token puts the token in this process's command line, which every user of this machine can read \(ps, \/proc\/\d+\/cmdline\): set PYPROXY_TOKEN or --token-file instead/,
    );
    assert.match(
      readable,
      /--manage-token puts the token in this process's command line/,
    );
    assert.match(
      readable,
      /pyproxy\.json holds "token" and other users may read it \(mode 644\): chmod 600 it/,
    );
    assert.ok(
      !readable.includes("cli-flag-token"),
      "the token itself is not logged",
    );
    assert.doesNotMatch(own, /command line, which every user|may read it/);
    assert.doesNotMatch(own, /a reload \(SIGHUP\) refuses it/);
    assert.match(
      writable,
      /Config file "?\S+\/pyproxy\.json"?: "?every user can write to it \(mode 0666\)"?; used, but a reload \(SIGHUP\) refuses it/,
    );
    assert.match(
      above,
      /Config file "?\S+\/above\/project\/pyproxy\.json"?: "?every user can write to \S+\/above, a directory above it \(mode 0777\)"?; used, but a reload/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main serve generates a token for --allow-eval or --allow-manage without one, writes it to a private file when its output is not a terminal, and requires it", async () => {
  const models = new URL("../examples/models", import.meta.url).pathname;
  // Without a token, every local user (any process reaches the loopback)
  // could run code as this user (eval) or import any .py of the models
  // directory (manage): serve used to only warn. Printed on stdout, the
  // token went to whatever keeps a service's output (journald, docker
  // logs): its readers got code execution (security24). Here stdout is a
  // pipe, as a service's.
  await using state = await tempDir("pyproxy-cli-state-");
  const seen = new Set<string>();
  for (const flag of ["--allow-eval", "--allow-manage"]) {
    await using serve = await startServe(
      [flag, "--port", "0", "--workers", "1", "--models", models],
      {
        XDG_STATE_HOME: state.path,
        XDG_RUNTIME_DIR: "",
        RUNTIME_DIRECTORY: "",
      },
      /token: .*\n/,
    );
    assert.match(
      serve.banner,
      new RegExp(
        `token: +generated for ${flag}, which would otherwise be open to every local user`,
      ),
    );
    const url = serve.banner.match(/listening on (http:\/\/\S+)/)![1]!;
    const port = new URL(url).port;
    const path = `${state.path}/pyproxy/token-127.0.0.1-${port}`;
    const token = (await Deno.readTextFile(path)).trim();
    assert.match(token, /^[A-Za-z0-9_-]{32}$/);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.equal(
      (await Deno.stat(`${state.path}/pyproxy`)).mode! & 0o777,
      0o700,
    );
    // Never on stdout: its path, and a fingerprint of it.
    assert.ok(!serve.banner.includes(token), serve.banner);
    assert.match(
      serve.banner,
      new RegExp(`Bearer \\$\\(cat ${path.replaceAll(".", "\\.")}\\)"`),
    );
    assert.match(serve.banner, /dashboard: .*\/\?token=<the token in /);
    assert.match(
      serve.banner,
      new RegExp(
        `in ${path} \\(mode 0600, removed at exit; sha256 [0-9a-f]{8}\\.\\.\\.\\), not printed, as this output is not a terminal`,
      ),
    );
    assert.ok(!seen.has(token), "a new token for every start");
    seen.add(token);
    const without = await fetch(`${url}/v1/models`);
    assert.equal(without.status, 401);
    await without.body?.cancel();
    const withToken = await fetch(`${url}/v1/models`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(withToken.status, 200);
    await withToken.body?.cancel();
    serve.child.kill("SIGTERM");
    assert.equal((await serve.child.status).code, 0);
    assert.doesNotMatch(await serve.stderr, /enabled without a token/);
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  }
  // Nowhere to write it: neither printed nor written, so nobody could call
  // the gateway; before, it ran on, its /healthz ok (newcomer24).
  {
    await Deno.writeTextFile(`${state.path}/missing-file`, "");
    const { code, stdout, stderr } = await cli(
      [
        "serve",
        "--allow-eval",
        "--port",
        "0",
        "--workers",
        "1",
        "--models",
        models,
      ],
      {
        XDG_STATE_HOME: `${state.path}/missing-file/x`,
        XDG_RUNTIME_DIR: "",
        RUNTIME_DIRECTORY: "",
        HOME: "",
      },
    );
    assert.equal(code, 1, stderr);
    assert.match(
      stderr,
      /error: Cannot start: a token was generated for --allow-eval.*not printed, as this output is not a terminal .*, nor written to a file \(.*\), so nobody could call the gateway: set PYPROXY_TOKEN or --token-file to choose one/,
    );
    assert.doesNotMatch(stdout, /listening on/);
  }
  // A token of the user's own: nothing generated, and never printed.
  const own = "cli-eval-token-0123456789";
  await using serve = await startServe(
    ["--allow-eval", "--port", "0", "--workers", "1", "--models", models],
    { PYPROXY_TOKEN: own },
  );
  assert.doesNotMatch(serve.banner, /generated/);
  assert.doesNotMatch(serve.banner, new RegExp(own));
  assert.match(serve.banner, /Bearer \$PYPROXY_TOKEN/);
});

Deno.test({
  name:
    "main serve names its generated token's file by address and port: two gateways on one port and two addresses each keep a token file that works for it, and each exit removes its own",
  ignore: Deno.build.os !== "linux", // 127.0.0.2 is a loopback address
}, async () => {
  // Two gateways of one user, 127.0.0.1:P and 127.0.0.2:P, shared the file
  // token-P: the second's token replaced the first's, whose users then read
  // a token the first refused (401), and the first's exit removed the
  // second's (newcomer24, security25).
  const models = new URL("../examples/models", import.meta.url).pathname;
  await using state = await tempDir("pyproxy-cli-state-");
  const env = {
    XDG_STATE_HOME: state.path,
    XDG_RUNTIME_DIR: "",
    RUNTIME_DIRECTORY: "",
  };
  const args = ["--allow-eval", "--workers", "1", "--models", models];
  await using first = await startServe(
    [...args, "--host", "127.0.0.1", "--port", "0"],
    env,
    /token: .*\n/,
  );
  const port = new URL(first.url!).port;
  await using second = await startServe(
    [...args, "--host", "127.0.0.2", "--port", port],
    env,
    /token: .*\n/,
  );
  const paths = [first, second].map((gw) =>
    gw.banner.match(/ in (\S+) \(mode 0600/)![1]!
  );
  assert.deepEqual(paths, [
    `${state.path}/pyproxy/token-127.0.0.1-${port}`,
    `${state.path}/pyproxy/token-127.0.0.2-${port}`,
  ]);
  const works = async (url: string, path: string) => {
    const res = await fetch(`${url}/v1/models`, {
      headers: {
        authorization: `Bearer ${(await Deno.readTextFile(path)).trim()}`,
      },
    });
    await res.body?.cancel();
    return res.status;
  };
  assert.equal(await works(first.url!, paths[0]!), 200);
  assert.equal(await works(second.url!, paths[1]!), 200);
  first.child.kill("SIGTERM");
  assert.equal((await first.child.status).code, 0);
  await assert.rejects(Deno.stat(paths[0]!), Deno.errors.NotFound);
  assert.equal(await works(second.url!, paths[1]!), 200);
  second.child.kill("SIGTERM");
  assert.equal((await second.child.status).code, 0);
  await assert.rejects(Deno.stat(paths[1]!), Deno.errors.NotFound);
});

Deno.test({
  name:
    "main serve prints the token it generated when its output is a terminal (the quick start)",
  ignore: Deno.build.os !== "linux",
}, async () => {
  // script(1) gives serve a terminal for its stdout, as a person's shell.
  const models = new URL("../examples/models", import.meta.url).pathname;
  // The shell script(1) runs says its pid, which exec makes serve's.
  await using dir = await tempDir();
  const pidFile = `${dir.path}/serve.pid`;
  const command = `echo $$ > '${pidFile}' && exec ` + [
    Deno.execPath(),
    "run",
    "-A",
    new URL("../mod.ts", import.meta.url).pathname,
    "serve",
    "--allow-eval",
    "--port",
    "0",
    "--workers",
    "1",
    "--models",
    models,
  ].map((w) => `'${w}'`).join(" ");
  const child = new Deno.Command("script", {
    args: ["-q", "-e", "-f", "-c", command, "/dev/null"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let banner = "";
  const reader = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  try {
    // A terminal ends lines with \r\n, and "." stops at \r.
    while (!/token: [^\n]*\n/.test(banner)) {
      const { value, done } = await reader.read();
      if (done) break;
      banner += value;
    }
    const token = banner.match(/Bearer ([A-Za-z0-9_-]{32})"/)?.[1];
    assert.ok(token !== undefined, banner);
    assert.match(banner, new RegExp(`dashboard: .*/\\?token=${token}`));
    assert.match(
      banner,
      /token: +generated for --allow-eval, .*\(set PYPROXY_TOKEN/,
    );
    assert.doesNotMatch(banner, /not printed/);
    // serve itself stops on SIGTERM, and script(1) ends with it. (A
    // SIGTERM to script(1) sends its child SIGTERM, then, 2 s later, SIGKILL:
    // serve was killed as it drained, or cost the test 2 s.)
    const pid = Number((await Deno.readTextFile(pidFile)).trim());
    Deno.kill(pid, "SIGTERM");
    assert.equal((await child.status).code, 0);
  } finally {
    // SIGTERM: script ends serve, its child, then itself (a SIGKILL left
    // serve running without its terminal).
    try {
      child.kill("SIGTERM");
    } catch {
      // exited
    }
    await child.status;
    await child.stdin.close().catch(() => {});
    // What serve wrote to its terminal after the banner, unread.
    await reader.cancel().catch(() => {});
    await stderr;
  }
});

Deno.test("main serve imports no Python module from its working directory", async () => {
  // Anyone who can write to the directory serve is started in (/tmp, a
  // shared checkout) must not get code of theirs run by the workers.
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-cwd-test-" });
  try {
    const marker = `${dir}/imported`;
    const planted = `open(${JSON.stringify(marker)}, "a").close()\n`;
    await Deno.mkdir(`${dir}/pyproxy_server`);
    await Deno.writeTextFile(`${dir}/pyproxy_server/__init__.py`, planted);
    await Deno.writeTextFile(
      `${dir}/pyproxy_server/__main__.py`,
      `${planted}raise SystemExit("planted")\n`,
    );
    await Deno.writeTextFile(`${dir}/json.py`, planted);
    const models = new URL("../examples/models", import.meta.url).pathname;
    await using serve = await startServe(
      ["--port", "0", "--workers", "1", "--models", models],
      {},
      /dashboard: .*\n/,
      undefined,
      dir,
    );
    // A worker that ran the planted package exits, and serve with it.
    const started = /listening on/.test(serve.banner);
    if (started) serve.child.kill("SIGTERM");
    await serve.child.status;
    assert.ok(started, await serve.stderr);
    assert.equal(await Deno.stat(marker).catch(() => null), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main serve refuses a plugin option typo in pyproxy.json, naming the file and the field", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-cli-test-" });
  try {
    const config = `${dir}/pyproxy.json`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({ plugins: { reconnect: { maxCrash: 1 } } }),
    );
    const r = await cli(["serve", "--port", "0", "--config", config]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr.trimEnd(),
      `error: plugins.reconnect: Cannot create reconnect plugin: unknown option 'maxCrash' (known: heartbeatInterval, heartbeatTimeout, backoff, maxCrashes, crashWindow, hangGrace, failedRetryAfter) (at ${config}: plugins.reconnect)`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main serve --autoscale min:max turns the autoscale plugin on with those bounds, over pyproxy.json's other options", async () => {
  await using dir = await tempDir();
  await Deno.copyFile(
    `${ROOT}/examples/models/doubler.py`,
    `${dir.path}/doubler.py`,
  );
  const config = `${dir.path}/pyproxy.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({ plugins: { autoscale: { min: 2, upAfterMs: 500 } } }),
  );
  {
    await using serve = await startServe([
      "--port",
      "0",
      "--workers",
      "1",
      "--models",
      dir.path,
      "--config",
      config,
      "--autoscale",
      "1:3",
    ]);
    serve.child.kill("SIGINT");
    assert.equal((await serve.child.status).code, 0);
    assert.match(await serve.stderr, /Autoscaling between 1 and 3 workers/);
  }
  for (
    const [flag, message] of [
      [
        "3:1",
        "error: Cannot create autoscale plugin: max: expected at least min (3) (got 1) (at command line: --autoscale)",
      ],
      [
        "0:",
        "error: Cannot create autoscale plugin: min: expected an integer from 1 to 1024 (got 0) (at command line: --autoscale)",
      ],
      [
        "4",
        'error: autoscale: expected min:max, e.g. 1:4 (either may be left out: 2:, :8; got "4") (at command line: --autoscale)',
      ],
    ]
  ) {
    const r = await cli(["serve", "--port", "0", "--autoscale", flag!]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trimEnd(), message);
  }
});

Deno.test("main serve --env sets every worker's environment over pyproxy.json's env, {worker} and {index} filled in", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir.path}/env_of.py`,
    "import os\n\n\nclass EnvOf:\n    def execute(self, msg):\n" +
      "        return {k: os.environ.get(k) for k in msg['names']}\n",
  );
  const config = `${dir.path}/pyproxy.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({ env: { FROM_FILE: "file", BOTH: "file" } }),
  );
  await using serve = await startServe([
    "--port",
    "0",
    "--workers",
    "1",
    "--models",
    dir.path,
    "--config",
    config,
    "--env",
    "BOTH=cli-{worker}-{index}",
    "--env",
    "WITH_EQ=a=b",
    "--env",
    "EMPTY=",
    "--env",
    "TWICE=first",
    "--env",
    "TWICE=last",
  ]);
  const url = /listening on (http:\/\/\S+)/.exec(serve.banner)?.[1];
  assert.ok(url, serve.banner);
  const res = await fetch(`${url}/v1/models/env_of/execute`, {
    method: "POST",
    body: JSON.stringify({
      names: ["FROM_FILE", "BOTH", "WITH_EQ", "EMPTY", "TWICE"],
    }),
  });
  assert.deepEqual(await res.json(), {
    FROM_FILE: "file",
    BOTH: "cli-w1-0",
    WITH_EQ: "a=b",
    EMPTY: "",
    TWICE: "last",
  });
  serve.child.kill("SIGINT");
  assert.equal((await serve.child.status).code, 0);
});
