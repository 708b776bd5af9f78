/**
 * Plugins of one's own loaded by `serve` (src/gateway/_plugin_modules.ts):
 * through the real command line (`--plugin`, pyproxy.json's
 * `plugins.<name>.module`) with real workers, and each way a module can be
 * wrong, as the one `error:` line the operator reads.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import { parseConfig, resolveConfig } from "../src/gateway/config.ts";
import { reloadPlan } from "../src/gateway/_config_reload.ts";
import {
  loadPluginModule,
  type PluginModuleSpec,
} from "../src/gateway/_plugin_modules.ts";
import { pluginProblem } from "../src/_plugin_problem.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import {
  ImportsNotCheckedError,
  untrustedImport,
} from "../src/gateway/_local_imports.ts";
import { getLogger } from "@logtape/logtape";
import { pathToFileURL } from "node:url";
import type { Runtime } from "../src/runtime/types.ts";
import { tempDir, waitFor, writeFiles } from "./_harness.ts";
import { type ServeCli, startServeCli } from "./_serve_cli.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;
const EXAMPLE = new URL("../examples/audit_plugin.ts", import.meta.url)
  .pathname;

/** `mod.ts serve ...` until its banner's dashboard line; killed at dispose. */
async function startServe(
  args: string[],
  cwd: string,
  permissions: string[] = ["-A"],
): Promise<ServeCli & { url: string }> {
  const serve = await startServeCli(["--port", "0", ...args], {
    cwd,
    permissions,
    requireBanner: true,
  });
  return { ...serve, url: serve.url! };
}

/** The one `error:` line of a `serve` that fails to start, and its code. */
async function serveError(
  args: string[],
  cwd = ROOT,
  permissions: string[] = ["-A"],
): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...permissions,
      MOD,
      "serve",
      "--port",
      "0",
      "--workers",
      "1",
      ...args,
    ],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("serve --plugin loads examples/audit_plugin.ts (relative to the working directory) and its onSettle runs for a gateway call", async () => {
  await using serve = await startServe(
    ["--workers", "1", "--plugin", "examples/audit_plugin.ts"],
    ROOT,
  );
  const res = await fetch(`${serve.url}/v1/models/echo/execute`, {
    method: "POST",
    body: '{"a":1}',
  });
  assert.deepEqual(await res.json(), { a: 1 });
  // onSettle ran before the call's answer (it runs just before its caller gets it).
  const status = await (await fetch(`${serve.url}/v1/status`)).json();
  assert.deepEqual(status.pluginStatus.audit, { calls: 1, file: null });
  serve.child.kill("SIGINT");
  assert.equal((await serve.child.status).code, 0);
  // The log says which plugin came from which file.
  assert.match(
    await serve.stderr,
    /Loaded plugin \W?audit\W? from \W?\S*\/examples\/audit_plugin\.ts/,
  );
});

