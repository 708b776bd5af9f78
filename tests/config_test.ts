import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import {
  loadConfig,
  type ModelEntry,
  parseConfig,
  resolveConfig,
} from "../src/gateway/config.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err.message;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("parseConfig names the bad field and where it is", () => {
  assert.equal(
    configError(() => parseConfig({ workers: 0 })),
    "workers: expected an integer from 1 to 1024 (at pyproxy.json: workers)",
  );
  assert.equal(
    configError(() =>
      parseConfig({ limits: { bodyLimit: "1mb" } }, "/etc/pyproxy.json")
    ),
    "limits.bodyLimit: expected an integer >= 1 (at /etc/pyproxy.json: limits.bodyLimit)",
  );
  // Shorter integers may be safe ones, which the gateway does not look at.
  for (const bad of [15, 0, 4300.5, "4300", null]) {
    assert.equal(
      configError(() => parseConfig({ limits: { maxIntegerDigits: bad } })),
      "limits.maxIntegerDigits: expected an integer >= 16 (at pyproxy.json: limits.maxIntegerDigits)",
      String(bad),
    );
  }
  for (const bad of [0, 1.5, "800"]) {
    assert.equal(
      configError(() => parseConfig({ limits: { maxJsonDepth: bad } })),
      "limits.maxJsonDepth: expected an integer >= 1 (at pyproxy.json: limits.maxJsonDepth)",
      String(bad),
    );
  }
  for (const bad of [-1, 1.5, "2"]) {
    assert.equal(
      configError(() => parseConfig({ limits: { maxRelocations: bad } })),
      "limits.maxRelocations: expected an integer >= 0 (at pyproxy.json: limits.maxRelocations)",
    );
  }
  assert.equal(
    configError(() => parseConfig({ limits: { relocationWindow: 0 } })),
    "limits.relocationWindow: expected an integer >= 1 (at pyproxy.json: limits.relocationWindow)",
  );
  for (const bad of [-1, 1.5, "3s"]) {
    assert.equal(
      configError(() => parseConfig({ limits: { loadCrashWindow: bad } })),
      "limits.loadCrashWindow: expected an integer >= 0 (at pyproxy.json: limits.loadCrashWindow)",
    );
  }
  assert.equal(
    parseConfig({ limits: { loadCrashWindow: 0 } }).limits?.loadCrashWindow,
    0,
  );
  for (const bad of [-1, 1.5, "64Mi"]) {
    assert.equal(
      configError(() => parseConfig({ limits: { evalReplayBudget: bad } })),
      "limits.evalReplayBudget: expected an integer >= 0 (at pyproxy.json: limits.evalReplayBudget)",
    );
  }
  assert.equal(
    configError(() =>
      parseConfig({
        models: [{ name: "echo", file: "echo.py" }, { name: "x" }],
      })
    ),
    "models[1].file: is required (at pyproxy.json: models[1].file)",
  );
  assert.match(
    configError(() => parseConfig({ wrokers: 2 })),
    /^wrokers: unknown field \(allowed: .*workers/,
  );
  assert.match(
    configError(() => parseConfig({ logLevels: { "pyproxy.pool": "loud" } })),
    /^logLevels\["pyproxy.pool"\]: expected one of trace, debug/,
  );
  // A category that is not pyproxy's would do nothing, silently.
  for (const category of ["gateway", "", "pyproxy.", "Pyproxy.pool"]) {
    assert.match(
      configError(() => parseConfig({ logLevels: { [category]: "debug" } })),
      /^logLevels: unknown category ".*": expected pyproxy or a category under it/,
      category,
    );
  }
  assert.doesNotThrow(() =>
    parseConfig({
      logLevels: { pyproxy: "debug", "pyproxy.python.my-model": "error" },
    })
  );
  assert.match(
    configError(() => parseConfig({ token: "short" })),
    /^token: expected a token of at least 16 characters/,
  );
  assert.match(
    configError(() => parseConfig([])),
    /^expected an object \(at pyproxy.json\)$/,
  );
});

Deno.test("parseConfig refuses an array where an object is expected (valibot's record and object schemas take arrays)", () => {
  const cases: Array<[unknown, string]> = [
    [
      { plugins: { spillover: [1] } },
      'plugins.spillover: expected an options object, false, or {"module": "<file>", "options": {...}}',
    ],
    [{ plugins: [{ threshold: 1 }] }, "plugins: expected an object"],
    [
      { models: [{ name: "e", file: "echo.py", options: [1] }] },
      "models[0].options: expected an object",
    ],
    [{ models: [["e", "echo.py"]] }, "models[0]: expected an object"],
    [
      { logLevels: ["debug"] },
      "logLevels: expected an object of category → level",
    ],
    [{ limits: [] }, "limits: expected an object"],
    [{ channels: [] }, "channels: expected an object"],
    [{ cors: [] }, "cors: expected an object"],
    [{ plugins: null }, "plugins: expected an object"],
    // An origin a browser never sends would leave CORS off without a word.
    ...[
      "app.example.com",
      "https://app.example.com/",
      "https://a.example:443",
      "null",
      "https://u@a.example",
    ]
      .map((origin): [unknown, string] => [
        { cors: { origins: ["https://ok.example", origin] } },
        'cors.origins[1]: expected an origin, scheme://host[:port] with no path (such as "https://app.example.com"), or "*"',
      ]),
  ];
  for (const [config, message] of cases) {
    const where = message.slice(0, message.indexOf(":"));
    assert.equal(
      configError(() => parseConfig(config)),
      `${message} (at pyproxy.json: ${where})`,
    );
  }
});

Deno.test("parseConfig accepts origins as browsers send them", () => {
  const origins = [
    "https://app.example.com",
    "http://localhost:5173",
    "http://127.0.0.1:8080",
    "http://[::1]:3000",
    "HTTPS://App.Example.com",
    "chrome-extension://abcdefghijklmnop",
    "*",
  ];
  assert.deepEqual(parseConfig({ cors: { origins } }).cors?.origins, origins);
});

