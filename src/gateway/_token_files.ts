/**
 * Tokens from files (`tokenFile`, `manageTokenFile`): a Kubernetes or
 * Docker secret mounted as a file, one token per line. Read by
 * `loadConfig` (so a reload reads them again), by `serve` at start, and
 * polled by {@linkcode TokenFileWatch} while it serves, so that updating
 * the secret rotates the tokens without a signal.
 *
 * @module
 */
import { againIfGone } from "./_again_if_gone.ts";
import { FilePoll } from "./_file_poll.ts";
import type { Logger } from "@logtape/logtape";
import { ConfigError } from "../errors.ts";
import type { Runtime } from "../runtime/types.ts";
import { TOKEN_UNUSABLE, usableToken } from "./config_schema.ts";
import type { ResolvedConfig } from "./config.ts";
import { MAX_TOKENS } from "./_max_tokens.ts";
import { forgetReadable, openToOthers } from "./_secret_file_mode.ts";
import {
  type OpenedFile,
  readTrusted,
  type TrustedRead,
} from "./_trusted_file_read.ts";
import { weakTokenProblem } from "./_weak_token.ts";

/**
 * The largest token file read: 1024 tokens (`MAX_TOKENS`) of 64 characters,
 * each with a comment line of 160 (the tenant it is for), fit.
 */
const MAX_TOKEN_FILE_BYTES = 256 * 1024;
/**
 * How long a token file's read may take, in ms: a local file takes less
 * than one; a hung network file system, or a FIFO put in the file's place
 * between the check and the open, would take forever (and hold the poll,
 * and every reload, behind it).
 */
const READ_TIMEOUT = 2000;
/**
 * Reads of one path that may be without an answer at once: each holds a
 * thread of the runtime's blocking pool until it ends (it cannot be
 * cancelled), so a hung file system polled every few seconds must not
 * pile them up; one stuck for good (a FIFO nobody writes) leaves room.
 */
const MAX_STUCK_READS = 2;
/**
 * The reads of each path under way: one per gateway (`serve` keeps it for
 * its reloads and polls), so the bound holds across them.
 */
export type TokenFileReads = Map<string, number>;

/** The token options and the options naming their files. */
const FILE_OF = {
  token: "tokenFile",
  manageToken: "manageTokenFile",
} as const;

/**
 * Checks a token option from any source (the environment's and a file's
 * skipped the schema): each token long enough and sendable, 1 to
 * `MAX_TOKENS` (1024) of them, none twice.
 */
export function checkToken(
  name: "token" | "manageToken",
  value: string | readonly string[],
  where: string,
): void {
  const list = typeof value === "string" ? [value] : value;
  const problem = list.length === 0
    ? "expected at least one token (leave it out for none)"
    : list.length > MAX_TOKENS
    ? `expected at most ${MAX_TOKENS} tokens`
    : new Set(list).size < list.length
    ? "expected different tokens (one is listed twice)"
    : list.some((t) => t.length < 16)
    ? "expected a token of at least 16 characters"
    : list.every(usableToken)
    ? weakProblem(list)
    : TOKEN_UNUSABLE;
  if (problem !== undefined) {
    throw new ConfigError(`${name}: ${problem} (at ${where})`, {
      details: { path: name, source: where },
    });
  }
}

/**
 * Why a token of `list` is clearly weak (which one, by its place: never
 * the token), or `undefined`: `aaaaaaaaaaaaaaaa` and `password12345678`
 * passed the length check, and a token's id is tested against offline.
 */
function weakProblem(list: readonly string[]): string | undefined {
  for (let i = 0; i < list.length; i++) {
    const problem = weakTokenProblem(list[i]!);
    if (problem !== undefined) {
      return list.length === 1
        ? problem
        : `token ${i + 1} of ${list.length} is ${problem}`;
    }
  }
  return undefined;
}

/**
 * The tokens of a token file's text: one a line, surrounding whitespace
 * (a `\r`, a byte order mark) trimmed, blank lines and lines starting with
 * `#` skipped (so a token cannot start with `#`; a comment after a token
 * is refused by {@linkcode readTokenFiles}).
 */