Deno.test("serve loads pyproxy.json's plugins.<name>.module relative to the file, with its options; a model reaches its host handler", async () => {
  await using dir = await tempDir();
  const audit = `${dir.path}/audit.jsonl`;
  await writeFiles(dir.path, {
    "conf/pyproxy.json": JSON.stringify({
      workers: 1,
      modelsDir: "../models",
      plugins: {
        audit: { module: "./plugins/audit.ts", options: { file: audit } },
        reconnect: { maxCrashes: 3 },
      },
    }),
    // The example, as an operator copies it next to the config.
    "conf/plugins/audit.ts": await Deno.readTextFile(EXAMPLE),
    "models/counted.py": `from pyproxy import host
class Counted:
    def execute(self, msg):
        return {"seen": host.call("audit.count")}
`,
  });
  await using serve = await startServe(
    ["--config", "conf/pyproxy.json"],
    dir.path,
  );
  for (const want of [0, 1]) {
    const res = await fetch(`${serve.url}/v1/models/counted/execute`, {
      method: "POST",
      body: "{}",
      headers: { "x-request-id": `req-${want}` },
    });
    assert.deepEqual(await res.json(), { seen: want });
  }
  await waitFor(async () =>
    (await Deno.readTextFile(audit).catch(() => "")).split("\n").length === 3
  );
  const lines = (await Deno.readTextFile(audit)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  assert.deepEqual(
    lines.map((l) => [l.model, l.requestId, l.ok, l.attempts]),
    [["counted", "req-0", true, 1], ["counted", "req-1", true, 1]],
  );
});

Deno.test("serve refuses a plugin module with one error line naming it and what to do", async () => {
  await using dir = await tempDir();
  const d = dir.path;
  await writeFiles(d, {
    "syntax.ts": "export default {\n",
    "nodefault.ts":
      'export const LIMIT = 1;\nexport function quota() { return { name: "quota" }; }\n',
    "throws.ts":
      'export default () => { throw new Error("limit is required"); };\n',
    "typo.ts": 'export default () => ({ name: "typo", onRequst() {} });\n',
    "notplugin.ts": "export default () => 42;\n",
    "object.ts": 'export default { name: "object" };\n',
    "inner.ts":
      'import "./missing.ts";\nexport default () => ({ name: "inner" });\n',
    "dup.ts": 'export default () => ({ name: "dup" });\n',
    "dup2.ts": 'export default () => ({ name: "dup" });\n',
    "channels.ts": 'export default () => ({ name: "channels" });\n',
    "misnamed.ts": 'export default () => ({ name: "quotas" });\n',
    "open.ts": 'export default () => ({ name: "open" });\n',
    "below/private/mod.ts": 'export default () => ({ name: "below" });\n',
    "conf/options.json": JSON.stringify({
      plugins: { object: { module: "../object.ts", options: { a: 1 } } },
    }),
    "conf/misnamed.json": JSON.stringify({
      plugins: { quota: { module: "../misnamed.ts" } },
    }),
    "conf/dup.json": JSON.stringify({
      plugins: { dup: { module: "../dup.ts" } },
    }),
    "conf/remote.json": JSON.stringify({
      plugins: { quota: { module: "npm:pyproxy-quota" } },
    }),
    "conf/extra.json": JSON.stringify({
      plugins: { quota: { module: "../dup.ts", option: {} } },
    }),
    "conf/missing.json": JSON.stringify({
      plugins: { quota: { module: "./quota.ts" } },
    }),
  });
  await Deno.chmod(`${d}/open.ts`, 0o666);
  // Its own directory private, one above it not: whoever can write there
  // puts a directory of theirs in its place (newcomer24).
  await Deno.chmod(`${d}/below/private`, 0o700);
  await Deno.chmod(`${d}/below`, 0o777);
  const cases: Array<[string[], RegExp]> = [
    [
      ["--plugin", `${d}/none.ts`],
      /Cannot load plugin module \S+\/none\.ts: no such file \(a relative path is read from the working directory\) \(at command line: --plugin /,
    ],
    [
      ["--plugin", `${d}/syntax.ts`],
      /syntax\.ts: it does not parse: .*\(file:\/\/\S+syntax\.ts:\d+:\d+\)/,
    ],
    [
      ["--plugin", `${d}/nodefault.ts`],
      /it has no default export \(it exports quota, LIMIT\): export default a factory \(options\) => Plugin, or a plugin object \(export \{ quota as default \}\)/,
    ],
    [
      ["--plugin", `${d}/throws.ts`],
      /throws\.ts: its factory threw: limit is required/,
    ],
    [
      ["--plugin", `${d}/typo.ts`],
      /typo\.ts: its factory did not return a plugin: onRequst is no hook, so it would never run \(did you mean onRequest\?\)/,
    ],
    [
      ["--plugin", `${d}/notplugin.ts`],
      /its factory did not return a plugin: expected an object with a name and hooks, got number/,
    ],
    [
      ["--plugin", `${d}/inner.ts`],
      /inner\.ts: it imports \S+\/missing\.ts, which is not found/,
    ],
    [
      ["--plugin", `${d}/dup.ts`, "--plugin", `${d}/dup2.ts`],
      /--plugin: Cannot load plugin module \S+dup2\.ts: its plugin 'dup' is given already, by --plugin \S+dup\.ts: give each plugin once/,
    ],
    [
      ["--config", `${d}/conf/dup.json`, "--plugin", `${d}/dup2.ts`],
      /its plugin 'dup' is given already, by plugins\.dup \(\S+\/dup\.ts\)/,
    ],
    [
      ["--plugin", `${d}/channels.ts`],
      /its plugin is named 'channels', as the gateway's own \(channels\): give it another name/,
    ],
    [
      ["--plugin", `${d}/open.ts`],
      /open\.ts: every user can write to it \(mode 0666\), and its code would run with the gateway's permissions/,
    ],
    [
      ["--plugin", `${d}/below/private/mod.ts`],
      /mod\.ts: every user can write to \S+\/below, a directory above it \(mode 0777\), and its code would run with the gateway's permissions/,
    ],
    [
      ["--plugin", "https://plugins.example/quota.ts"],
      /--plugin: https: modules are not loaded from a configuration \(plugin code runs with the gateway's permissions\): name a local file; to use a published plugin, write a file that imports it \(export \{ default \} from "https:\/\/plugins\.example\/quota\.ts"\)/,
    ],
    [
      ["--config", `${d}/conf/options.json`],
      /plugins\.object: Cannot load plugin module \S+\/object\.ts: it exports a plugin object, which takes no options: export a factory \(options\) => Plugin to take plugins\.object\.options \(at \S+options\.json: plugins\.object\)/,
    ],
    [
      ["--config", `${d}/conf/misnamed.json`],
      /plugins\.quota: .*its plugin is named 'quotas', not 'quota': name the entry of plugins as the plugin \("quotas": \{"module": \.\.\.\}\)/,
    ],
    [
      ["--config", `${d}/conf/remote.json`],
      /plugins\.quota\.module: npm: modules are not loaded from a configuration .* \(at \S+remote\.json: plugins\.quota\.module\)/,
    ],
    [
      ["--config", `${d}/conf/extra.json`],
      /plugins\.quota\.option: unknown field \(allowed: module, options; a module's options go under options\)/,
    ],
    [
      ["--config", `${d}/conf/missing.json`],
      /\S+\/conf\/quota\.ts: no such file \(a relative path is read from the config file's directory\)/,
    ],
  ];
  // 3 at a time: each is a Deno start that mostly waits.
  let next = 0;
  const failures: string[] = [];
  await Promise.all(Array.from({ length: 3 }, async () => {
    while (next < cases.length) {
      const [args, want] = cases[next++]!;
      const { code, stderr } = await serveError(args);
      if (code !== 1 || !/^error: .*\n$/.test(stderr) || !want.test(stderr)) {
        failures.push(`${args.join(" ")}: ${code} ${JSON.stringify(stderr)}`);
      }
    }
  }));
  assert.deepEqual(failures, []);
});

Deno.test("serve --plugin with Deno's --allow-read not listing the module names the permission to add", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "p.ts": 'export default () => ({ name: "p" });\n',
  });
  const { code, stderr } = await serveError(
    ["--plugin", `${dir.path}/p.ts`],
    ROOT,
    [
      `--allow-read=${ROOT}`,
      "--allow-env",
      "--allow-write",
      "--allow-net",
      "--allow-run",
      "--allow-sys",
    ],
  );
  assert.equal(code, 1, stderr);
  assert.match(
    stderr,
    new RegExp(
      `Cannot load plugin module ${dir.path}/p\\.ts: Deno's permissions refuse it \\(Requires read access to .*\\): allow read access to it, e\\.g\\. --allow-read=${dir.path}, or run with -A`,
    ),
  );
});

Deno.test("serve --plugin through a symbolic link loads the file it names (a link's 0777 was refused as writable by every user), with the --allow-read its advice names", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "releases/r1/audit.ts": 'export default () => ({ name: "linked" });\n',
  });
  await Deno.mkdir(`${dir.path}/plugins`);
  await Deno.symlink(
    `${dir.path}/releases/r1/audit.ts`,
    `${dir.path}/plugins/audit.ts`,
  );
  const narrow = [
    "--allow-env",
    "--allow-write",
    "--allow-net",
    "--allow-run",
    "--allow-sys",
  ];
  // The module itself allowed: the advice names the directories to read.
  const { code, stderr } = await serveError(
    ["--plugin", `${dir.path}/plugins/audit.ts`],
    ROOT,
    [`--allow-read=${ROOT},${dir.path}/plugins/audit.ts`, ...narrow],
  );
  assert.equal(code, 1, stderr);
  const advice = /e\.g\. --allow-read=(\S+), or run with -A/.exec(stderr)?.[1];
  assert.ok(advice, stderr);
  // Both directories the check reads (the link's and its target's).
  assert.equal(advice, `${dir.path}/plugins,${dir.path}/releases/r1`);
  // Following it starts the gateway.
  const allow = `${ROOT},${advice}`;
  await using serve = await startServe(
    ["--workers", "1", "--plugin", `${dir.path}/plugins/audit.ts`],
    ROOT,
    [`--allow-read=${allow}`, ...narrow],
  );
  serve.child.kill("SIGINT");
  assert.equal((await serve.child.status).code, 0);
  assert.match(await serve.stderr, /Loaded plugin \W?linked\W? from/);
});