Deno.test("parseConfig accepts the sample config", async () => {
  const text = await Deno.readTextFile(
    new URL("../examples/pyproxy.json", import.meta.url),
  );
  const config = parseConfig(JSON.parse(text));
  assert.equal(config.workers, 2);
  assert.equal(config.models?.[1]?.name, "scorer");
});

Deno.test("resolveConfig applies defaults, the file, then the flags", () => {
  const config = resolveConfig({
    cwd: "/home/me",
    fileDir: "/srv/app",
    file: {
      workers: 4,
      port: 9000,
      modelsDir: "models",
      limits: {
        bodyLimit: 10,
        requestTimeout: 5,
        loadTimeout: 9,
        streamIdleTimeout: 11,
      },
    },
    cli: { port: 0, limits: { requestTimeout: 7, streamIdleTimeout: 12 } },
  });
  assert.equal(config.host, "127.0.0.1");
  assert.equal(config.port, 0);
  assert.equal(config.workers, 4);
  assert.equal(config.modelsDir, "/srv/app/models");
  assert.deepEqual(config.limits, {
    bodyLimit: 10,
    maxIntegerDigits: 4300,
    maxJsonDepth: 800,
    requestTimeout: 7,
    loadTimeout: 9,
    streamIdleTimeout: 12,
    streamKeepAlive: 15_000,
    keepAliveTimeout: 75_000,
    shutdownGrace: 10000,
    shutdownDelay: 0,
  });
  assert.equal(
    resolveConfig({ cwd: "/", cli: {} }).limits.loadTimeout,
    120_000,
  );
  assert.equal(
    resolveConfig({
      cwd: "/",
      file: { limits: { maxIntegerDigits: 9000 } },
      cli: { limits: { maxIntegerDigits: 20_000 } },
    }).limits.maxIntegerDigits,
    20_000,
  );
  assert.equal(
    resolveConfig({
      cwd: "/",
      file: { limits: { maxJsonDepth: 850 } },
      cli: { limits: { maxJsonDepth: 880 } },
    }).limits.maxJsonDepth,
    880,
  );
  assert.equal(
    resolveConfig({ cwd: "/", cli: {} }).limits.streamIdleTimeout,
    60_000,
  );
  assert.equal(
    resolveConfig({
      cwd: "/",
      file: { limits: { streamKeepAlive: 20_000 } },
      cli: { limits: { streamKeepAlive: 5_000 } },
    }).limits.streamKeepAlive,
    5_000,
  );
  assert.equal(
    resolveConfig({ cwd: "/", cli: {} }).limits.streamKeepAlive,
    15_000,
  );
  // No bound on a stream's first item unless one is set.
  assert.equal(
    resolveConfig({ cwd: "/", cli: {} }).limits.streamFirstItemTimeout,
    undefined,
  );
  assert.equal(
    resolveConfig({
      cwd: "/",
      file: { limits: { streamFirstItemTimeout: 55_000 } },
    }).limits.streamFirstItemTimeout,
    55_000,
  );
  // Absent: the pool's default (64 Mi); the flag overrides the file.
  assert.equal(
    resolveConfig({ cwd: "/", cli: {} }).limits.evalReplayBudget,
    undefined,
  );
  assert.equal(
    resolveConfig({
      cwd: "/",
      file: { limits: { evalReplayBudget: 5 } },
      cli: { limits: { evalReplayBudget: 0 } },
    }).limits.evalReplayBudget,
    0,
  );
  assert.equal(config.models, "auto");
  assert.equal(config.allowEval, false);
  assert.equal(config.allowManage, false);
  assert.equal(config.cancelOnDisconnect, true);
  assert.equal(config.schedBatch, true);
});

Deno.test("resolveConfig: schedBatch from the file, a flag turning it off, a bad value", () => {
  const at = (file: Record<string, unknown>, cli: Record<string, unknown>) =>
    resolveConfig({ cwd: "/home/me", file, cli }).schedBatch;
  assert.equal(at({ schedBatch: false }, {}), false);
  assert.equal(at({ schedBatch: true }, { schedBatch: false }), false);
  assert.equal(at({}, {}), true);
  assert.throws(() => parseConfig({ schedBatch: 1 }), /schedBatch/);
});

Deno.test("resolveConfig: oomScoreAdj 500 by default, from the file or the flag, 0 to 1000", () => {
  const at = (file: Record<string, unknown>, cli: Record<string, unknown>) =>
    resolveConfig({ cwd: "/home/me", file, cli }).oomScoreAdj;
  assert.equal(at({}, {}), 500);
  assert.equal(at({ oomScoreAdj: 0 }, {}), 0);
  assert.equal(at({ oomScoreAdj: 0 }, { oomScoreAdj: 900 }), 900);
  for (const bad of [1001, -1, 1.5, "500"]) {
    assert.throws(() => parseConfig({ oomScoreAdj: bad }), /oomScoreAdj/);
  }
});

Deno.test("parseConfig refuses the metrics' reserved labels as model names", () => {
  for (const name of ["_unknown", "_other"]) {
    assert.match(
      configError(() => parseConfig({ models: [{ name, file: "m.py" }] })),
      /models\[0\]\.name: expected a model name: a name other than _unknown and _other/,
    );
  }
  parseConfig({ models: [{ name: "_private", file: "m.py" }] });
});

Deno.test("resolveConfig: cancelOnDisconnect from the file, a flag turning it off, a bad value", () => {
  const fromFile = resolveConfig({
    cwd: "/home/me",
    file: { cancelOnDisconnect: false },
    cli: {},
  });
  assert.equal(fromFile.cancelOnDisconnect, false);
  const fromFlag = resolveConfig({
    cwd: "/home/me",
    file: { cancelOnDisconnect: true },
    cli: { cancelOnDisconnect: false },
  });
  assert.equal(fromFlag.cancelOnDisconnect, false);
  assert.throws(
    () => parseConfig({ cancelOnDisconnect: "no" }),
    /cancelOnDisconnect/,
  );
});

