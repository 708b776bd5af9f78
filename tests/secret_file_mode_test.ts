// Which secret files (token files, TLS keys) are warned about as open to
// other users: a mounted Kubernetes secret read by a non-root container is
// root's and group-readable by the pod's fsGroup (its defaultMode 0400
// becomes 0440), and chmod 600 would lock the gateway out of it.
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import type { ResolvedConfig } from "../src/gateway/config.ts";
import { openToOthers } from "../src/gateway/_secret_file_mode.ts";
import { readTls } from "../src/gateway/_tls_files.ts";
import { warnReadableTokenFiles } from "../src/gateway/_token_files.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { withLogs } from "./_gateway_harness.ts";
import { tempDir } from "./_harness.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

Deno.test("openToOthers warns of group bits only where the process does not read through its group", () => {
  const root = 0;
  const app = 1000;
  // A non-root process reading root's secret through its group (fsGroup).
  assert.equal(openToOthers({ uid: root, mode: 0o100440 }, app), false);
  assert.equal(openToOthers({ uid: root, mode: 0o100640 }, app), false);
  // Others' bits, always.
  assert.equal(openToOthers({ uid: root, mode: 0o100444 }, app), true);
  assert.equal(openToOthers({ uid: root, mode: 0o100404 }, app), true);
  // Its own file, or root (which reads anything): group bits are not needed.
  assert.equal(openToOthers({ uid: app, mode: 0o100440 }, app), true);
  assert.equal(openToOthers({ uid: app, mode: 0o100600 }, app), false);
  assert.equal(openToOthers({ uid: root, mode: 0o100440 }, root), true);
  assert.equal(openToOthers({ uid: 7, mode: 0o100440 }, root), true);
  assert.equal(openToOthers({ uid: root, mode: 0o100400 }, root), false);
  // No user id (Windows): warned as before.
  assert.equal(openToOthers({ uid: root, mode: 0o100440 }, undefined), true);
});

/**
 * The default runtime, as a process of user 1000 would see files that
 * root owns (the tests may run as root, and cannot chown to another user
 * otherwise).
 */
function asUser1000(): Runtime {
  const runtime = defaultRuntime();
  return {
    ...runtime,
    uid: () => 1000,
    owner: async (path) => {
      const owner = await runtime.owner!(path);
      return owner === null ? null : { uid: 0, mode: owner.mode };
    },
  };
}

Deno.test("warnReadableTokenFiles: root's token file read through the pod's fsGroup (0440) is not warned about, 0444 is", async () => {
  await using dir = await tempDir("pyproxy-secret-mode-test-");
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, "0123456789abcdef0123\n");
  const runtime = asUser1000();
  const config = { tokenFile: path } as ResolvedConfig;
  await withLogs(async (records) => {
    const warnings = () =>
      records.filter((r) => r.level === "warning").map((r) =>
        r.message.join("")
      );
    await Deno.chmod(path, 0o440);
    await warnReadableTokenFiles(runtime, config, getLogger(["pyproxy"]));
    assert.deepEqual(warnings(), []);
    await Deno.chmod(path, 0o444);
    await warnReadableTokenFiles(runtime, config, getLogger(["pyproxy"]));
    assert.equal(warnings().length, 1);
    assert.match(warnings()[0]!, /may be read by other users \(mode "?444"?\)/);
  });
});

Deno.test({
  name:
    "readTls: root's key read through the pod's fsGroup (0440) is not warned about, 0444 is",
  ignore: !HAS_OPENSSL,
  fn: async () => {
    await using dir = await tempDir("pyproxy-secret-mode-test-");
    const { cert, key } = await selfSignedCert(dir.path);
    const runtime = asUser1000();
    await withLogs(async (records) => {
      const warnings = () =>
        records.filter((r) => r.level === "warning").map((r) =>
          r.message.join("")
        );
      await Deno.chmod(key, 0o440);
      await readTls(runtime, { cert, key }, undefined, getLogger(["pyproxy"]));
      assert.deepEqual(warnings(), []);
      await Deno.chmod(key, 0o444);
      await readTls(runtime, { cert, key }, undefined, getLogger(["pyproxy"]));
      assert.equal(warnings().length, 1);
      assert.match(warnings()[0]!, /TLS key .* may be read by other users/);
    });
  },
});