Deno.test("loadPluginModule takes a file: URL, a plugin object without options, and a class instance's hooks", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "object.ts":
      'export default { name: "object", onPoolStart() {}, handlers: { "x.y": () => 1 } };\n',
    "class.ts": `class Audit {
  name = "audit";
  onSettle() {}
  onCallMade() {}
}
export default () => new Audit();
`,
    "async.ts":
      "export default async (o: { n: number }) => ({ name: `n${o.n}` });\n",
  });
  const runtime = defaultRuntime();
  const spec = (module: string, more: Partial<PluginModuleSpec> = {}) => ({
    module,
    where: "test",
    path: "--plugin",
    ...more,
  });
  const object = await loadPluginModule(
    spec(`file://${dir.path}/object.ts`),
    runtime,
  );
  assert.equal(object.name, "object");
  const n = await loadPluginModule(
    spec(`${dir.path}/async.ts`, { options: { n: 3 } }),
    runtime,
  );
  assert.equal(n.name, "n3");
  // An `on...` method of its class that is no hook is a typo too.
  await assert.rejects(
    loadPluginModule(spec(`${dir.path}/class.ts`), runtime),
    (err: unknown) =>
      err instanceof ConfigError &&
      /onCallMade is no hook/.test(err.message) &&
      (err.details as { path?: string }).path === "--plugin",
  );
});