Deno.test("resolveConfig: compress off by default, on from the file or a flag, minBytes from either, a bad value", () => {
  const resolve = (
    file: Record<string, unknown>,
    cli: Record<string, unknown> = {},
  ) => resolveConfig({ cwd: "/home/me", file, cli }).compress;
  assert.equal(resolve({}), false);
  assert.deepEqual(resolve({ compress: true }), { minBytes: 1024 });
  assert.deepEqual(resolve({ compress: { minBytes: 10 } }), { minBytes: 10 });
  assert.deepEqual(resolve({ compress: {} }), { minBytes: 1024 });
  assert.equal(
    resolve({ compress: { minBytes: 10 } }, { compress: false }),
    false,
  );
  assert.deepEqual(
    resolve({ compress: { minBytes: 10 } }, { compress: true }),
    {
      minBytes: 10,
    },
  );
  assert.deepEqual(
    resolve({ compress: false }, { compress: { minBytes: 5 } }),
    {
      minBytes: 5,
    },
  );
  assert.throws(
    () => parseConfig({ compress: "gzip" }),
    /compress: expected true, false or \{ minBytes \}/,
  );
  assert.throws(
    () => parseConfig({ compress: { minBytes: 0 } }),
    /compress\.minBytes: expected an integer >= 1/,
  );
  assert.throws(
    () => parseConfig({ compress: { level: 9 } }),
    /compress: expected true, false or \{ minBytes \}/,
  );
});

Deno.test("resolveConfig resolves --models against the working directory and ignores the file's list", () => {
  const config = resolveConfig({
    cwd: "/home/me",
    file: { models: [{ name: "a", file: "a.py" }] },
    cli: { modelsDir: "../shared/models" },
  });
  assert.equal(config.modelsDir, "/home/shared/models");
  assert.equal(config.models, "auto");
});

Deno.test("resolveConfig resolves --log-dir against the working directory, the file's logDir against its directory", () => {
  assert.equal(resolveConfig({ cwd: "/" }).logDir, undefined);
  assert.equal(
    resolveConfig({
      cwd: "/home/me",
      fileDir: "/etc/pyproxy",
      file: { logDir: "logs" },
    }).logDir,
    "/etc/pyproxy/logs",
  );
  assert.equal(
    resolveConfig({
      cwd: "/home/me",
      fileDir: "/etc/pyproxy",
      file: { logDir: "logs" },
      cli: { logDir: "../var/log" },
    }).logDir,
    "/home/var/log",
  );
  // "-" is stderr, not a directory named "-" in either place.
  for (const where of [{ cli: { logDir: "-" } }, { file: { logDir: "-" } }]) {
    assert.equal(
      resolveConfig({ cwd: "/home/me", fileDir: "/etc/pyproxy", ...where })
        .logDir,
      "-",
    );
  }
});

Deno.test("resolveConfig defaults to the bundled example models", () => {
  const config = resolveConfig({ cwd: "/" });
  assert.ok(config.modelsDir.endsWith("/examples/models"), config.modelsDir);
});

Deno.test("resolveConfig refuses CORS credentials for any origin (browsers would refuse every response)", () => {
  assert.equal(
    configError(() =>
      resolveConfig({
        cwd: "/",
        file: { cors: { origins: ["*"], credentials: true } },
        configPath: "/srv/pyproxy.json",
        envToken: "4a8e2c7f1b9d3e6a0c5f",
      })
    ),
    'cors: credentials cannot be used with the origin "*" (browsers refuse credentialed responses to any origin): list the origins (at /srv/pyproxy.json: cors)',
  );
  for (
    const cors of [
      { origins: ["https://app.example.com"], credentials: true },
    ]
  ) {
    assert.deepEqual(resolveConfig({ cwd: "/", file: { cors } }).cors, cors);
  }
});

Deno.test('resolveConfig requires a token for cors origins "*" and allowedHosts "*" (any web page could call the gateway)', () => {
  assert.equal(
    configError(() =>
      resolveConfig({ cwd: "/", file: { cors: { origins: ["*"] } } })
    ),
    'cors: cors.origins "*" lets every web page call the gateway: it requires a token (--token or --token-file, the PYPROXY_TOKEN or PYPROXY_TOKEN_FILE environment variable, or "token" or "tokenFile" in pyproxy.json) (at config: cors)',
  );
  assert.equal(
    configError(() =>
      resolveConfig({ cwd: "/", cli: { allowedHosts: ["*"] } })
    ),
    'allowedHosts: allowedHosts "*" turns off the Host check that stops DNS rebinding: it requires a token (--token or --token-file, the PYPROXY_TOKEN or PYPROXY_TOKEN_FILE environment variable, or "token" or "tokenFile" in pyproxy.json) (at config: allowedHosts)',
  );
  const token = "4a8e2c7f1b9d3e6a0c5f";
  assert.deepEqual(
    resolveConfig({
      cwd: "/",
      file: { cors: { origins: ["*"] }, allowedHosts: ["*"] },
      envToken: token,
    }).allowedHosts,
    ["*"],
  );
});

Deno.test("resolveConfig refuses a non-loopback address without a token", () => {
  assert.match(
    configError(() => resolveConfig({ cwd: "/", cli: { host: "0.0.0.0" } })),
    /^Cannot serve on 0\.0\.0\.0: binding a non-loopback address requires a token/,
  );
  // The token file among the ways out: a mounted secret is a pod's.
  assert.match(
    configError(() => resolveConfig({ cwd: "/", cli: { host: "0.0.0.0" } })),
    /requires a token \(--token or --token-file, the PYPROXY_TOKEN or PYPROXY_TOKEN_FILE environment variable, or "token" or "tokenFile" in pyproxy\.json\)$/,
  );
  const withToken = resolveConfig({
    cwd: "/",
    cli: { host: "0.0.0.0" },
    envToken: "4a8e2c7f1b9d3e6a",
  });
  assert.equal(withToken.token, "4a8e2c7f1b9d3e6a");
  assert.equal(
    resolveConfig({ cwd: "/", cli: { host: "localhost" } }).token,
    undefined,
  );
  assert.match(
    configError(() => resolveConfig({ cwd: "/", envToken: "short" })),
    /at least 16 characters/,
  );
});

