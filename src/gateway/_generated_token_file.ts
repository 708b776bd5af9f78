/**
 * Where `serve` puts the token it generated when its output is not a
 * terminal: a file only this user can read, rather than a service's log.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { trustedDir } from "../runtime/_trusted_dir.ts";
import type { Runtime } from "../runtime/types.ts";

/**
 * The directories tried, in order: systemd's `RuntimeDirectory=` (its
 * first), the login session's runtime directory, then the XDG state
 * directory (`~/.local/state`): each one this user's.
 */
function candidates(runtime: Runtime): string[] {
  const dirs: string[] = [];
  const systemd = runtime.env("RUNTIME_DIRECTORY")?.split(":")[0];
  if (systemd) dirs.push(systemd);
  const xdgRuntime = runtime.env("XDG_RUNTIME_DIR");
  if (xdgRuntime) dirs.push(join(xdgRuntime, "pyproxy"));
  const state = runtime.env("XDG_STATE_HOME");
  const home = runtime.env("HOME");
  if (state) dirs.push(join(state, "pyproxy"));
  else if (home) dirs.push(join(home, ".local", "state", "pyproxy"));
  return dirs;
}

/**
 * Whether `dir` is a directory of this user's that no one else can write
 * to (so nobody else put or can replace what is in it; a file of mode 0600
 * there is this user's to read alone). systemd makes a `RuntimeDirectory=`
 * 0755. Where owners are unknown, existence.
 */
async function onlyOwnerWrites(
  runtime: Runtime,
  dir: string,
): Promise<boolean> {
  const self = runtime.uid?.();
  if (self === undefined || runtime.owner === undefined) {
    return (await runtime.stat(dir))?.isDirectory === true;
  }
  const o = await runtime.owner(dir);
  return o !== null && o.uid === self && (o.mode & 0o170000) === 0o040000 &&
    (o.mode & 0o022) === 0;
}

/**
 * The file name of the token a gateway bound to `host` and `port`
 * generated: `token-<host>-<port>` (`token-127.0.0.1-8000`,
 * `token-::1-8000`), the host as given, without brackets, any character
 * but letters, digits, `.`, `:`, `_` and `-` made `_`. By the port alone,
 * a second gateway of this user on the same port and another address
 * (`127.0.0.2:8000` beside `127.0.0.1:8000`, `::1`) replaced the first's
 * file with its own token, and the first one's users read a token it
 * refused. Two live gateways cannot share an address and port (the TLS
 * port's `SO_REUSEPORT` sharers are refused), so one file each; a
 * gateway killed (`kill -9`) leaves its file to the next on its address
 * and port.
 *
 * @example
 * ```ts ignore
 * generatedTokenName("127.0.0.1", 8000); // "token-127.0.0.1-8000"
 * ```
 */
export function generatedTokenName(host: string, port: number): string {
  const bare = host.startsWith("[") && host.endsWith("]")
    ? host.slice(1, -1)
    : host;
  return `token-${bare.replace(/[^A-Za-z0-9.:_-]/g, "_")}-${port}`;
}

/**
 * Writes `token` to {@linkcode generatedTokenName} (mode 0600) in the
 * first of this user's private directories that works, and gives its
 * path; or why none did. Printed on stdout, a generated token went wherever stdout goes: a
 * service's goes to journald (read by the `adm` and `systemd-journal`
 * groups, and shipped on by log collectors), a container's to `docker
 * logs` and the cluster's log store; with `--allow-eval` that token runs
 * code as the gateway's user. A file a previous start left is replaced.
 *
 * @example
 * ```ts ignore
 * const written = await writeGeneratedToken(runtime, token, "127.0.0.1", 8000);
 * if ("path" in written) console.log(`token in ${written.path}`);
 * ```
 */
export async function writeGeneratedToken(
  runtime: Runtime,
  token: string,
  host: string,
  port: number,
): Promise<{ path: string } | { unwritten: string }> {
  const problems: string[] = [];
  for (const dir of candidates(runtime)) {
    try {
      const checked = await trustedDir(runtime, dir);
      if ("untrusted" in checked) {
        problems.push(checked.untrusted);
        continue;
      }
      await runtime.mkdir(checked.path, 0o700);
      if (!(await onlyOwnerWrites(runtime, checked.path))) {
        problems.push(
          `${checked.path} is not a directory of this user's that only it can write to`,
        );
        continue;
      }
      const path = join(checked.path, generatedTokenName(host, port));
      // A private directory: nobody else put what is there.
      await runtime.remove(path);
      const file = await runtime.openWrite(path);
      try {
        await file.write(new TextEncoder().encode(`${token}\n`));
      } finally {
        await file.close();
      }
      return { path };
    } catch (err) {
      problems.push(`${dir}: ${(err as Error).message}`);
    }
  }
  return {
    unwritten: problems.length === 0
      ? "no RUNTIME_DIRECTORY, XDG_RUNTIME_DIR, XDG_STATE_HOME or HOME"
      : problems.join("; "),
  };
}

/**
 * Removes the file {@linkcode writeGeneratedToken} wrote at `path`, at
 * exit, only while it still holds `token`: a gateway started since on the
 * same address and port (this one killed and its successor started before
 * its exit ended) replaced it with its own token. A file that cannot be
 * read is left alone.
 *
 * @example
 * ```ts ignore
 * await removeGeneratedToken(runtime, "/run/pyproxy/token-127.0.0.1-8000", token);
 * ```
 */
export async function removeGeneratedToken(
  runtime: Runtime,
  path: string,
  token: string,
): Promise<void> {
  try {
    const text = new TextDecoder().decode(await runtime.readFile(path));
    if (text.trim() === token) await runtime.remove(path);
  } catch {
    // Gone already, or no longer readable by this user: not ours to remove.
  }
}

/**
 * A short fingerprint of `token` (the first 8 hex digits of its SHA-256),
 * to tell which token a log speaks of without holding it.
 *
 * @example
 * ```ts ignore
 * console.log(tokenFingerprint("0123456789abcdef0123")); // 8 hex digits
 * ```
 */
export function tokenFingerprint(token: string): string {
  return createHash("sha256").update(token).digest("hex").slice(0, 8);
}
