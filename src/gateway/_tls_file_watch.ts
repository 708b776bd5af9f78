/**
 * The TLS files (`tls.cert`, `tls.key`) polled while `serve` serves, so
 * that a renewed certificate (cert-manager updating a mounted Kubernetes
 * secret, which no one signals) is served without a reload.
 *
 * @module
 */
import { againIfGone } from "./_again_if_gone.ts";
import { FilePoll } from "./_file_poll.ts";
import { createHash } from "node:crypto";
import type { Logger } from "@logtape/logtape";
import { ConfigError } from "../errors.ts";
import type { Runtime } from "../runtime/types.ts";
import type { ResolvedConfig } from "./config.ts";
import { PEM_READ_TIMEOUT_MS, readPemFile } from "./_pem_file.ts";
import { warnReadableTlsKey } from "./_tls_files.ts";
import type { ReadableWarnings } from "./_token_files.ts";
import { untrustedFile } from "./_untrusted_path.ts";

/**
 * Polls in a row that must find the same unusable pair before it is
 * logged as an error: a copy by hand writes one file and then the other,
 * and a poll between the two finds a key that is not the certificate's.
 */
const UNUSABLE_POLLS = 2;

/** Options of {@linkcode TlsFileWatch}. */
export interface TlsFileWatchOptions {
  runtime: Runtime;
  logger: Logger;
  /** How often the files are read, in ms. */
  interval: number;
  /** The configuration in force (its `tls` paths). */
  current(): ResolvedConfig;
  /** The certificate and key served (their PEM texts). */
  served(): { cert: string; key: string } | undefined;
  /**
   * The key files warned about as readable by others (shared with the
   * start, the reloads and the token files' warnings).
   */
  warned: ReadableWarnings;
  /**
   * Reads `config`'s TLS files again, checked, and serves them when they
   * differ from those served: one at a time with the reloads, and not when
   * `config`'s paths are no longer those in force. Throws the
   * {@linkcode ConfigError} of files that cannot be served.
   */
  apply(config: ResolvedConfig): Promise<void>;
}

/**
 * Reads the TLS files every `interval` ms and serves their certificate when
 * they change, as a reload's TLS part does. Polled, not watched, for the
 * reasons the token files are (`TokenFileWatch`): the kubelet swaps a
 * symlink above the files. What is compared is the files' text with the
 * certificate and key served (not their times, nor the last read's: a
 * reload may have served others since). A pair that cannot be served (a key
 * not the certificate's, a file missing or not PEM) keeps the certificate
 * in force; logged as an error once it is found on
 * {@linkcode UNUSABLE_POLLS} polls in a row (before that, a copy may be
 * under way), then not again until the files or the error change; files
 * that then hold the certificate in force again (a chmod undone) are said
 * to be readable again.
 */
export class TlsFileWatch {
  #options: TlsFileWatchOptions;
  #poll: FilePoll;
  /** The unusable pair last found (paths, texts' digest, error), and how often. */
  #unusable: { key: string; polls: number } | undefined;
  /** Whether an unusable pair was logged as an error since the last good read. */
  #logged = false;
  /** Why the key in force can be replaced by another user, as last logged. */
  #untrusted: string | undefined;

