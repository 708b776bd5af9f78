/**
 * .ci/pin_runtimes: CI's deno and bun are the versions .ci/versions names,
 * installed with npm where the one on PATH is missing or another version
 * (`deno@2` and `bun` unpinned took whatever npm had that day), run here
 * against a fake npm, deno and bun on a PATH of their own.
 */
import assert from "node:assert/strict";
import { tempDir } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** DENO_VERSION and BUN_VERSION of .ci/versions. */
async function pinned(): Promise<{ deno: string; bun: string }> {
  const text = await Deno.readTextFile(`${ROOT}.ci/versions`);
  const of = (name: string) =>
    new RegExp(`^${name}=(\\d+\\.\\d+\\.\\d+)$`, "m").exec(text)?.[1];
  const deno = of("DENO_VERSION");
  const bun = of("BUN_VERSION");
  assert.ok(deno !== undefined && bun !== undefined, text);
  return { deno, bun };
}

/** A fake `name` printing `version` as `name --version` does. */
async function fakeRuntime(bin: string, name: string, version: string) {
  const line = name === "deno"
    ? `deno ${version} (stable, release, x86_64-unknown-linux-gnu)`
    : version;
  await Deno.writeTextFile(
    `${bin}/${name}`,
    `#!/bin/bash\necho '${line}'\n`,
    { mode: 0o755 },
  );
}

/**
 * Runs .ci/pin_runtimes with `bin` alone on PATH (and the few tools the
 * script uses), its fake npm logging its arguments and installing a fake
 * runtime of the version asked for (or failing, with `NPM_FAILS`).
 */
async function pinRuntimes(bin: string, npmFails = false) {
  const log = `${bin}/npm.log`;
  await Deno.writeTextFile(log, "");
  await Deno.writeTextFile(
    `${bin}/npm`,
    `#!/bin/bash
echo "$*" >> '${log}'
[ -z "\${NPM_FAILS:-}" ] || exit 1
spec="\${@: -1}"; name="\${spec%@*}"; version="\${spec##*@}"
if [ "$name" = deno ]; then line="deno $version (stable)"; else line="$version"; fi
printf '#!/bin/bash\\necho "%s"\\n' "$line" > '${bin}'/"$name"
chmod +x '${bin}'/"$name"
`,
    { mode: 0o755 },
  );
  for (const tool of ["grep", "head", "dirname", "chmod"]) {
    const where = ["/usr/bin", "/bin"].map((d) => `${d}/${tool}`).find((p) => {
      try {
        return Deno.statSync(p).isFile;
      } catch {
        return false;
      }
    });
    assert.ok(where !== undefined, tool);
    await Deno.symlink(where, `${bin}/${tool}`).catch(() => {});
  }
  const out = await new Deno.Command("/bin/bash", {
    args: [`${ROOT}.ci/pin_runtimes`],
    env: { PATH: bin, ...(npmFails ? { NPM_FAILS: "1" } : {}) },
    clearEnv: true,
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
    npm: (await Deno.readTextFile(log)).trim().split("\n").filter(Boolean),
  };
}

Deno.test({
  name:
    ".ci/pin_runtimes installs the pinned deno and bun where another version, or none, is on PATH, and nothing where they are",
  ignore: Deno.build.os === "windows",
}, async () => {
  const { deno, bun } = await pinned();
  await using dir = await tempDir("pyproxy-ci-pin-");
  // An older deno (as `deno@2` gave before its last release), no bun.
  await fakeRuntime(dir.path, "deno", "2.0.0");
  let run = await pinRuntimes(dir.path);
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(run.npm, [
    `install -g deno@${deno}`,
    `install -g bun@${bun}`,
  ]);
  assert.equal(run.stdout, "");
  // Both as pinned: npm is not asked.
  run = await pinRuntimes(dir.path);
  assert.deepEqual(run.npm, []);
  assert.equal(run.stdout, "");
  // npm cannot install them: said, and the run goes on (exit 0).
  await fakeRuntime(dir.path, "deno", "2.0.0");
  await Deno.remove(`${dir.path}/bun`);
  run = await pinRuntimes(dir.path, true);
  assert.equal(run.code, 0);
  assert.match(
    run.stdout,
    new RegExp(
      `^warning: deno ${deno} is pinned \\(\\.ci/versions\\), but what runs is 2\\.0\\.0 \\(`,
      "m",
    ),
  );
  assert.match(
    run.stdout,
    new RegExp(
      `^warning: bun ${bun} is pinned \\(\\.ci/versions\\), but what runs is no bun \\(not on PATH\\)`,
      "m",
    ),
  );
});

Deno.test(".ci/run installs no runtime unpinned, and scripts/test.sh no package beyond bun.lock", async () => {
  const run = await Deno.readTextFile(`${ROOT}.ci/run`);
  assert.doesNotMatch(
    run,
    /npm install/,
    "installs go through .ci/pin_runtimes",
  );
  assert.match(run, /^bash \.ci\/pin_runtimes$/m);
  const test = await Deno.readTextFile(`${ROOT}scripts/test.sh`);
  // A plain `bun install` after a frozen one failed took whatever the
  // registry had, and rewrote bun.lock.
  const installs = test.match(/^\s*[^#\n]*\bbun install\b[^\n]*$/gm) ?? [];
  assert.ok(installs.length > 0);
  for (const line of installs) assert.match(line, /--frozen-lockfile/, line);
});