Deno.test("loadPluginModule refuses a module whose local imports (directly or through another file) another user could write, and takes one whose imports are safe", async () => {
  // Only the module's file and directories were checked: a relative import
  // from a directory every user can write ran their code with the
  // gateway's permissions (security25).
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "main.ts":
      'import { helper } from "./lib/helper.ts";\nexport default () => ({ name: helper() });\n',
    "lib/helper.ts": 'export const helper = () => "main";\n',
    "chain.ts":
      'export { default } from "./safe/a.ts";\n// import "./not-there.ts";\n',
    "safe/a.ts":
      'import { helper } from "../lib/helper.ts";\nimport type { Plugin } from "../types/t.ts";\nexport default (): Plugin => ({ name: `chain-${helper()}` });\n',
    "types/t.ts": "export type Plugin = { name: string };\n",
  });
  await Deno.chmod(`${dir.path}/types`, 0o777); // types only: erased
  const runtime = defaultRuntime();
  const load = (module: string) =>
    loadPluginModule({ module, where: "test", path: "--plugin" }, runtime);
  const refused = async (module: string, why: RegExp) => {
    await assert.rejects(load(module), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, why);
      assert.match(
        err.message,
        /its code would run with the gateway's permissions/,
      );
      return true;
    });
  };
  await Deno.chmod(`${dir.path}/lib`, 0o777);
  await refused(
    `${dir.path}/main.ts`,
    /main\.ts: it imports \S+\/lib\/helper\.ts \(from \S+\/main\.ts\): every user can write to that file's directory \(mode 0777\)/,
  );
  await refused(
    `${dir.path}/chain.ts`,
    /it imports \S+\/lib\/helper\.ts \(from \S+\/safe\/a\.ts\): every user can write to that file's directory/,
  );
  await Deno.chmod(`${dir.path}/lib`, 0o755);
  await Deno.chmod(`${dir.path}/lib/helper.ts`, 0o666);
  await refused(
    `${dir.path}/main.ts`,
    /it imports \S+\/lib\/helper\.ts \(from \S+\/main\.ts\): every user can write to that file \(mode 0666\)/,
  );
  await Deno.chmod(`${dir.path}/lib/helper.ts`, 0o644);
  assert.equal((await load(`${dir.path}/main.ts`)).name, "main");
  assert.equal((await load(`${dir.path}/chain.ts`)).name, "chain-main");
});