  constructor(options: TlsFileWatchOptions) {
    this.#options = options;
    this.#poll = new FilePoll(
      options.interval,
      () => this.#check(),
      (message) =>
        options.logger.error("Cannot apply the TLS files: {message}", {
          message,
        }),
    );
  }

  /** Stops reading (at shutdown, or for another interval). */
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
    const paths = config.tls;
    if (paths === undefined) return;
    let digest = "unreadable";
    try {
      const cert = await readTlsFile(runtime, "cert", paths.cert);
      const key = await readTlsFile(runtime, "key", paths.key);
      const served = this.#options.served();
      if (served !== undefined && cert === served.cert && key === served.key) {
        // An error logged (a file unreadable, then readable again as it
        // was): said to be over, or the last line would still say it.
        if (this.#logged) {
          logger.info(
            "TLS files readable again: they hold the certificate in force",
          );
        }
        this.#unusable = undefined;
        this.#logged = false;
        // A chmod alone changes no text: its mode is checked here, and
        // whether another user may now replace it (a chown, a directory
        // opened to every user: chaos48).
        await this.#warnReadableKey(paths.key);
        await this.#sayUntrustedKey(paths.key);
        return;
      }
      digest = createHash("sha256").update(cert).update("\0").update(key)
        .digest("hex");
      if (this.#poll.stopped) return;
      await this.#options.apply(config);
      this.#unusable = undefined;
      this.#logged = false;
    } catch (err) {
      if (this.#poll.stopped) return;
      const message = err instanceof Error ? err.message : String(err);
      const key = JSON.stringify([paths.cert, paths.key, digest, message]);
      const polls = this.#unusable?.key === key ? this.#unusable.polls + 1 : 1;
      this.#unusable = { key, polls };
      if (polls === UNUSABLE_POLLS) {
        this.#logged = true;
        logger.error(
          "TLS files changed, but cannot be served; the certificate in force is kept: {message}",
          { message },
        );
      } else if (polls < UNUSABLE_POLLS) {
        logger.debug(
          "TLS files changed, but cannot be served yet (a copy under way?); read again in {ms} ms: {message}",
          { message, ms: this.#options.interval },
        );
      } else {
        logger.debug(
          "TLS files still cannot be served (logged above); the certificate in force is kept",
        );
      }
    }
  }

  /**
   * Logs an error, once per reason, when the key in force (its text
   * unchanged) has come to be another user's or replaceable by one
   * (`untrustedFile`: a chown, its directory opened to every user). The
   * check ran only when the text changed, so such a key went on being
   * served without a word; its next change is refused (`readTls`) while
   * the key stays in force. Said again once it is fixed.
   */
  async #sayUntrustedKey(path: string): Promise<void> {
    const { runtime, logger } = this.#options;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let why: string | undefined;
    try {
      why = await Promise.race([
        untrustedFile(runtime, path).catch(() => this.#untrusted),
        new Promise<string | undefined>((resolve) => {
          timer = setTimeout(
            () => resolve(this.#untrusted),
            PEM_READ_TIMEOUT_MS,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    if (why === this.#untrusted || this.#poll.stopped) return;
    this.#untrusted = why;
    if (why === undefined) {
      logger.info("TLS key {path} is no longer open to other users", { path });
      return;
    }
    logger.error(
      "TLS key {path}, served, can now be read or replaced by another user: {why}; they can pass for this gateway, and a change of the files will be refused: make it, and its directory, this user's or root's, writable by no one else",
      { path, why },
    );
  }

  /**
   * {@linkcode warnReadableTlsKey} within {@linkcode PEM_READ_TIMEOUT_MS}
   * (a hung file system's `stat` would hold the poll for good); a key gone
   * since its read is the next read's to report.
   */
  async #warnReadableKey(path: string): Promise<void> {
    const { runtime, logger, warned } = this.#options;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        warnReadableTlsKey(runtime, path, logger, warned).catch(() => {}),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, PEM_READ_TIMEOUT_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * A TLS file's text; once more at once when it is gone: the kubelet swaps
 * a secret's `..data` symlink and then deletes the old directory, which a
 * read that followed the old link finds gone (the new one is there).
 */
async function readTlsFile(
  runtime: Runtime,
  option: "cert" | "key",
  path: string,
): Promise<string> {
  try {
    return await againIfGone(() => readPemFile(runtime, path));
  } catch (err) {
    throw new ConfigError(
      `tls.${option}: cannot read ${path}: ${(err as Error).message}`,
      { cause: err, details: { path: `tls.${option}` } },
    );
  }
}