export function parseTokenFile(text: string): string[] {
  return text.split("\n").map((line) => line.trim()).filter((line) =>
    line !== "" && !line.startsWith("#")
  );
}

/**
 * The mark of a tenant's token in a token file: the word `tenant` after
 * the token and some whitespace (`<token> tenant`). Such a token calls
 * models but is refused the operator's views (`/metrics`, `/v1/status`,
 * the dashboard, ...): docs/gateway.md, "Serving many tenants".
 */
const TENANT_MARK = /^(\S(?:.*\S)?)\s+tenant$/;

/**
 * The tokens of a token file's lines ({@linkcode parseTokenFile}), and
 * those of them marked `tenant` (`<token> tenant`), marks taken off.
 */
export function tokenFileEntries(
  lines: readonly string[],
): { tokens: string[]; tenants: string[] } {
  const tokens: string[] = [];
  const tenants: string[] = [];
  for (const line of lines) {
    const marked = TENANT_MARK.exec(line);
    if (marked === null) {
      tokens.push(line);
    } else {
      tokens.push(marked[1]!);
      tenants.push(marked[1]!);
    }
  }
  return { tokens, tenants };
}

/** What {@linkcode readTokenFiles} reads. */
export interface FileTokens {
  token?: string[];
  manageToken?: string[];
  /**
   * Of `token`'s, those marked `tenant` in the token file; left out when
   * none is (a configuration whose `tokenFile` reads none has none).
   */
  tenantToken?: string[];
}

/**
 * `config` with `tokens` (read from its files) in force: a `tenantToken`
 * the files no longer mark is dropped.
 */
export function withTokensRead(
  config: ResolvedConfig,
  tokens: FileTokens,
): ResolvedConfig {
  const { tenantToken: _, ...rest } = config;
  const tenantToken = tokens.tenantToken ??
    (config.tokenFile === undefined ? config.tenantToken : undefined);
  return {
    ...rest,
    ...tokens,
    ...(tenantToken === undefined ? {} : { tenantToken }),
  };
}

/**
 * A token file's text, or a {@linkcode ConfigError} naming the option; in
 * {@linkcode READ_TIMEOUT} ms at most, whatever the file system does.
 */
async function readTokenFile(
  runtime: Runtime,
  option: "tokenFile" | "manageTokenFile",
  path: string,
  reading: TokenFileReads,
): Promise<string> {
  const fail = (why: string, cause?: unknown): never => {
    throw new ConfigError(`${option}: cannot read ${path}: ${why}`, {
      ...(cause === undefined ? {} : { cause }),
      details: { path: option },
    });
  };
  const stuck = reading.get(path) ?? 0;
  if (stuck >= MAX_STUCK_READS) {
    fail(
      `${stuck} reads of it have had no answer yet (a hung file system, or a FIFO)`,
    );
  }
  reading.set(path, stuck + 1);
  const refuse = (why: string): never => {
    throw new ConfigError(
      `${option}: cannot use ${path}: ${why}, and whoever can write it could put a token of their own in it${
        option === "manageTokenFile" ? " (and run code as this user)" : ""
      }: make it, and its directory, this user's or root's, writable by no one else, below directories no other user can change (a mounted Kubernetes secret is root's)`,
      { details: { path: option, reason: why } },
    );
  };
  const read = readWithin(runtime, path, fail, refuse).finally(() => {
    const left = reading.get(path)! - 1;
    if (left === 0) reading.delete(path);
    else reading.set(path, left);
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      read,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          try {
            fail(
              `no answer within ${READ_TIMEOUT} ms (a hung file system, or a FIFO)`,
            );
          } catch (err) {
            reject(err);
          }
        }, READ_TIMEOUT);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    // A read that ends after the timeout: its result or error is dropped.
    read.catch(() => {});
  }
}