Deno.test("parseConfig and resolveConfig refuse a token no client can present, naming where it came from", () => {
  const unusable = /expected a token without leading or trailing whitespace/;
  for (
    const token of [
      " ".repeat(16),
      " 0123456789abcdef",
      "0123456789abcdef\n",
      "0123456789\tabcdef",
      // Beyond U+00FF: fetch refuses it in a header, curl sends its UTF-8
      // bytes, which the gateway reads as Latin-1: no client could present it.
      "token-0123456789abc\u2713",
      "token-0123456789-\u4e2d",
    ]
  ) {
    assert.match(
      configError(() => parseConfig({ token })),
      unusable,
      JSON.stringify(token),
    );
  }
  assert.match(
    configError(() =>
      parseConfig({ token: " ".repeat(16) }, "/srv/pyproxy.json")
    ),
    /\(at \/srv\/pyproxy\.json: token\)$/,
  );
  assert.equal(
    configError(() => resolveConfig({ cwd: "/", envToken: "short" })),
    "token: expected a token of at least 16 characters (at environment: PYPROXY_TOKEN)",
  );
  assert.equal(
    configError(() =>
      resolveConfig({ cwd: "/", envToken: ` ${"x".repeat(16)} ` })
    ),
    "token: expected a token without leading or trailing whitespace, control characters or characters beyond U+00FF (at environment: PYPROXY_TOKEN)",
  );
  // Spaces inside a token are sent and compared as they are.
  assert.equal(
    parseConfig({ token: "correct horse battery staple" }).token,
    "correct horse battery staple",
  );
});

Deno.test("resolveConfig lets a flag token win over the environment and the file", () => {
  const config = resolveConfig({
    cwd: "/",
    file: { token: "file-token-0123456789" },
    cli: { token: "flag-token-0123456789" },
    envToken: "env-token-0123456789",
  });
  assert.equal(config.token, "flag-token-0123456789");
});

