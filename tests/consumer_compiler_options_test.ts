/**
 * A project that links the checkout (docs/runtimes.md, "From a checkout, in
 * your own project") type-checks pyproxy's sources with its own
 * `compilerOptions`, not the checkout's: `deno test` (which checks) of a
 * service with `noImplicitReturns` failed in src/gateway/security.ts before
 * its first line ran. The options of strict tsconfig presets that the code
 * meets are checked here; `noPropertyAccessFromIndexSignature` is not one of
 * them (docs/runtimes.md says so).
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("mod.ts type-checks under a consuming project's stricter compilerOptions", async () => {
  const own = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)) as {
    imports: Record<string, string>;
    compilerOptions: Record<string, unknown>;
    unstable: string[];
  };
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-consumer-" });
  try {
    const config = `${dir}/deno.json`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        imports: own.imports,
        unstable: own.unstable,
        compilerOptions: {
          ...own.compilerOptions,
          noImplicitReturns: true,
          noFallthroughCasesInSwitch: true,
          noUnusedLocals: true,
          noUnusedParameters: true,
          allowUnreachableCode: false,
          allowUnusedLabels: false,
        },
      }),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--config", config, `${ROOT}mod.ts`],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stderr);
    assert.equal(
      out.code,
      0,
      // deno's report, without the colour codes
      // deno-lint-ignore no-control-regex
      text.replace(/\x1b\[[0-9;]*m/g, "").split("\n").filter((l) =>
        /TS\d+|at file:|error/.test(l)
      ).join("\n"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
