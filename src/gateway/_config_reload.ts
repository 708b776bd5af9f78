/**
 * What a reload of `serve` (SIGHUP, `GatewayServer.reload()`) changes: the
 * configuration read again and checked as at start, compared with the one
 * in force. Only the tokens (and their files' polling) and the TLS
 * certificate change while serving; the other settings differing are
 * named, to be warned about.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { X509Certificate } from "node:crypto";
import { ConfigError } from "../errors.ts";
import type { Runtime } from "../runtime/types.ts";
import { DEFAULTS, type ResolvedConfig, tokenList } from "./config.ts";
import { readTls } from "./_tls_files.ts";
import { CERTIFICATE, firstPemBlock } from "./_pem_file.ts";
import type { ReadableWarnings } from "./_token_files.ts";
import { checkTokenFileInterval } from "./_token_file_interval.ts";

/** The settings a reload applies, all checked. */
export interface ReloadPlan {
  /** The tokens in force after it (the generated one kept). */
  token?: string | string[];
  manageToken?: string | string[];
  /** Of `token`'s, the tenants' (a token file's marks). */
  tenantToken?: string[];
  /** The new certificate and key, when they differ from those served. */
  tls?: { cert: string; key: string };
  /** What changes, for the log (never a secret): e.g. `token (2)`. */
  changed: string[];
  /** The settings that differ but take effect at a restart only. */
  ignored: string[];
}

/** The keys a reload applies; the others are compared to warn. */
const APPLIED = new Set([
  "token",
  "manageToken",
  "tenantToken",
  "tls",
  "tokenGenerated",
  "configPath",
  // Read again by the reload, and polled from then on (at the interval
  // the reload read: the poll starts, stops or changes with it).
  "tokenFile",
  "manageTokenFile",
  "tokenFileInterval",
  // The TLS files' poll: at the interval the reload read.
  "tlsFileInterval",
]);

/**
 * Throws the {@linkcode ConfigError} `serve` would throw at start for an
 * empty token (checked there too: a configuration built by hand skips
 * `resolveConfig`).
 */
export function checkTokensSet(config: ResolvedConfig): void {
  for (const name of ["token", "manageToken"] as const) {
    const list = config[name] === undefined
      ? undefined
      : tokenList(config[name]);
    if (list !== undefined && (list.length === 0 || list.includes(""))) {
      throw new ConfigError(
        `${name}: empty (leave it out for no token); an empty token would let the dashboard's ?token= and a channel subscription's token subprotocol through without one`,
        { details: { path: name } },
      );
    }
  }
}

/**
 * Compares `next` (the configuration read again) with `current` and reads
 * the certificate files again: a {@linkcode ConfigError} when the reload
 * cannot be applied as a whole (nothing is then changed). `warned`: the
 * secret files warned about as readable by others (a TLS key warned about
 * already is not again).
 */
export async function reloadPlan(
  current: ResolvedConfig,
  served: { cert: string; key: string } | undefined,
  next: ResolvedConfig,
  runtime: Runtime,
  logger: Logger,
  warned?: ReadableWarnings,
): Promise<ReloadPlan> {
  checkTokensSet(next);
  checkTokenFileInterval(next);
  const where = next.configPath ?? "config";
  // Read again, a generated token would be another: it stays. A token
  // removed while eval or management is on would be generated too: that
  // is a token nobody knows, refused as turning it off is.
  let token = next.token;
  if (next.tokenGenerated === true) {
    if (current.tokenGenerated !== true) {
      throw new ConfigError(
        `token: removed from the configuration; a reload cannot turn the token off (restart for that) (at ${where}: token)`,
        { details: { path: "token" } },
      );
    }
    token = current.token;
  }
  for (
    const [name, before, after] of [
      ["token", current.token, token],
      ["manageToken", current.manageToken, next.manageToken],
    ] as const
  ) {
    if ((before === undefined) !== (after === undefined)) {
      throw new ConfigError(
        `${name}: ${
          after === undefined ? "removed from" : "added to"
        } the configuration; a reload cannot turn ${name} ${
          after === undefined ? "off" : "on"
        } (restart for that) (at ${where}: ${name})`,
        { details: { path: name } },
      );
    }
  }
  if ((current.tls === undefined) !== (next.tls === undefined)) {
    throw new ConfigError(
      `tls: ${
        next.tls === undefined ? "removed from" : "added to"
      } the configuration; a reload cannot switch between HTTP and HTTPS (restart for that) (at ${where}: tls)`,
      { details: { path: "tls" } },
    );
  }
  const tls = next.tls === undefined
    ? undefined
    : await readTls(runtime, next.tls, next.configPath, logger, warned);
  const changed: string[] = [];
  if (!sameList(current.token, token)) {
    changed.push(`token (${tokenList(token).length})`);
  }
  if (!sameList(current.manageToken, next.manageToken)) {
    changed.push(`manageToken (${tokenList(next.manageToken).length})`);
  }
  if (!sameList(current.tenantToken ?? [], next.tenantToken ?? [])) {
    changed.push(`tenantToken (${next.tenantToken?.length ?? 0})`);
  }
  const newTls = tls !== undefined &&
      (served === undefined || tls.cert !== served.cert ||
        tls.key !== served.key)
    ? tls
    : undefined;
  if (newTls !== undefined) changed.push(`tls (${certificateSummary(tls!)})`);
  const ignored = Object.keys({ ...current, ...next }).filter((key) =>
    !APPLIED.has(key) &&
    canonical((current as unknown as Record<string, unknown>)[key]) !==
      canonical((next as unknown as Record<string, unknown>)[key])
  ).sort();
  return {
    ...(token === undefined ? {} : { token }),
    ...(next.manageToken === undefined
      ? {}
      : { manageToken: next.manageToken }),
    ...(next.tenantToken === undefined
      ? {}
      : { tenantToken: next.tenantToken }),
    ...(newTls === undefined ? {} : { tls: newTls }),
    changed,
    ignored,
  };
}

/** The same tokens (in any order: rotation lists may be reordered). */
function sameList(
  a: string | readonly string[] | undefined,
  b: string | readonly string[] | undefined,
): boolean {
  const x = tokenList(a).sort();
  const y = tokenList(b).sort();
  return x.length === y.length && x.every((t, i) => t === y[i]);
}

/**
 * The TLS files `next` names and their poll's interval (a configuration
 * built by hand may leave it out: the default), for the configuration in
 * force after a reload; nothing without TLS (a reload cannot turn it off).
 */
export function withTlsFilesOf(
  next: ResolvedConfig,
): Pick<ResolvedConfig, "tls" | "tlsFileInterval"> {
  return next.tls === undefined ? {} : {
    tls: next.tls,
    tlsFileInterval: next.tlsFileInterval ?? DEFAULTS.tlsFileInterval,
  };
}

/** The served certificate's subject and expiry, for the log. */
export function certificateSummary(tls: { cert: string }): string {
  try {
    // Its first certificate: a file with the key first (HAProxy's form) is
    // served, but Deno's node:crypto parses only a text's first block.
    const cert = new X509Certificate(
      firstPemBlock(tls.cert, CERTIFICATE) ?? tls.cert,
    );
    return `${
      cert.subject.replaceAll("\n", ", ")
    }, valid until ${cert.validTo}`;
  } catch {
    return "certificate";
  }
}

/** A setting as comparable text (BigInt options, key order kept). */
function canonical(value: unknown): string {
  return JSON.stringify(
    value,
    (_key, v) => typeof v === "bigint" ? `${v}n` : v,
  ) ?? "undefined";
}