Deno.test("loadConfig reads a file and reports parse errors with its path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/pyproxy.json`,
      JSON.stringify({ workers: 3, modelsDir: "m", logLevel: "debug" }),
    );
    const config = await loadConfig({
      path: `${dir}/pyproxy.json`,
      cli: { port: 1234 },
    });
    assert.equal(config.workers, 3);
    assert.equal(config.port, 1234);
    assert.equal(config.modelsDir, `${await Deno.realPath(dir)}/m`);
    assert.equal(config.logLevel, "debug");
    await Deno.writeTextFile(`${dir}/bad.json`, "{ workers: 2 }");
    await assert.rejects(loadConfig({ path: `${dir}/bad.json` }), (err) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /^Cannot parse config file .*bad\.json: /);
      return true;
    });
    await Deno.writeTextFile(`${dir}/wrong.json`, JSON.stringify({ port: -1 }));
    await assert.rejects(
      loadConfig({ path: `${dir}/wrong.json` }),
      /port: expected an integer from 0 to 65535 \(at .*wrong\.json: port\)/,
    );
    await assert.rejects(
      loadConfig({ path: `${dir}/missing.json` }),
      /Cannot read config file/,
    );
    await assert.rejects(
      loadConfig({ cli: { workers: 0 } }),
      /workers: .* \(at command line: workers\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfig without a models directory falls back to ./models, else fails clearly", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir());
  const base = defaultRuntime();
  // As when installed from JSR/npm: the example models are not there.
  const examples = await Deno.realPath(
    new URL("../examples/models", import.meta.url),
  );
  const runtime: Runtime = {
    ...base,
    realPath: (path) =>
      path === "." ? Promise.resolve(dir) : base.realPath(path),
    stat: (path) => path === examples ? Promise.resolve(null) : base.stat(path),
  };
  try {
    await assert.rejects(loadConfig({ runtime }), (err) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /^Cannot find a models directory: .*--models/);
      assert.ok(err.message.includes(`${dir}/models`), err.message);
      return true;
    });
    await Deno.mkdir(`${dir}/models`);
    assert.equal((await loadConfig({ runtime })).modelsDir, `${dir}/models`);
    assert.equal(
      (await loadConfig({ cli: { modelsDir: "elsewhere" }, runtime }))
        .modelsDir,
      `${dir}/elsewhere`,
    );
    assert.equal((await loadConfig()).modelsDir, examples);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfig prefers ./models to a checkout's example models", async () => {
  // serve run in a project from a checkout elsewhere: the project's models.
  const dir = await Deno.realPath(await Deno.makeTempDir());
  const base = defaultRuntime();
  const examples = await Deno.realPath(
    new URL("../examples/models", import.meta.url),
  );
  const runtime: Runtime = {
    ...base,
    realPath: (path) =>
      path === "." ? Promise.resolve(dir) : base.realPath(path),
  };
  try {
    assert.equal((await loadConfig({ runtime })).modelsDir, examples);
    await Deno.mkdir(`${dir}/models`);
    await Deno.chmod(`${dir}/models`, 0o755);
    assert.equal((await loadConfig({ runtime })).modelsDir, `${dir}/models`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfig refuses a pyproxy.json or ./models that another user could have put in the working directory", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir());
  const base = defaultRuntime();
  const examples = await Deno.realPath(
    new URL("../examples/models", import.meta.url),
  );
  // Another user's files, as the runtime reports them (tests cannot chown).
  const foreign = new Set<string>();
  const runtime: Runtime = {
    ...base,
    realPath: (path) =>
      path === "." ? Promise.resolve(dir) : base.realPath(path),
    stat: (path) => path === examples ? Promise.resolve(null) : base.stat(path),
    owner: (path) =>
      foreign.has(path)
        ? Promise.resolve({ uid: 4242, mode: 0o40755 })
        : base.owner!(path),
  };
  const refused = (flag: string, why: RegExp) => (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.match(
      err.message,
      /^Cannot use \/.* found in the working directory: /,
    );
    assert.match(err.message, why);
    assert.ok(err.message.endsWith(`to use it anyway`), err.message);
    assert.ok(err.message.includes(flag), err.message);
    return true;
  };
  try {
    await Deno.writeTextFile(
      `${dir}/pyproxy.json`,
      JSON.stringify({ workers: 2 }),
    );
    await Deno.chmod(`${dir}/pyproxy.json`, 0o644);
    await Deno.mkdir(`${dir}/models`);
    await Deno.chmod(`${dir}/models`, 0o755);
    // This user's own files are used.
    let config = await loadConfig({ runtime });
    assert.equal(config.workers, 2);
    assert.equal(config.modelsDir, `${dir}/models`);
    foreign.add(`${dir}/pyproxy.json`);
    await assert.rejects(
      loadConfig({ runtime }),
      refused("--config", /: it belongs to another user \(uid 4242\)/),
    );
    // Chosen rather than found: used.
    config = await loadConfig({ path: `${dir}/pyproxy.json`, runtime });
    assert.equal(config.workers, 2);
    foreign.clear();
    await Deno.chmod(`${dir}/pyproxy.json`, 0o666);
    await assert.rejects(
      loadConfig({ runtime }),
      refused("--config", /every user can write to it \(mode 0666\)/),
    );
    await Deno.remove(`${dir}/pyproxy.json`);
    foreign.add(`${dir}/models`);
    await assert.rejects(
      loadConfig({ runtime }),
      refused("--models", /: it belongs to another user \(uid 4242\)/),
    );
    assert.equal(
      (await loadConfig({ cli: { modelsDir: "models" }, runtime })).modelsDir,
      `${dir}/models`,
    );
    foreign.clear();
    foreign.add(dir);
    await assert.rejects(
      loadConfig({ runtime }),
      refused("--models", /: its directory belongs to another user/),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resolveConfig generates a token for eval or model management without one", () => {
  const tokens = new Set<string>();
  for (const cli of [{ allowEval: true }, { allowManage: true }]) {
    const config = resolveConfig({ cwd: "/srv", cli });
    assert.equal(config.tokenGenerated, true);
    assert.match(config.token as string, /^[A-Za-z0-9_-]{32}$/);
    tokens.add(config.token as string);
  }
  assert.equal(tokens.size, 2, "a new token for every start");
  // A token of the user's own is kept; nothing is generated without eval
  // or management.
  const own = resolveConfig({
    cwd: "/srv",
    cli: { allowEval: true },
    envToken: "my-own-token-0123456789",
  });
  assert.equal(own.token, "my-own-token-0123456789");
  assert.equal(own.tokenGenerated, undefined);
  const plain = resolveConfig({ cwd: "/srv", cli: {} });
  assert.equal(plain.token, undefined);
  assert.equal(plain.tokenGenerated, undefined);
  // A token the user must choose stays required where one was required.
  assert.throws(
    () =>
      resolveConfig({
        cwd: "/srv",
        cli: { allowEval: true, host: "0.0.0.0" },
      }),
    /binding a non-loopback address requires a token/,
  );
});

Deno.test("serve refuses a hand-made config with eval or model management and no token", async () => {
  const { serve } = await import("../src/gateway/serve.ts");
  for (const cli of [{ allowEval: true }, { allowManage: true }]) {
    const config = resolveConfig({ cwd: "/srv", cli: { ...cli, port: 0 } });
    delete config.token;
    await assert.rejects(
      serve({ ...config, modelsDir: Deno.cwd() }),
      (err: Error) =>
        err instanceof ConfigError &&
        /^(allowEval|allowManage): eval and model management require a token/
          .test(err.message),
    );
  }
});

Deno.test("loadConfig keeps integers beyond ±2^53 in a model's options exact, and refuses them where a number is expected", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/pyproxy.json`,
      '{"modelsDir":".","models":[{"name":"ids","file":"ids.py","options":{"first":12345678901234567891,"safe":9007199254740991}}]}',
    );
    const config = await loadConfig({ path: `${dir}/pyproxy.json` });
    // JSON.parse gave 12345678901234567000: the model got another id than the file says.
    assert.deepEqual((config.models?.[0] as ModelEntry).options, {
      first: 12345678901234567891n,
      safe: 9007199254740991,
    });
    await Deno.writeTextFile(
      `${dir}/big.json`,
      '{"workers":12345678901234567891}',
    );
    await assert.rejects(
      loadConfig({ path: `${dir}/big.json` }),
      (err) => err instanceof ConfigError && /workers: /.test(err.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseConfig: models[].timeout is an integer number of ms from 1 to 2^31 − 1", () => {
  const entry = (timeout: unknown) => ({
    models: [{ name: "m", file: "m.py", timeout }],
  });
  assert.equal(parseConfig(entry(120_000)).models?.[0]?.timeout, 120_000);
  assert.equal(
    parseConfig(entry(2 ** 31 - 1)).models?.[0]?.timeout,
    2 ** 31 - 1,
  );
  for (const bad of [0, -1, 1.5, "100", 2 ** 31, null]) {
    assert.equal(
      configError(() => parseConfig(entry(bad))),
      "models[0].timeout: expected an integer from 1 to 2147483647 (at pyproxy.json: models[0].timeout)",
      String(bad),
    );
  }
});

Deno.test("parseConfig: models[].workers is an integer from 1 to 1024", () => {
  const entry = (workers: unknown) => ({
    models: [{ name: "m", file: "m.py", workers }],
  });
  assert.equal(parseConfig(entry(2)).models?.[0]?.workers, 2);
  assert.equal(parseConfig(entry(1024)).models?.[0]?.workers, 1024);
  for (const bad of [0, -1, 1.5, "2", 1025, null]) {
    assert.equal(
      configError(() => parseConfig(entry(bad))),
      "models[0].workers: expected an integer from 1 to 1024 (at pyproxy.json: models[0].workers)",
      String(bad),
    );
  }
});

Deno.test("parseConfig: models[] refuses a name and version listed twice, and one name with a version and without, naming both entries (was caught only once the workers had started)", () => {
  const models = (...entries: Array<[string, string?]>) => ({
    models: entries.map(([name, version]) => ({
      name,
      file: "m.py",
      ...(version === undefined ? {} : { version }),
    })),
  });
  assert.deepEqual(
    parseConfig(models(["m", "1"], ["m", "2"], ["x"])).models?.map((m) =>
      m.version
    ),
    ["1", "2", undefined],
  );
  const cases: Array<[ReturnType<typeof models>, string]> = [
    [
      models(["m", "1"], ["x"], ["m", "1"]),
      "models[2]: model 'm' version '1' is listed twice (models[0] too): list each name and version once (at pyproxy.json: models[2])",
    ],
    [
      models(["m"], ["m"]),
      "models[1]: model 'm' is listed twice (models[0] too): list each name once (at pyproxy.json: models[1])",
    ],
    [
      models(["m", "1"], ["m"]),
      "models[1]: model 'm' without a version: models[0] lists 'm' with version '1', and a name is loaded with versions or without (give every entry of 'm' a version, or none) (at pyproxy.json: models[1])",
    ],
    [
      models(["m"], ["m", "2"]),
      "models[1]: model 'm' version '2': models[0] lists 'm' without a version, and a name is loaded with versions or without (give every entry of 'm' a version, or none) (at pyproxy.json: models[1])",
    ],
  ];
  for (const [config, message] of cases) {
    assert.equal(configError(() => parseConfig(config)), message);
  }
});

Deno.test("resolveConfig: models given by a program (cli) are checked for the same conflicts as the file's, before any worker starts (were caught only by the pool)", () => {
  const cli = (...entries: Array<[string, string?]>) => ({
    models: entries.map(([name, version]) => ({
      name,
      file: "m.py",
      ...(version === undefined ? {} : { version }),
    })),
  });
  assert.deepEqual(
    resolveConfig({ cwd: "/srv", cli: cli(["m", "1"], ["m", "2"]) }).models,
    cli(["m", "1"], ["m", "2"]).models,
  );
  assert.equal(
    configError(() => resolveConfig({ cwd: "/srv", cli: cli(["m"], ["m"]) })),
    "models[1]: model 'm' is listed twice (models[0] too): list each name once (at command line: models[1])",
  );
  assert.equal(
    configError(() =>
      resolveConfig({ cwd: "/srv", cli: cli(["m", "1"], ["m"]) })
    ),
    "models[1]: model 'm' without a version: models[0] lists 'm' with version '1', and a name is loaded with versions or without (give every entry of 'm' a version, or none) (at command line: models[1])",
  );
});

Deno.test("parseConfig: env takes variable names to strings, and refuses what the host sets for the server's own start and protocol", () => {
  assert.deepEqual(
    parseConfig({
      env: { OMP_NUM_THREADS: "2", CUDA_VISIBLE_DEVICES: "{index}" },
    })
      .env,
    { OMP_NUM_THREADS: "2", CUDA_VISIBLE_DEVICES: "{index}" },
  );
  assert.equal(
    configError(() => parseConfig({ env: { OMP_NUM_THREADS: 2 } })),
    'env.OMP_NUM_THREADS: expected a string (a number too: "2", not 2) (at pyproxy.json: env.OMP_NUM_THREADS)',
  );
  assert.match(
    configError(() => parseConfig({ env: { PYPROXY_TOKEN: "x" } })),
    /^env\.PYPROXY_TOKEN: PYPROXY_ names are the host's own/,
  );
  for (
    const name of [
      "PYTHONPATH",
      "PYTHONHOME",
      "PYTHONPLATLIBDIR",
      "PYTHONUNBUFFERED",
      "PYTHONSAFEPATH",
      "PYTHONINSPECT",
    ]
  ) {
    assert.match(
      configError(() => parseConfig({ env: { [name]: "1" } })),
      new RegExp(`^env\\.${name}: cannot be set for the workers: `),
    );
  }
  assert.match(
    configError(() => parseConfig({ env: { "A-B": "1" } })),
    /^env\["A-B"\]: expected a variable name/,
  );
  assert.match(
    configError(() => parseConfig({ env: { A: "a\0b" } })),
    /^env\.A: expected a value without a NUL character/,
  );
  // Beyond Linux's MAX_ARG_STRLEN every worker's spawn would fail.
  assert.match(
    configError(() => parseConfig({ env: { A: "x".repeat(200_000) } })),
    /^env\.A: expected a value without a NUL character, under 128 KiB/,
  );
  assert.match(
    configError(() => parseConfig({ env: { A: "é".repeat(70_000) } })),
    /under 128 KiB/,
  );
  assert.deepEqual(parseConfig({ env: { A: "x".repeat(100_000) } }).env, {
    A: "x".repeat(100_000),
  });
  // The name counts with the value: a long name failed every spawn too.
  const longName = "A".repeat(100_000);
  const nameError = configError(() =>
    parseConfig({ env: { [longName]: "x".repeat(100_000) } })
  );
  assert.match(nameError, /: expected a name and value under 128 KiB together/);
  assert.ok(!nameError.includes("x".repeat(64)), "the value is not printed");
  // So do many entries each under the bound (Linux's ARG_MAX, 2 MiB).
  const many = Object.fromEntries(
    Array.from({ length: 30 }, (_, i) => [`A${i}`, "x".repeat(100_000)]),
  );
  const manyError = configError(() => parseConfig({ env: many }));
  assert.match(manyError, /^env: expected variables under 1 MiB together/);
  assert.ok(!manyError.includes("xxxxxxxx"), "no value is printed");
  assert.equal(
    Object.keys(
      parseConfig({
        env: Object.fromEntries(Object.entries(many).slice(0, 10)),
      }).env!,
    ).length,
    10,
  );
  assert.match(
    configError(() => parseConfig({ env: ["A=1"] })),
    /^env: expected an object of variable name → value/,
  );
});

Deno.test("resolveConfig: env is the file's under the command line's", () => {
  const config = resolveConfig({
    cwd: "/srv",
    file: { env: { A: "file", B: "file" } },
    cli: { env: { B: "cli" } },
  });
  assert.deepEqual(config.env, { A: "file", B: "cli" });
  assert.deepEqual(resolveConfig({ cwd: "/srv" }).env, {});
  // Each source under the bound, together over it: every spawn would fail.
  const half = (prefix: string) =>
    Object.fromEntries(
      Array.from(
        { length: 6 },
        (_, i) => [`${prefix}${i}`, "x".repeat(100_000)],
      ),
    );
  assert.throws(
    () =>
      resolveConfig({
        cwd: "/srv",
        file: { env: half("F") },
        cli: { env: half("C") },
      }),
    (error: Error) =>
      error.name === "ConfigError" &&
      /^env: expected variables under 1 MiB together/.test(error.message) &&
      !error.message.includes("xxxxxxxx"),
  );
});

Deno.test("parseConfig refuses forwardHeaders no model may get, naming why", () => {
  const cases: [unknown, string][] = [
    [
      ["host"],
      `forwardHeaders[0]: expected a header name a model may get: "host" is never forwarded: the gateway's (its Host check reads it) (at pyproxy.json: forwardHeaders[0])`,
    ],
    [
      ["accept-language", "Transfer-Encoding"],
      `forwardHeaders[1]: expected a header name a model may get: "Transfer-Encoding" is never forwarded: a hop-by-hop header (at pyproxy.json: forwardHeaders[1])`,
    ],
    [
      ["x tenant"],
      `forwardHeaders[0]: expected a header name a model may get: "x tenant" is not an HTTP header name (at pyproxy.json: forwardHeaders[0])`,
    ],
    [
      ["X-Request-Id"],
      `forwardHeaders[0]: expected a header name a model may get: "X-Request-Id" is never forwarded: the request id's (host.request_id() has it) (at pyproxy.json: forwardHeaders[0])`,
    ],
    [
      "accept-language",
      "forwardHeaders: expected an array of header names (at pyproxy.json: forwardHeaders)",
    ],
    [
      Array.from({ length: 33 }, (_, i) => `x-h${i}`),
      "forwardHeaders: expected at most 32 header names (at pyproxy.json: forwardHeaders)",
    ],
  ];
  for (const [forwardHeaders, message] of cases) {
    assert.equal(
      configError(() => parseConfig({ forwardHeaders })),
      message,
    );
  }
});

