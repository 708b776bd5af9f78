// package.json exists only so that Bun resolves the npm packages deno.json
// maps; the two must name the same versions.
import assert from "node:assert/strict";

const read = async (name: string) =>
  JSON.parse(await Deno.readTextFile(new URL(`../${name}`, import.meta.url)));

Deno.test("package.json pins the same npm versions as deno.json imports", async () => {
  const deno = await read("deno.json");
  const pkg = await read("package.json");
  const mapped = new Map<string, string>();
  for (const target of Object.values(deno.imports as Record<string, string>)) {
    const m = /^npm:\/?(@?[^@/]+(?:\/[^@/]+)?)@([^/]+)/.exec(target);
    if (m) mapped.set(m[1]!, m[2]!);
  }
  const deps = { ...pkg.dependencies, ...pkg.devDependencies } as Record<
    string,
    string
  >;
  assert.ok(Object.keys(deps).length > 0);
  for (const [name, version] of Object.entries(deps)) {
    assert.equal(
      version,
      mapped.get(name),
      `${name}: package.json has ${version}, deno.json has ${mapped.get(name)}`,
    );
  }
  assert.equal(
    deno.nodeModulesDir,
    "none",
    "deno.json must keep nodeModulesDir none (else a package.json switches Deno to node_modules)",
  );
});

Deno.test("package.json is not published", async () => {
  const deno = await read("deno.json");
  const include: string[] = deno.publish.include;
  assert.ok(
    !include.some((p) => p === "package.json" || p === "./" || p === "."),
  );
  assert.equal((await read("package.json")).private, true);
});
