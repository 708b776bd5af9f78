// Which secret files (token files, TLS keys) are warned about as open to
// other users: a mounted Kubernetes secret read by a non-root container is
// root's and group-readable by the pod's fsGroup (its defaultMode 0400
// becomes 0440), and chmod 600 would lock the gateway out of it.
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { ConfigError } from "../src/errors.ts";
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

Deno.test({
  name:
    "readTls refuses a key another user owns or could replace (theirs, in a directory of theirs, linked from one, below one), takes a Kubernetes secret's layout and a certificate of theirs (needs root to chown: ignored otherwise)",
  ignore: !HAS_OPENSSL || Deno.build.os === "windows" || Deno.uid() !== 0,
  fn: async () => {
    // Only the key's mode was checked (a warning, and none for 0600): a key
    // of another user's was served (they read it, whatever its mode), as was
    // one in a directory of theirs (theirs to replace, with the certificate
    // beside it): either way they could pass for the gateway (security25).
    const OTHER = 4242;
    const FS_GROUP = 4243;
    await using dir = await tempDir("pyproxy-tls-key-owner-test-");
    const made = `${dir.path}/made`;
    await Deno.mkdir(made);
    const { cert, key } = await selfSignedCert(made);
    const runtime = defaultRuntime();
    const logger = getLogger(["pyproxy"]);
    const refused = async (keyPath: string, why: RegExp, certPath = cert) => {
      const err = await readTls(
        runtime,
        { cert: certPath, key: keyPath },
        undefined,
        logger,
      ).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof ConfigError, `${keyPath} was taken`);
      assert.match(
        err.message,
        new RegExp(`^tls\\.key: cannot use ${keyPath}: `),
      );
      assert.match(err.message, why);
      assert.match(err.message, /can pass for this gateway/);
      assert.match(err.message, /--tls-key/);
    };
    // Theirs, mode 0600: not even warned about before.
    const theirs = `${dir.path}/theirs.key`;
    await Deno.copyFile(key, theirs);
    await Deno.chmod(theirs, 0o600);
    await Deno.chown(theirs, OTHER, OTHER);
    await refused(theirs, /: it belongs to another user \(uid 4242\)/);
    // Root's key and certificate in a directory of theirs.
    await Deno.mkdir(`${dir.path}/their-dir`, { mode: 0o755 });
    await Deno.copyFile(key, `${dir.path}/their-dir/tls.key`);
    await Deno.copyFile(cert, `${dir.path}/their-dir/tls.crt`);
    await Deno.chown(`${dir.path}/their-dir`, OTHER, OTHER);
    await refused(
      `${dir.path}/their-dir/tls.key`,
      /its directory belongs to another user \(uid 4242\)/,
      `${dir.path}/their-dir/tls.crt`,
    );
    // Their link to root's key.
    await Deno.symlink(key, `${dir.path}/link.key`);
    const chown = await new Deno.Command("chown", {
      args: ["-h", `${OTHER}:${OTHER}`, `${dir.path}/link.key`],
    }).output();
    assert.ok(chown.success, new TextDecoder().decode(chown.stderr));
    await refused(
      `${dir.path}/link.key`,
      /belongs to another user \(uid 4242\)/,
    );
    // Root's private directory below one every user can write (no sticky
    // bit): they rename it away and put theirs in its place.
    await Deno.mkdir(`${dir.path}/above/private`, { recursive: true });
    await Deno.chmod(`${dir.path}/above/private`, 0o700);
    await Deno.copyFile(key, `${dir.path}/above/private/tls.key`);
    await Deno.chmod(`${dir.path}/above`, 0o777);
    await refused(
      `${dir.path}/above/private/tls.key`,
      /every user can write to .*\/above, a directory above it \(mode 0777\)/,
    );
    // The certificate is public: one of theirs beside root's key is served
    // (a certificate they put there is checked against the key).
    const theirCert = `${dir.path}/their.crt`;
    await Deno.copyFile(cert, theirCert);
    await Deno.chown(theirCert, OTHER, OTHER);
    assert.equal(
      (await readTls(runtime, { cert: theirCert, key }, undefined, logger))
        .cert,
      await Deno.readTextFile(cert),
    );
    // A Kubernetes TLS secret: the volume root:fsGroup 3777 (sticky), the
    // timestamped directory and the files root:fsGroup, reached through
    // tls.key -> ..data/tls.key: taken by root and by the pod's user.
    const secret = `${dir.path}/secret`;
    await Deno.mkdir(`${secret}/..2026_12_07_1`, { recursive: true });
    await Deno.copyFile(cert, `${secret}/..2026_12_07_1/tls.crt`);
    await Deno.copyFile(key, `${secret}/..2026_12_07_1/tls.key`);
    await Deno.chmod(`${secret}/..2026_12_07_1/tls.key`, 0o440);
    await Deno.chown(`${secret}/..2026_12_07_1/tls.key`, 0, FS_GROUP);
    await Deno.chmod(`${secret}/..2026_12_07_1`, 0o2755);
    await Deno.chown(`${secret}/..2026_12_07_1`, 0, FS_GROUP);
    await Deno.symlink("..2026_12_07_1", `${secret}/..data`);
    await Deno.symlink("..data/tls.crt", `${secret}/tls.crt`);
    await Deno.symlink("..data/tls.key", `${secret}/tls.key`);
    await Deno.chmod(secret, 0o3777);
    await Deno.chown(secret, 0, FS_GROUP);
    const paths = { cert: `${secret}/tls.crt`, key: `${secret}/tls.key` };
    for (const as of [runtime, { ...runtime, uid: () => 1000 }]) {
      assert.equal(
        (await readTls(as, paths, undefined, logger)).key,
        await Deno.readTextFile(key),
      );
    }
  },
});
