// The runtime adapter contract under Deno (the same checks run under Bun in
// tests/bun/runtime.test.ts).
import assert from "node:assert/strict";
import { runtimeContract } from "./_runtime_contract.ts";
import { bunRuntime, defaultRuntime, denoRuntime } from "../src/runtime/mod.ts";

const rt = denoRuntime();
const runScript = (file: string, args: string[]) => ({
  cmd: Deno.execPath(),
  args: ["run", "-A", "--quiet", file, ...args],
});

for (const check of runtimeContract) {
  Deno.test(`denoRuntime ${check.name}`, () => check.fn({ rt, runScript }));
}

Deno.test("defaultRuntime returns the Deno adapter on Deno", () => {
  assert.equal(defaultRuntime().name, "deno");
});

Deno.test("bunRuntime throws outside Bun", () => {
  assert.throws(() => bunRuntime(), /not running on Bun/);
});