Deno.test("resolveConfig lower-cases forwardHeaders, lists each once, and refuses authorization with a token", () => {
  assert.deepEqual(
    resolveConfig({
      cwd: "/",
      file: { forwardHeaders: ["Accept-Language", "x-tenant-id"] },
      cli: { forwardHeaders: ["accept-language", "X-TENANT-ID", "cookie"] },
    }).forwardHeaders,
    ["accept-language", "x-tenant-id", "cookie"],
  );
  assert.deepEqual(resolveConfig({ cwd: "/" }).forwardHeaders, []);
  // Without a token the gateway does not read it: the model may.
  assert.deepEqual(
    resolveConfig({ cwd: "/", cli: { forwardHeaders: ["Authorization"] } })
      .forwardHeaders,
    ["authorization"],
  );
  const refusal = (where: string) =>
    `forwardHeaders: "authorization" cannot be forwarded while the gateway has a token: it holds the gateway's bearer token, which model code would read (send the model's own credentials in another header, such as x-user-token) (at ${where})`;
  assert.equal(
    configError(() =>
      resolveConfig({
        cwd: "/",
        file: { forwardHeaders: ["authorization"], token: "4a8e2c7f1b9d3e6a" },
      })
    ),
    refusal("pyproxy.json: forwardHeaders"),
  );
  assert.equal(
    configError(() =>
      resolveConfig({
        cwd: "/",
        envToken: "4a8e2c7f1b9d3e6a",
        cli: { forwardHeaders: ["Authorization"] },
      })
    ),
    refusal("command line: --forward-header"),
  );
  // A token generated for eval would be handed over just the same.
  assert.equal(
    configError(() =>
      resolveConfig({
        cwd: "/",
        cli: { forwardHeaders: ["authorization"], allowEval: true },
      })
    ),
    refusal("command line: --forward-header"),
  );
  assert.match(
    configError(() =>
      resolveConfig({
        cwd: "/",
        file: {
          forwardHeaders: Array.from({ length: 20 }, (_, i) => `x-f${i}`),
        },
        cli: {
          forwardHeaders: Array.from({ length: 20 }, (_, i) => `x-c${i}`),
        },
      })
    ),
    /^forwardHeaders: expected at most 32 header names, got 40/,
  );
});

