// `bun run mod.ts serve --plugin <file.ts>`: Bun imports a plugin module
// written in TypeScript as Deno does (tests/plugin_modules_test.ts), and
// refuses a broken one with the same one error line.
import { expect, test } from "bun:test";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import process from "node:process";
import { startServe } from "./_serve_process.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const MOD = new URL("../../mod.ts", import.meta.url).pathname;

test(
  "serve --plugin examples/audit_plugin.ts runs its onSettle on Bun",
  async () => {
    const { child, url } = await startServe(
      ["--port", "0", "--workers", "1", "--plugin", "examples/audit_plugin.ts"],
      { cwd: ROOT },
    );
    try {
      const res = await fetch(`${url}/v1/models/echo/execute`, {
        method: "POST",
        body: '{"a":1}',
      });
      expect(await res.json()).toEqual({ a: 1 });
      const status = await (await fetch(`${url}/v1/status`)).json();
      expect(status.pluginStatus.audit).toEqual({ calls: 1, file: null });
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
  },
  30_000,
);

test(
  "serve --plugin names a module that does not parse, or has no default export, on Bun",
  async () => {
    const dir = mkdtempSync(`${tmpdir()}/pyproxy-test-`);
    try {
      writeFileSync(`${dir}/syntax.ts`, "export default {\n");
      writeFileSync(
        `${dir}/named.ts`,
        'export function audit() { return { name: "audit" }; }\n',
      );
      for (
        const [file, want] of [
          ["syntax.ts", /syntax\.ts: it does not parse: /],
          ["named.ts", /it has no default export \(it exports audit\)/],
        ] as const
      ) {
        const child = Bun.spawn(
          [
            process.execPath,
            "run",
            MOD,
            "serve",
            "--port",
            "0",
            "--plugin",
            `${dir}/${file}`,
          ],
          { cwd: ROOT, stdout: "pipe", stderr: "pipe" },
        );
        const [err, code] = await Promise.all([
          new Response(child.stderr).text(),
          child.exited,
        ]);
        expect(code).toBe(1);
        expect(err).toMatch(/^error: --plugin: Cannot load plugin module /);
        expect(err).toMatch(want);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test(
  "loadPluginModule checks the file Bun loads for an import without its extension, of a .js name or of a directory (chaos48)",
  async () => {
    // Only the path as written was checked, not found, passed over: Bun
    // then loaded lib/helper.ts from a directory every user could write.
    const { loadPluginModule } = await import(
      "../../src/gateway/_plugin_modules.ts"
    );
    const { defaultRuntime } = await import("../../src/runtime/mod.ts");
    const dir = mkdtempSync(`${tmpdir()}/pyproxy-test-`);
    try {
      mkdirSync(`${dir}/lib`);
      writeFileSync(`${dir}/lib/helper.ts`, 'export const a = "a";\n');
      writeFileSync(`${dir}/lib/index.ts`, 'export const a = "i";\n');
      for (
        const [module, text, writable] of [
          ["ext.ts", 'import { a } from "./lib/helper";', "lib"],
          ["js.ts", 'import { a } from "./lib/helper.js";', "lib"],
          ["dir.ts", 'import { a } from "./lib";', "lib/index.ts"],
        ]
      ) {
        writeFileSync(
          `${dir}/${module}`,
          `${text}\nexport default () => ({ name: a });\n`,
        );
        const mode = statSync(`${dir}/${writable}`).mode & 0o777;
        chmodSync(`${dir}/${writable}`, 0o777);
        const spec = {
          module: `${dir}/${module}`,
          where: "t",
          path: "--plugin",
        };
        await expect(loadPluginModule(spec, defaultRuntime())).rejects.toThrow(
          /it imports \S+\/lib\/(helper|index)\.ts \(from \S+\): every user can write to that file/,
        );
        chmodSync(`${dir}/${writable}`, mode);
        const plugin = await loadPluginModule(spec, defaultRuntime());
        expect(plugin.name).toBe(module === "dir.ts" ? "i" : "a");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test(
  "loadPluginModule checks the package.json of a directory Bun imports and the file its main names, and a new URL(..., import.meta.url)'s (security27)",
  async () => {
    // Bun loads `import "./pkg"` from package.json's `main`: that file and
    // the package.json were not checked, nor a dynamic import of a URL of
    // the module's own location; each loaded from a file every user could
    // write.
    const { loadPluginModule } = await import(
      "../../src/gateway/_plugin_modules.ts"
    );
    const { defaultRuntime } = await import("../../src/runtime/mod.ts");
    const dir = mkdtempSync(`${tmpdir()}/pyproxy-test-`);
    try {
      mkdirSync(`${dir}/pkg/lib`, { recursive: true });
      mkdirSync(`${dir}/dyn`);
      writeFileSync(`${dir}/pkg/package.json`, '{"main":"./lib/impl"}\n');
      writeFileSync(`${dir}/pkg/lib/impl.ts`, 'export const a = "pkg";\n');
      writeFileSync(`${dir}/pkg/index.ts`, 'export const a = "index";\n');
      writeFileSync(`${dir}/dyn/x.ts`, 'export const a = "dyn";\n');
      writeFileSync(
        `${dir}/dir.ts`,
        'import { a } from "./pkg";\nexport default () => ({ name: a });\n',
      );
      writeFileSync(
        `${dir}/url.ts`,
        'const { a } = await import(new URL("./dyn/x.ts", import.meta.url).href);\nexport default () => ({ name: a });\n',
      );
      for (
        const [module, writable, why] of [
          ["dir.ts", "pkg/lib/impl.ts", /it imports \S+\/pkg\/lib\/impl\.ts/],
          ["dir.ts", "pkg/package.json", /it uses \S+\/pkg\/package\.json/],
          ["url.ts", "dyn/x.ts", /it imports \S+\/dyn\/x\.ts/],
        ] as const
      ) {
        const spec = {
          module: `${dir}/${module}`,
          where: "t",
          path: "--plugin",
        };
        const mode = statSync(`${dir}/${writable}`).mode & 0o777;
        chmodSync(`${dir}/${writable}`, 0o666);
        await expect(loadPluginModule(spec, defaultRuntime())).rejects.toThrow(
          why,
        );
        chmodSync(`${dir}/${writable}`, mode);
        const plugin = await loadPluginModule(spec, defaultRuntime());
        expect(plugin.name).toBe(module === "dir.ts" ? "pkg" : "dyn");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

test(
  "loadPluginModule checks the file a package.json's imports map a bare #name to (chaos49)",
  async () => {
    // `import "#lib/helper.ts"` with `"imports": {"#lib/*": "./lib/*"}`:
    // not a relative path, so not followed, and a helper every user could
    // write ran with the gateway's permissions.
    const { loadPluginModule } = await import(
      "../../src/gateway/_plugin_modules.ts"
    );
    const { defaultRuntime } = await import("../../src/runtime/mod.ts");
    const dir = mkdtempSync(`${tmpdir()}/pyproxy-test-`);
    try {
      mkdirSync(`${dir}/lib`);
      writeFileSync(
        `${dir}/package.json`,
        '{"name":"p","imports":{"#lib/*":"./lib/*"}}\n',
      );
      writeFileSync(`${dir}/lib/helper.ts`, 'export const a = "mapped";\n');
      writeFileSync(
        `${dir}/plugin.ts`,
        'import { a } from "#lib/helper.ts";\nexport default () => ({ name: a });\n',
      );
      const spec = { module: `${dir}/plugin.ts`, where: "t", path: "--plugin" };
      chmodSync(`${dir}/lib/helper.ts`, 0o666);
      await expect(loadPluginModule(spec, defaultRuntime())).rejects.toThrow(
        /it imports \S+\/lib\/helper\.ts \(from \S+\): every user can write to that file/,
      );
      chmodSync(`${dir}/lib/helper.ts`, 0o644);
      const plugin = await loadPluginModule(spec, defaultRuntime());
      expect(plugin.name).toBe("mapped");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);
