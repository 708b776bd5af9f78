/**
 * The config file a reload reads (`pyproxy.json`, `--config`): refused
 * when another user owns it or could replace it, as a token file is, since
 * a reload applies its tokens.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import type { Runtime } from "../runtime/types.ts";
import { untrustedFile } from "./_untrusted_path.ts";

/**
 * The {@linkcode ConfigError} of a config file another user owns or could
 * replace (`why`, as `untrustedThroughLinks` says it).
 *
 * @example
 * ```ts ignore
 * throw untrustedConfigError("/etc/pyproxy/pyproxy.json", "it belongs to another user (uid 4242)");
 * ```
 */
export function untrustedConfigError(path: string, why: string): ConfigError {
  return new ConfigError(
    `Cannot use config file ${path}: ${why}, and another user who owns or can replace it could put tokens of theirs in it (a reload applies them): make it, and its directory, this user's or root's, writable by no one else, below directories no other user can change`,
    { details: { path, reason: why } },
  );
}

/**
 * Throws {@linkcode untrustedConfigError} when another user owns the config
 * file at `path` or could replace it (it, its directory, a link to it, a
 * directory above); `serve`'s reload, whatever read the file (a
 * `reloadConfig` of the caller's), after it was read. The CLI's reload
 * reads it checked as read (`loadConfig`'s `trustedOnly`); this check of
 * the path is for every other caller. A file gone since is the read's to
 * report: passed over.
 *
 * @example
 * ```ts ignore
 * await refuseUntrustedConfig(runtime, next.configPath);
 * ```
 */
export async function refuseUntrustedConfig(
  runtime: Runtime,
  path: string,
): Promise<void> {
  const why = await untrustedFile(runtime, path).catch(() => undefined);
  if (why !== undefined) throw untrustedConfigError(path, why);
}