Deno.test("loadPluginModule checks the files Bun loads for an import without its extension, of a directory or of a .js name, and a template literal's", async () => {
  // Only the path as written was checked: Bun loads `./lib/helper` from
  // lib/helper.ts, `./lib2/h.js` from lib2/h.ts and `./lib4` from
  // lib4/index.ts, so each was passed over (not found) and loaded from a
  // directory every user could write; `import(`./lib3/x.ts`)` was not
  // read at all, on Deno too (chaos48).
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "ext.ts":
      'import { a } from "./lib/helper";\nexport default () => ({ name: a });\n',
    "js.ts":
      'import { b } from "./lib2/h.js";\nexport default () => ({ name: b });\n',
    "tpl.ts":
      "const { c } = await import(`./lib3/x.ts`);\nexport default () => ({ name: c });\n",
    "dir.ts":
      'export { d as default } from "./lib4";\n// import(`./${"computed"}.ts`)\n',
    "lib/helper.ts": 'export const a = "a";\n',
    "lib2/h.ts": 'export const b = "b";\n',
    "lib3/x.ts": 'export const c = "c";\n',
    "lib4/index.ts": 'export const d = () => ({ name: "d" });\n',
  });
  const runtime = defaultRuntime();
  // [module, made writable by every user, the file named, what is wrong]
  for (
    const [module, writable, file, why] of [
      ["ext.ts", "lib", "lib/helper.ts", "that file's directory (mode 0777)"],
      ["js.ts", "lib2", "lib2/h.ts", "that file's directory (mode 0777)"],
      ["tpl.ts", "lib3", "lib3/x.ts", "that file's directory (mode 0777)"],
      ["dir.ts", "lib4/index.ts", "lib4/index.ts", "that file (mode 0777)"],
    ]
  ) {
    const mode = (await Deno.stat(`${dir.path}/${writable}`)).mode! & 0o777;
    await Deno.chmod(`${dir.path}/${writable}`, 0o777);
    await assert.rejects(
      loadPluginModule(
        { module: `${dir.path}/${module}`, where: "test", path: "--plugin" },
        runtime,
      ),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.ok(
          err.message.includes(
            `it imports ${dir.path}/${file} (from ${dir.path}/${module}): every user can write to ${why}`,
          ),
          err.message,
        );
        return true;
      },
    );
    await Deno.chmod(`${dir.path}/${writable}`, mode);
  }
  // Checked and safe: Deno loads the template literal's file.
  const tpl = await loadPluginModule(
    { module: `${dir.path}/tpl.ts`, where: "test", path: "--plugin" },
    runtime,
  );
  assert.equal(tpl.name, "c");
});

Deno.test("loadPluginModule checks what a module names by a string-literal URL of its own location (a dynamic import, a worker, a file it reads), not a computed one", async () => {
  // Only import specifiers were followed: `import(new URL("./dyn/x.ts",
  // import.meta.url).href)`, a worker's URL and a file read through one
  // were loaded or read from a directory every user could write
  // (security27).
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "dyn.ts":
      'const { x } = await import(new URL("./dyn/x.ts", import.meta.url).href);\nexport default () => ({ name: x });\n',
    "dyn/x.ts": 'export const x = "dyn";\n',
    "worker.ts":
      'export const start = () => new Worker(new URL("./wk/w.ts", import.meta.url).href, { type: "module" });\nexport default () => ({ name: "worker" });\n',
    "wk/w.ts": "self.close();\n",
    "read.ts":
      'const conf = JSON.parse(await Deno.readTextFile(new URL("conf.json", import.meta.url)));\nexport default () => ({ name: conf.name });\n',
    "conf.json": '{"name":"read"}\n',
    "resolve.ts":
      'export const r = import.meta.resolve(`./r/x.ts`);\nexport default () => ({ name: "resolve" });\n',
    "r/x.ts": "export {};\n",
    // As deno fmt writes a long one (a trailing comma), and an import with
    // a comment before its specifier: neither was seen (chaos51).
    "fmt.ts":
      'const { x } = await import(\n  new URL(\n    "./fmt/x.ts",\n    import.meta.url,\n  ).href\n);\nexport default () => ({ name: x });\n',
    "fmt/x.ts": 'export const x = "fmt";\n',
    "comment.ts":
      'const { x } = await import(/* @vite-ignore */ "./cm/x.ts");\nexport default () => ({ name: x });\n',
    "cm/x.ts": 'export const x = "comment";\n',
    "computed.ts":
      'const name = "./c/x.ts";\nconst { x } = await import(new URL(name, import.meta.url).href);\nexport default () => ({ name: x });\n',
    "c/x.ts": 'export const x = "computed";\n',
  });
  const runtime = defaultRuntime();
  const load = (module: string) =>
    loadPluginModule(
      { module: `${dir.path}/${module}`, where: "test", path: "--plugin" },
      runtime,
    );
  // [module, made writable by every user, how it is named, what is wrong]
  for (
    const [module, writable, named] of [
      ["dyn.ts", "dyn", "imports dyn/x.ts"],
      ["worker.ts", "wk", "imports wk/w.ts"],
      ["read.ts", "conf.json", "uses conf.json"],
      ["resolve.ts", "r", "imports r/x.ts"],
      ["fmt.ts", "fmt", "imports fmt/x.ts"],
      ["comment.ts", "cm", "imports cm/x.ts"],
    ] as const
  ) {
    const mode = (await Deno.stat(`${dir.path}/${writable}`)).mode! & 0o777;
    await Deno.chmod(`${dir.path}/${writable}`, 0o777);
    const [verb, file] = named.split(" ");
    await assert.rejects(load(module), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.ok(
        err.message.includes(
          `it ${verb} ${dir.path}/${file} (from ${dir.path}/${module}): every user can write to that file`,
        ),
        err.message,
      );
      return true;
    });
    await Deno.chmod(`${dir.path}/${writable}`, mode);
    // Checked and safe: loaded.
    assert.equal(
      (await load(module)).name,
      module.replace(/\.ts$/, ""),
    );
  }
  // A URL computed at run time is not seen (docs/security.md says so).
  await Deno.chmod(`${dir.path}/c`, 0o777);
  assert.equal((await load("computed.ts")).name, "computed");
});