Deno.test("resolveConfig: tracing off by default, its endpoint from the flag, the file, then OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", () => {
  const resolve = (
    file: Record<string, unknown>,
    cli: Record<string, unknown> = {},
    otelEnv?: { endpoint?: string; serviceName?: string },
  ) =>
    resolveConfig({
      cwd: "/home/me",
      file: parseConfig(file),
      cli: parseConfig(cli),
      ...(otelEnv === undefined ? {} : { otelEnv }),
    }).tracing;
  assert.equal(resolve({}), undefined);
  // OTEL_SERVICE_NAME alone turns nothing on.
  assert.equal(resolve({}, {}, { serviceName: "svc" }), undefined);
  const file = {
    tracing: {
      endpoint: "http://file:4318/v1/traces",
      sampleRatio: 0.25,
      headers: { "x-api-key": "k" },
      maxQueue: 10,
      batchIntervalMs: 100,
    },
  };
  assert.deepEqual(resolve(file), { ...file.tracing });
  assert.deepEqual(
    resolve(file, { tracing: { endpoint: "https://flag/v1/traces" } }, {
      endpoint: "http://env/v1/traces",
      serviceName: "env-svc",
    }),
    {
      ...file.tracing,
      endpoint: "https://flag/v1/traces",
      serviceName: "env-svc",
    },
  );
  assert.deepEqual(
    resolve({ tracing: { serviceName: "file-svc" } }, {}, {
      endpoint: "http://env/v1/traces",
      serviceName: "env-svc",
    }),
    { endpoint: "http://env/v1/traces", serviceName: "file-svc" },
  );
  assert.match(
    configError(() => parseConfig({ tracing: { endpoint: "ftp://x/" } })),
    /^tracing\.endpoint: expected an http\(s\) URL/,
  );
  assert.match(
    configError(() => parseConfig({ tracing: { sampleRatio: 2 } })),
    /^tracing\.sampleRatio: expected a number from 0 to 1/,
  );
  assert.match(
    configError(() => parseConfig({ tracing: { headers: { a: "x\ny" } } })),
    /^tracing\.headers\.a: expected a header value without CR, LF or NUL/,
  );
  // Names and values fetch would refuse at every POST, dropping every span.
  for (const name of ["bad name", "x-é", "", "x:y"]) {
    assert.match(
      configError(() => parseConfig({ tracing: { headers: { [name]: "x" } } })),
      /^tracing\.headers: expected header names of letters, digits and/,
    );
  }
  assert.match(
    configError(() => parseConfig({ tracing: { headers: { a: "clé ✓" } } })),
    /^tracing\.headers\.a: expected a header value of Latin-1 characters/,
  );
  assert.match(
    configError(() => parseConfig({ tracing: { sampler: "always" } })),
    /^tracing\.sampler: unknown field/,
  );
});

