/**
 * Tokens that `serve` was given where other users of the machine can read
 * them, said at start.
 *
 * @module
 */
import type { Runtime } from "../runtime/types.ts";
import type { GatewayConfig } from "./config.ts";
import { openToOthers } from "./_secret_file_mode.ts";

/**
 * Warnings, one per place, for the tokens given where any other user of the
 * machine reads them: the command line (`--token`, `--manage-token`: every
 * user reads a process's arguments, `ps -ef`, `/proc/<pid>/cmdline`), and a
 * configuration file holding `token` or `manageToken` that others may read
 * (`0644` is what an editor makes under the usual umask). Token files that
 * others may read are warned about elsewhere (`warnReadableTokenFiles`).
 * On a shared host either hands the token to every local user, who can then
 * call every model (and, with the management token, run code through eval).
 * A file that cannot be read or parsed gives no warning (the start reads it
 * and says so).
 *
 * @example
 * ```ts ignore
 * for (const line of await exposedTokenWarnings(runtime, cli, config.configPath)) logger.warn(line);
 * ```
 */
export async function exposedTokenWarnings(
  runtime: Runtime,
  cli: GatewayConfig,
  configPath: string | undefined,
): Promise<string[]> {
  const warnings: string[] = [];
  const flags = [
    ...(cli.token === undefined ? [] : [["--token", "PYPROXY_TOKEN"]]),
    ...(cli.manageToken === undefined
      ? []
      : [["--manage-token", "PYPROXY_MANAGE_TOKEN"]]),
  ];
  for (const [flag, variable] of flags) {
    warnings.push(
      `${flag} puts the token in this process's command line, which every user of this machine can read (ps, /proc/${runtime.pid()}/cmdline): set ${variable} or ${flag}-file instead`,
    );
  }
  if (configPath === undefined || runtime.owner === undefined) return warnings;
  try {
    // The file itself, not a link to it (a mounted ConfigMap is a link).
    const real = await runtime.realPath(configPath);
    const owner = await runtime.owner(real);
    if (owner == null || !openToOthers(owner, runtime.uid?.())) return warnings;
    const json: unknown = JSON.parse(
      new TextDecoder().decode(await runtime.readFile(real)),
    );
    if (typeof json !== "object" || json === null) return warnings;
    const held = ["token", "manageToken"].filter((name) =>
      Object.hasOwn(json, name) &&
      (json as Record<string, unknown>)[name] !== undefined
    );
    if (held.length > 0) {
      warnings.push(
        `${configPath} holds ${
          held.map((name) => `"${name}"`).join(" and ")
        } and other users may read it (mode ${
          (owner.mode & 0o777).toString(8)
        }): chmod 600 it, or move the token to a file of its own ("tokenFile") or to the environment`,
      );
    }
  } catch {
    // Unreadable or not JSON: the start says so where it reads it.
  }
  return warnings;
}