Deno.test("untrustedImport checks an imported directory's package.json and the files its main, module and exports name (what Bun loads for it)", async () => {
  // Bun loads `import "./pkg"` from the file package.json's `main` names:
  // only pkg/index.* were checked, so that file, and the package.json that
  // picks it, could be another user's (security27).
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "main.ts":
      'import { p } from "./pkg";\nexport default () => ({ name: p });\n',
    "pkg/package.json":
      '{"main":"lib/impl","module":"./m.js","exports":{".":{"bun":"./b.ts","default":"./d.ts"},"./x/*":"./x/*.ts"}}\n',
    "pkg/lib/impl.ts": 'export const p = "pkg";\n',
    "pkg/m.ts": "export {};\n",
    "pkg/b.ts": "export {};\n",
    "pkg/d.ts": 'import "./deep.ts";\n',
    "pkg/deep.ts": "export {};\n",
  });
  const runtime = defaultRuntime();
  const main = `${dir.path}/main.ts`;
  assert.equal(await untrustedImport(runtime, main), undefined);
  for (
    const [writable, named] of [
      ["pkg/package.json", "uses pkg/package.json"],
      ["pkg/lib/impl.ts", "imports pkg/lib/impl.ts"],
      ["pkg/m.ts", "imports pkg/m.ts"],
      ["pkg/b.ts", "imports pkg/b.ts"],
      ["pkg/deep.ts", "imports pkg/deep.ts"],
    ] as const
  ) {
    await Deno.chmod(`${dir.path}/${writable}`, 0o666);
    const [verb, file] = named.split(" ");
    assert.match(
      (await untrustedImport(runtime, main)) ?? "taken",
      new RegExp(
        `^it ${verb} \\S+/${file} \\(from \\S+\\): every user can write to that file \\(mode 0666\\)`,
      ),
    );
    await Deno.chmod(`${dir.path}/${writable}`, 0o644);
  }
  // A package.json that is not JSON: itself checked, nothing it names.
  await Deno.writeTextFile(`${dir.path}/pkg/package.json`, "{");
  await Deno.chmod(`${dir.path}/pkg/lib/impl.ts`, 0o666);
  assert.equal(await untrustedImport(runtime, main), undefined);
});

Deno.test("untrustedImport refuses a graph it cannot check whole (more files than its limit, a file too large) and is not held by cycles, link loops, FIFOs or directories", async () => {
  // Past 10 000 files, or at a file over 16 MiB, the walk stopped and the
  // module passed: an import beyond it, from a directory every user could
  // write, was loaded unchecked (chaos48).
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "main.ts":
      'import "./c/0.ts";\nimport "./fifo.ts";\nimport "./loop.ts";\nimport "./c";\nimport "./main.ts";\n',
    "c/0.ts": 'import "./1.ts";\nimport "../main.ts";\n',
    "c/1.ts": 'import "./2.ts";\n',
    "c/2.ts": 'import "./3.ts";\n',
    "c/3.ts": 'import "../w/x.ts";\n',
    "w/x.ts": "export {};\n",
  });
  await Deno.chmod(`${dir.path}/w`, 0o777);
  await Deno.symlink(`${dir.path}/loop2.ts`, `${dir.path}/loop.ts`);
  await Deno.symlink(`${dir.path}/loop.ts`, `${dir.path}/loop2.ts`);
  const mkfifo = new Deno.Command("mkfifo", { args: [`${dir.path}/fifo.ts`] });
  assert.equal((await mkfifo.output()).code, 0);
  const runtime = defaultRuntime();
  const main = `${dir.path}/main.ts`;
  // Whole: the writable directory is found, past the cycle, loop and FIFO.
  assert.match(
    (await untrustedImport(runtime, main)) ?? "",
    /it imports \S+\/w\/x\.ts \(from \S+\/c\/3\.ts\): every user can write/,
  );
  await assert.rejects(
    untrustedImport(runtime, main, { maxFiles: 4 }),
    (err: unknown) =>
      err instanceof ImportsNotCheckedError &&
      err.code === "IMPORTS_NOT_CHECKED" &&
      /it imports more than 4 local files/.test(err.message),
  );
  await assert.rejects(
    untrustedImport(runtime, main, { maxBytes: 20 }),
    (err: unknown) =>
      err instanceof ImportsNotCheckedError &&
      /main\.ts is larger than 20 bytes: its imports are not read/.test(
        err.message,
      ),
  );
  // loadPluginModule says it as it is.
  await Deno.chmod(`${dir.path}/w`, 0o755);
  await Deno.writeTextFile(
    `${dir.path}/c/3.ts`,
    `${"// padding\n".repeat(1_600_000)}import "../w/x.ts";\n`,
  );
  await assert.rejects(
    loadPluginModule(
      { module: main, where: "test", path: "--plugin" },
      runtime,
    ),
    (err: unknown) =>
      err instanceof ConfigError &&
      /Cannot load plugin module \S+: \S+\/c\/3\.ts is larger than 16 MiB: its imports are not read, so not checked \(at test\)$/
        .test(err.message),
  );
});