Deno.test("loadConfig reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and OTEL_SERVICE_NAME", async () => {
  const base = defaultRuntime();
  const vars: Record<string, string> = {
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:4318/v1/traces",
    OTEL_SERVICE_NAME: "svc",
  };
  const runtime: Runtime = {
    ...base,
    env: (name: string) => vars[name] ?? base.env(name),
  };
  const config = await loadConfig({ runtime, cli: { modelsDir: "." } });
  assert.deepEqual(config.tracing, {
    endpoint: "http://127.0.0.1:4318/v1/traces",
    serviceName: "svc",
  });
  vars.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "localhost:4318";
  await assert.rejects(
    loadConfig({ runtime, cli: { modelsDir: "." } }),
    /expected an http\(s\) URL/,
  );
});

Deno.test("resolveConfig takes grpc.streamWindow from the file or --grpc-stream-window (1 to 1024), absent unless set", () => {
  const file = { grpc: { port: 8001, streamWindow: 64 } };
  assert.deepEqual(resolveConfig({ cwd: "/", file, cli: {} }).grpc, {
    hostname: "127.0.0.1",
    port: 8001,
    idleTimeout: 300_000,
    streamWindow: 64,
  });
  assert.equal(
    resolveConfig({ cwd: "/", file, cli: { grpc: { streamWindow: 2 } } }).grpc
      ?.streamWindow,
    2,
  );
  assert.deepEqual(
    resolveConfig({ cwd: "/", cli: { grpc: { port: 0 } } }).grpc,
    { hostname: "127.0.0.1", port: 0, idleTimeout: 300_000 },
  );
  for (const streamWindow of [0, 1025, 1.5]) {
    assert.throws(
      () => parseConfig({ grpc: { port: 0, streamWindow } }, "pyproxy.json"),
      /grpc\.streamWindow: expected an integer from 1 to 1024/,
    );
  }
});

Deno.test("resolveConfig takes grpc.maxUnreadBytes (64 KiB or more), maxUnreadBytesTotal and maxConnections from the file or their flags, absent unless set", () => {
  const file = { grpc: { port: 8001, maxUnreadBytes: 1 << 20 } };
  assert.equal(
    resolveConfig({ cwd: "/", file, cli: {} }).grpc?.maxUnreadBytes,
    1 << 20,
  );
  assert.equal(
    resolveConfig({ cwd: "/", file, cli: { grpc: { maxUnreadBytes: 65536 } } })
      .grpc?.maxUnreadBytes,
    65536,
  );
  assert.equal(
    resolveConfig({ cwd: "/", cli: { grpc: { port: 0 } } }).grpc
      ?.maxUnreadBytes,
    undefined,
  );
  for (const maxUnreadBytes of [0, 65535, 1.5]) {
    assert.throws(
      () => parseConfig({ grpc: { port: 0, maxUnreadBytes } }, "pyproxy.json"),
      /grpc\.maxUnreadBytes: expected an integer/,
    );
  }
  assert.equal(
    resolveConfig({
      cwd: "/",
      file: { grpc: { port: 0, maxUnreadBytesTotal: 1 << 30 } },
      cli: {},
    }).grpc?.maxUnreadBytesTotal,
    1 << 30,
  );
  assert.throws(
    () =>
      parseConfig(
        { grpc: { port: 0, maxUnreadBytesTotal: 10 } },
        "pyproxy.json",
      ),
    /grpc\.maxUnreadBytesTotal: expected an integer/,
  );
  assert.equal(
    resolveConfig({
      cwd: "/",
      file: { grpc: { port: 0, maxConnections: 10 } },
      cli: { grpc: { maxConnections: 0 } },
    }).grpc?.maxConnections,
    0,
  );
  assert.throws(
    () =>
      parseConfig({ grpc: { port: 0, maxConnections: 1.5 } }, "pyproxy.json"),
    /grpc\.maxConnections: expected an integer/,
  );
});
