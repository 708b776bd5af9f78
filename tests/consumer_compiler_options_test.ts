/**
 * A project that links the checkout (docs/runtimes.md, "From a checkout, in
 * your own project") type-checks pyproxy's sources with its own
 * `compilerOptions`, not the checkout's: `deno test` (which checks) of a
 * service with `noImplicitReturns` failed in src/gateway/security.ts before
 * its first line ran. The options of strict tsconfig presets that the code
 * meets are checked here; `noPropertyAccessFromIndexSignature` is not one of
 * them (docs/runtimes.md says so).
 */
import { assertDenoChecks } from "./_harness.ts";

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
    await assertDenoChecks(["--config", config, `${ROOT}mod.ts`]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