Deno.test("loadPluginModule fails with a ConfigError when a factory or the module's top-level await never settles", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "never.ts": "export default () => new Promise(() => {});\n",
    "hangs.ts":
      "await new Promise(() => {});\nexport default { name: 'hangs' };\n",
    "throws.ts":
      "export default () => { throw new TypeError('no url given'); };\n",
  });
  // Before: each load waited for good (serve's start with it).
  await assert.rejects(
    loadPluginModule(
      { module: `${dir.path}/never.ts`, where: "test", path: "--plugin" },
      defaultRuntime(),
      { timeoutMs: 50 },
    ),
    (err: unknown) =>
      err instanceof ConfigError &&
      /never\.ts: its factory did not settle within 50 ms: .*onPoolStart/
        .test(err.message),
  );
  // A module whose import hangs: in a process of its own, which ends with
  // the error as serve's does (Deno fails a test file, and a process whose
  // event loop empties, with a top-level await that never settles).
  await Deno.writeTextFile(
    `${dir.path}/load.ts`,
    `import { loadPluginModule } from ${
      JSON.stringify(
        new URL("../src/gateway/_plugin_modules.ts", import.meta.url).href,
      )
    };
import { defaultRuntime } from ${
      JSON.stringify(new URL("../src/runtime/mod.ts", import.meta.url).href)
    };
try {
  await loadPluginModule({ module: ${
      JSON.stringify(`${dir.path}/hangs.ts`)
    }, where: "test", path: "--plugin" }, defaultRuntime(), { timeoutMs: 50 });
  console.log("loaded");
} catch (err) {
  console.log(err.name, err.message);
}
Deno.exit(0);
`,
  );
  const { stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", `${dir.path}/load.ts`],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.match(
    new TextDecoder().decode(stdout),
    /^ConfigError --plugin: Cannot load plugin module .*hangs\.ts: its import did not finish within 50 ms/,
  );
  // A factory's own error keeps its words.
  await assert.rejects(
    loadPluginModule(
      { module: `${dir.path}/throws.ts`, where: "test", path: "--plugin" },
      defaultRuntime(),
      { timeoutMs: 50 },
    ),
    (err: unknown) =>
      err instanceof ConfigError &&
      /its factory threw: no url given \(at test\)/.test(err.message),
  );
});

Deno.test("loadPluginModule says once in the log that a factory has not settled yet, and goes on waiting for it", async () => {
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "slow.ts":
      "export default () => (globalThis as { gate?: Promise<unknown> }).gate;\n",
  });
  let open!: (plugin: unknown) => void;
  (globalThis as { gate?: Promise<unknown> }).gate = new Promise((resolve) =>
    open = resolve
  );
  const warned: Array<Record<string, unknown> | undefined> = [];
  try {
    const plugin = await loadPluginModule(
      { module: `${dir.path}/slow.ts`, where: "test", path: "--plugin" },
      defaultRuntime(),
      {
        slowMs: 1,
        logger: {
          warn(message, props) {
            assert.match(message, /^Still waiting for the factory/);
            warned.push(props);
            // The warning came while the factory waited: let it finish.
            open({ name: "slow" });
          },
        },
      },
    );
    assert.equal(plugin.name, "slow");
    assert.deepEqual(warned, [{
      module: `${dir.path}/slow.ts`,
      where: "test",
      ms: 1,
    }]);
  } finally {
    delete (globalThis as { gate?: Promise<unknown> }).gate;
  }
});