/** {@linkcode readTokenFile}'s read, without the timeout. */
async function readWithin(
  runtime: Runtime,
  path: string,
  fail: (why: string, cause?: unknown) => never,
  refuse: (why: string) => never,
): Promise<string> {
  // Not a FIFO or a device: reading one could wait or never end.
  const read = async (): Promise<
    { value: Uint8Array | null; file?: OpenedFile }
  > => {
    if (runtime.readRegularFile === undefined) {
      return { value: await statThenRead(runtime, path) };
    }
    const got = await runtime.readRegularFile(path, MAX_TOKEN_FILE_BYTES);
    return got === null ? { value: null } : { value: got.bytes, file: got };
  };
  // Its mode alone was checked (a warning): a file of another user's, or
  // one in a directory of theirs, is theirs to write a token into (with
  // chmod 600 too), or to replace with a link to a file they can read; the
  // gateway then let them in. As the plugin modules and pyproxy.json are
  // (what they hold runs as this user; a management token does too). The
  // file read is the one checked (`readTrusted`): a file of theirs swapped
  // in for the read alone was taken.
  let got: TrustedRead<Uint8Array | null>;
  try {
    got = await readTrusted(runtime, path, () => againIfGone(read));
  } catch (err) {
    return (err as { code?: unknown }).code === "ENOENT"
      ? fail("no such file", err)
      : fail((err as Error).message, err);
  }
  if (got.untrusted !== undefined) return refuse(got.untrusted);
  const bytes = got.value;
  if (bytes === null) return fail("not a regular file");
  if (bytes.length > MAX_TOKEN_FILE_BYTES) {
    return fail(
      `more than a token file holds (at most ${MAX_TOKEN_FILE_BYTES} bytes)`,
    );
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (err) {
    return fail((err as Error).message, err);
  }
}

/**
 * {@linkcode Runtime.readRegularFile} for a runtime without it: a FIFO put
 * at `path` between the `stat` and the open blocks the open (the timeout
 * of {@linkcode readTokenFile} ends the wait, not the open).
 */
async function statThenRead(
  runtime: Runtime,
  path: string,
): Promise<Uint8Array | null> {
  const info = await runtime.stat(path);
  if (info === null) {
    throw Object.assign(new Error("no such file"), { code: "ENOENT" });
  }
  if (!info.isFile) return null;
  // Never more than the limit, whatever was put there since the stat.
  const bytes = new Uint8Array(MAX_TOKEN_FILE_BYTES + 1);
  let length = 0;
  const file = await runtime.openRead(path);
  try {
    while (length < bytes.length) {
      const n = await file.read(bytes.subarray(length));
      if (n === null) break;
      length += n;
    }
  } finally {
    await file.close();
  }
  return bytes.subarray(0, length);
}

/** The token options a configuration reads from files. */
export function hasTokenFiles(config: ResolvedConfig): boolean {
  return config.tokenFile !== undefined ||
    config.manageTokenFile !== undefined;
}

/**
 * Reads `config`'s token files and checks their tokens as inline ones are
 * (and that no token is both an inference and a management one, with the
 * other option's inline tokens too): the tokens to put in `token` and
 * `manageToken`, or a {@linkcode ConfigError} naming the option and file.
 */
export async function readTokenFiles(
  runtime: Runtime,
  config: ResolvedConfig,
  reading: TokenFileReads = new Map(),
): Promise<FileTokens> {
  const out: FileTokens = {};
  // Read, it would fail as a token both kinds: say what is wrong.
  if (
    config.tokenFile !== undefined &&
    config.tokenFile === config.manageTokenFile
  ) {
    throw new ConfigError(
      `manageTokenFile: the same file as tokenFile (${config.tokenFile}); the management token must differ from the inference token, so it needs a file of its own`,
      { details: { path: "manageTokenFile" } },
    );
  }
  for (const name of ["token", "manageToken"] as const) {
    const path = config[FILE_OF[name]];
    if (path === undefined) continue;
    const lines = parseTokenFile(
      await readTokenFile(runtime, FILE_OF[name], path, reading),
    );
    // `<token>  # added 2026-12-06` would be one token, spaces and all
    // (one a client would not send): a comment takes a line of its own.
    if (lines.some((t) => /\s#/.test(t))) {
      throw new ConfigError(
        `${name}: expected a "#" comment on a line of its own (a token followed by a space and "#" would hold the comment) (at ${
          FILE_OF[name]
        }: ${path})`,
        { details: { path: name, source: `${FILE_OF[name]}: ${path}` } },
      );
    }
    const { tokens, tenants } = tokenFileEntries(lines);
    // `<token> Tenant`, `<token> tenants`, `<token> tenant acme`: not the
    // mark, so one token, spaces and all, that no client sends; the tenant
    // got 401 and the log said nothing. Named by its place, never its words
    // (a token of another form may be in them).
    const spaced = tokens.findIndex((t) => /\s/.test(t));
    if (spaced >= 0) {
      throw new ConfigError(
        `${name}: ${
          tokens.length === 1
            ? "the token"
            : `token ${spaced + 1} of ${tokens.length}`
        } holds whitespace: a line is a token alone, or a token, whitespace and the mark "tenant" (lower case, the last word; nothing after it) (at ${
          FILE_OF[name]
        }: ${path})`,
        { details: { path: name, source: `${FILE_OF[name]}: ${path}` } },
      );
    }
    if (name === "manageToken" && tenants.length > 0) {
      // A management token runs code and loads models: never a tenant's.
      throw new ConfigError(
        `manageToken: a management token cannot be marked "tenant" (it runs eval and model management, the operator's); mark tenants' tokens in tokenFile (at ${
          FILE_OF[name]
        }: ${path})`,
        { details: { path: name, source: `${FILE_OF[name]}: ${path}` } },
      );
    }
    checkToken(name, tokens, `${FILE_OF[name]}: ${path}`);
    out[name] = tokens;
    if (tenants.length > 0) out.tenantToken = tenants;
  }
  const token = out.token ?? config.token;
  const manage = out.manageToken ?? config.manageToken;
  if (token !== undefined && manage !== undefined) {
    const managing = new Set(typeof manage === "string" ? [manage] : manage);
    if (
      (typeof token === "string" ? [token] : token).some((t) => managing.has(t))
    ) {
      throw new ConfigError(
        `manageToken: must differ from token (the inference token): with the same one, every client that may call a model could run code and load models (at ${
          [config.tokenFile, config.manageTokenFile].filter((p) =>
            p !== undefined
          ).join(" and ")
        })`,
        { details: { path: "manageToken" } },
      );
    }
  }
  return out;
}

/**
 * The secret files warned about as readable by others: each option's file
 * (`tokenFile`, `manageTokenFile`, `tls.key`; its real path, through the
 * links) and mode, until it is no longer so.
 */
export type ReadableWarnings = Map<string, string>;

/**
 * Warns of a token file that group or others may read, as of a TLS key: a
 * Kubernetes secret's files are 0644 unless its `defaultMode` says 0400.
 * Once per file: `warned` keeps what was warned about, so that a reload or
 * a poll warns again only of another file (the kubelet's rotation makes a
 * new one), or another mode. Resolves within {@linkcode READ_TIMEOUT} ms
 * whatever the file system does (a reload and the polls wait for it: a hung
 * `stat` would hold them for good); a warning may then come later.
 */
export async function warnReadableTokenFiles(
  runtime: Runtime,
  config: ResolvedConfig,
  logger: Logger,
  warned: ReadableWarnings = new Map(),
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      warnReadable(runtime, config, logger, warned),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, READ_TIMEOUT);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** {@linkcode warnReadableTokenFiles}, without the timeout. */
async function warnReadable(
  runtime: Runtime,
  config: ResolvedConfig,
  logger: Logger,
  warned: ReadableWarnings,
): Promise<void> {
  for (const option of ["tokenFile", "manageTokenFile"] as const) {
    const path = config[option];
    if (path === undefined || runtime.owner === undefined) {
      warned.delete(option);
      continue;
    }
    try {
      // The file itself, not the link to it (a mounted secret is a link).
      const real = await runtime.realPath(path);
      const owner = await runtime.owner(real);
      if (owner == null || !openToOthers(owner, runtime.uid?.())) {
        // This file is private now: warned about again if it becomes
        // readable. Only this file's warning is forgotten: a poll that read
        // a configuration a reload has replaced since (another file) ran
        // alongside the reload's check, and its forgetting the new file's
        // warning had that warning written twice (a full CI run).
        forgetReadable(warned, option, real);
        continue;
      }
      const mode = (owner.mode & 0o777).toString(8);
      const key = `${mode} ${real}`;
      if (warned.get(option) === key) continue;
      warned.set(option, key);
      logger.warn(
        "Token file {path} ({option}) may be read by other users (mode {mode}): chmod 600 it (a Kubernetes secret: defaultMode 0400, and the pod's fsGroup for a non-root user)",
        { path, option, mode },
      );
    } catch {
      // Gone since it was read: the next read says so.
    }
  }
}

/**
 * Options of {@linkcode TokenFileWatch}.
 */
export interface TokenFileWatchOptions {
  runtime: Runtime;
  logger: Logger;
  /** How often the files are read, in ms. */
  interval: number;
  /** The gateway's reads under way (shared with its reloads). */
  reading: TokenFileReads;
  /**
   * The files warned about as readable by others (shared with the start,
   * the reloads and the applies): a poll that finds the tokens unchanged
   * checks the files' modes (a chmod alone changes no token).
   */
  warned: ReadableWarnings;
  /** The configuration in force (its file paths and tokens). */
  current(): ResolvedConfig;
  /**
   * Applies tokens read from `config`'s files (one at a time with the
   * reloads; it compares with what is in force, and skips them when
   * `config` is no longer what is in force: a reload applied meanwhile).
   */
  apply(tokens: FileTokens, config: ResolvedConfig): Promise<void>;
}

/**
 * Reads the token files every `interval` ms and applies their tokens when
 * they change. Polled, not watched: the kubelet updates a mounted secret
 * by swapping a symlink (`..data`) in the directory above, which an
 * inotify watch on the file misses (it watches the old inode), and a
 * watch on the directory misses a `subPath` mount or a network file
 * system; a read of a small file every few seconds costs nothing that
 * matters, and nothing per request. What is compared is the tokens read
 * with those in force (not with the last read: a reload may have applied
 * others since), not the file's times (a rewrite within the file system's
 * time granularity, or of the same size, is seen too; a new comment is not
 * a change). A change is applied once two polls in a row read it (a file
 * rewritten in place may be read half written). A file unreadable or
 * invalid keeps the tokens in force and is logged once until its content,
 * or the error, changes.
 */
export class TokenFileWatch {
  #options: TokenFileWatchOptions;
  #poll: FilePoll;
  /** The last read's error (with the files' paths), until a read is applied. */
  #failed: string | undefined;
  /**
   * The last read's tokens (with the files' paths) when they were a change
   * not applied yet: applied once the next poll reads the same.
   */
  #changed: string | undefined;
  /**
   * The tokens and the error of the last apply that failed: logged once,
   * tried again at each change seen twice, logged again only when the
   * tokens or the error differ.
   */
  #applyFailed: string | undefined;

  constructor(options: TokenFileWatchOptions) {
    this.#options = options;
    this.#poll = new FilePoll(
      options.interval,
      () => this.#check(),
      (message) =>
        options.logger.error("Cannot apply the token files: {message}", {
          message,
        }),
    );
  }

  /**
   * Whether the files' last read could not be used (unreadable, invalid, or
   * refused by the apply): the tokens in force are older than the files,
   * and a restart would fail on them. `pyproxy_token_files_refused`.
   */
  get refused(): boolean {
    return this.#failed !== undefined || this.#applyFailed !== undefined;
  }

  /** Stops reading (at shutdown). */
  stop(): void {
    this.#poll.stop();
  }

  /** Resolves once no read of the files is under way. */
  settled(): Promise<void> {
    return this.#poll.settled();
  }

  async #check(): Promise<void> {
    const { runtime, logger } = this.#options;
    const config = this.#options.current();
    if (!hasTokenFiles(config)) return;
    let tokens: FileTokens;
    try {
      tokens = await readTokenFiles(runtime, config, this.#options.reading);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const key = JSON.stringify(
        [config.tokenFile, config.manageTokenFile, message],
      );
      // The file is moving: a change is seen twice again before it is applied.
      this.#changed = undefined;
      if (key === this.#failed || this.#poll.stopped) return;
      this.#failed = key;
      logger.error(
        "Token file changed, but cannot be used; the tokens in force are kept: {message}",
        { message },
      );
      return;
    }
    // After an error, the apply logs that the files are read again.
    const recovered = this.#failed !== undefined;
    if (this.#poll.stopped) return;
    if (!recovered && tokenChanges(config, tokens).length === 0) {
      this.#changed = undefined;
      await warnReadableTokenFiles(
        runtime,
        config,
        logger,
        this.#options.warned,
      );
      return;
    }
    // A change is applied once two polls in a row read it: a file rewritten
    // in place (truncated, then written line by line or in chunks) may be
    // read half written, and its first lines are a valid token list. Applied,
    // it refused every client whose token was further down and ended their
    // streams and subscriptions until the next poll (chaos47: 500 of 1000
    // tenants refused). Kept in memory as the tokens in force are.
    const seen = JSON.stringify([
      config.tokenFile,
      config.manageTokenFile,
      tokens.token ?? null,
      tokens.manageToken ?? null,
      tokens.tenantToken ?? null,
    ]);
    if (seen !== this.#changed) {
      this.#changed = seen;
      return;
    }
    this.#changed = undefined;
    this.#failed = undefined;
    try {
      await this.#options.apply(tokens, config);
    } catch (err) {
      // Every second poll read the same change and failed the same way:
      // one error line every two intervals (tenants27 saw one each 10 s).
      const message = err instanceof Error ? err.message : String(err);
      const key = JSON.stringify([seen, message]);
      if (key === this.#applyFailed || this.#poll.stopped) return;
      this.#applyFailed = key;
      logger.error("Cannot apply the token files: {message}", { message });
      return;
    }
    this.#applyFailed = undefined;
  }
}

/**
 * `config` with its token files read into `token` and `manageToken` (the
 * same object when it has none).
 */
export async function withFileTokens(
  runtime: Runtime,
  config: ResolvedConfig,
  reading: TokenFileReads,
): Promise<ResolvedConfig> {
  return hasTokenFiles(config)
    ? withTokensRead(config, await readTokenFiles(runtime, config, reading))
    : config;
}

/**
 * `current` reading its tokens from the files `next` names (or from none),
 * polled at `next`'s interval: what a reload applies.
 */
export function withTokenFilesOf(
  current: ResolvedConfig,
  next: ResolvedConfig,
): ResolvedConfig {
  const {
    tokenFile: _t,
    manageTokenFile: _m,
    tokenFileInterval: _i,
    ...rest
  } = current;
  return {
    ...rest,
    ...(next.tokenFile === undefined ? {} : { tokenFile: next.tokenFile }),
    ...(next.manageTokenFile === undefined
      ? {}
      : { manageTokenFile: next.manageTokenFile }),
    ...(next.tokenFileInterval === undefined
      ? {}
      : { tokenFileInterval: next.tokenFileInterval }),
  };
}

/**
 * What `tokens` change in `config`, for the log (never a secret): e.g.
 * `token (2)`; the same tokens in another order are no change.
 */
export function tokenChanges(
  config: ResolvedConfig,
  tokens: FileTokens,
): string[] {
  const changed: string[] = [];
  for (const name of ["token", "manageToken"] as const) {
    const next = tokens[name];
    if (next === undefined) continue;
    const before = config[name];
    const was = new Set(typeof before === "string" ? [before] : before ?? []);
    if (was.size !== next.length || next.some((t) => !was.has(t))) {
      changed.push(`${name} (${next.length})`);
    }
  }
  // Marks moved (a token made a tenant's, or an operator's again): a
  // change of what those tokens may read, whatever the tokens.
  if (config.tokenFile !== undefined) {
    const was = new Set(config.tenantToken ?? []);
    const next = tokens.tenantToken ?? [];
    if (was.size !== next.length || next.some((t) => !was.has(t))) {
      changed.push(`tenantToken (${next.length})`);
    }
  }
  return changed;
}