Deno.test("pluginProblem: a hook that is not a function, bad handlers and requires, no name", () => {
  assert.equal(pluginProblem({ name: "ok", onCall() {} }), undefined);
  // Other keys are a plugin's own state (autoscale's bounds, a stats object).
  assert.equal(pluginProblem({ name: "ok", stats: {}, on: 1 }), undefined);
  assert.match(pluginProblem({ name: "" })!, /its name is missing/);
  assert.match(
    pluginProblem({ name: "x", onCall: 1 })!,
    /onCall is not a function/,
  );
  assert.match(
    pluginProblem({ name: "x", handlers: { a: 1 } })!,
    /handlers\["a"\] is not a function/,
  );
  assert.match(
    pluginProblem({ name: "x", requires: "y" })!,
    /requires is not a list/,
  );
  assert.match(pluginProblem([])!, /got an array/);
});

Deno.test("A reload that changes the plugin modules names plugins among the settings that need a restart", async () => {
  const config = (module: string) =>
    resolveConfig({
      cwd: "/srv",
      file: parseConfig({ plugins: { audit: { module } } }),
      fileDir: "/etc/pyproxy",
    });
  const before = config("./audit.ts");
  assert.deepEqual(before.plugins, {
    audit: { module: "/etc/pyproxy/audit.ts" },
  });
  const plan = await reloadPlan(
    before,
    undefined,
    config("./audit2.ts"),
    defaultRuntime(),
    getLogger(["test"]),
  );
  assert.deepEqual(plan.ignored, ["plugins"]);
  // The command line's modules, resolved against the working directory.
  assert.deepEqual(
    resolveConfig({ cwd: "/srv", pluginModules: ["p/a.ts", "file:///x.ts"] })
      .pluginModules,
    ["/srv/p/a.ts", "file:///x.ts"],
  );
});

Deno.test("untrustedImport follows a bare name the runtime resolves to a local file (an import map's, a package.json's imports), not one resolved into a package cache", async () => {
  // `import "@lib/helper.ts"` with deno.json's `"@lib/": "./lib/"` (or
  // Bun's `import "#lib/helper.ts"` with package.json's `"#lib/*"`) loads
  // lib/helper.ts: from a directory every user could write, it was loaded
  // unchecked where `import "./lib/helper.ts"` was refused (chaos49).
  await using dir = await tempDir();
  await writeFiles(dir.path, {
    "main.ts":
      'import { h } from "@lib/helper.ts";\nimport "#lib/other.ts";\nimport "pkg";\nimport "npm:left-pad";\n// imported from "the prose of a comment"\nexport default () => ({ name: h });\n',
    "lib/helper.ts": 'export const h = "helper";\n',
    "lib/other.ts": "export {};\n",
    "node_modules/pkg/index.js": "export {};\n",
  });
  const base = defaultRuntime();
  const asked: string[] = [];
  const runtime: Runtime = {
    ...base,
    resolveImport: (specifier, referrer) => {
      asked.push(specifier);
      assert.equal(referrer, pathToFileURL(`${dir.path}/main.ts`).href);
      const lib = /^[@#]lib\/(.*)$/.exec(specifier);
      return lib !== null
        ? pathToFileURL(`${dir.path}/lib/${lib[1]}`).href
        : specifier === "pkg"
        ? pathToFileURL(`${dir.path}/node_modules/pkg/index.js`).href
        : undefined;
    },
  };
  const main = `${dir.path}/main.ts`;
  assert.equal(await untrustedImport(runtime, main), undefined);
  // Bare names only: not npm:, not a comment's prose.
  assert.deepEqual(asked.sort(), ["#lib/other.ts", "@lib/helper.ts", "pkg"]);
  for (const file of ["lib/helper.ts", "lib/other.ts"]) {
    await Deno.chmod(`${dir.path}/${file}`, 0o666);
    assert.match(
      (await untrustedImport(runtime, main)) ?? "taken",
      new RegExp(
        `^it imports \\S+/${file} \\(from \\S+/main\\.ts\\): every user can write to that file \\(mode 0666\\)`,
      ),
    );
    await Deno.chmod(`${dir.path}/${file}`, 0o644);
  }
  // A package's file (node_modules, Deno's npm cache): the runtime's.
  await Deno.chmod(`${dir.path}/node_modules/pkg/index.js`, 0o666);
  assert.equal(await untrustedImport(runtime, main), undefined);
  // Deno's adapter resolves with the import map: the package's own name.
  {
    assert.equal(
      base.resolveImport?.("@pyproxy/pyproxy", pathToFileURL(main).href),
      new URL("../mod.ts", import.meta.url).href,
    );
    assert.equal(
      base.resolveImport?.("no-such-name", pathToFileURL(main).href),
      undefined,
    );
  }
});
