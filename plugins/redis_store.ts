/**
 * A {@linkcode CacheStore} in Redis, so several hosts (pools on different
 * machines) share one cache. A small RESP2 client over `runtime.connect`:
 * pipelined commands (one write per microtask), lazy reconnect.
 *
 * @module
 */
import {
  ConfigError,
  ConnectionLostError,
  RemoteError,
  SerializationError,
  TimeoutError,
} from "../src/errors.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import { setTimeoutOrNever } from "../src/_timer.ts";
import type { Connection, Runtime } from "../src/runtime/types.ts";
import type { CacheSetOptions, CacheStore } from "./cache_store.ts";
import { encodeCommand, RespParser, type RespValue } from "./_resp.ts";
import { decodeCacheValue, encodeCacheValue } from "./_cache_value.ts";

/**
 * Options of {@linkcode RedisStore}.
 *
 * @example
 * ```ts
 * import type { RedisStoreOptions } from "@pyproxy/pyproxy";
 * const options: RedisStoreOptions = { hostname: "127.0.0.1", port: 6379, db: 1, prefix: "myapp:" };
 * console.log(options.prefix); // "myapp:"
 * // new RedisStore(options) connects lazily, on the first command.
 * ```
 */
export interface RedisStoreOptions {
  /** Redis host. @default {"127.0.0.1"} */
  hostname?: string;
  /** Redis port. @default {6379} */
  port?: number;
  /** A Unix socket path instead of `hostname`/`port`. */
  path?: string;
  /** Sent with `AUTH` on every (re)connect. */
  password?: string;
  /** ACL user name for `AUTH` (Redis 6+). */
  username?: string;
  /** Database index for `SELECT`. @default {0} */
  db?: number;
  /** Prepended to every key, so several applications share one Redis. @default {"pyproxy:"} */
  prefix?: string;
  /**
   * How long a connect or a command may take before it fails (milliseconds):
   * a finite number > 0; beyond 2^31 − 1 (~24.8 days, a timer's range), no
   * limit.
   * @default {5000}
   */
  timeout?: number;
  /** Runtime adapter. @default {defaultRuntime()} */
  runtime?: Runtime;
}

interface Pending {
  resolve: (value: RespValue) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * A cache store backed by a Redis server. Values are stored as JSON text
 * under `prefix + key` (a value holding bytes as `$bytes:` followed by JSON
 * with them as base64 and their places, so they come back as
 * `Uint8Array`s); `ttl` becomes `SET ... PX`. When the connection fails, the
 * commands in flight reject with `ConnectionLostError` and the next command
 * connects again.
 *
 * @example
 * ```ts ignore
 * import { RedisStore } from "@pyproxy/pyproxy";
 * await using store = new RedisStore({ port: 6379, prefix: "app:" });
 * await store.set("greeting", { text: "hi" }, { ttl: 60 });
 * console.log(await store.get("greeting")); // { text: "hi" }
 * ```
 */
export class RedisStore implements CacheStore {
  #runtime: Runtime;
  #target: { hostname: string; port: number } | { path: string };
  #where: string;
  #prefix: string;
  #timeout: number;
  #setup: string[][] = [];
  #conn: Connection | undefined;
  #connecting: Promise<Connection> | undefined;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #pending: Pending[] = [];
  #batch: Uint8Array[] = [];
  #flushQueued = false;
  #closed = false;

  /** Creates the store; it connects on first use. */
  constructor(options: RedisStoreOptions = {}) {
    // Checked here: a bad timeout or port would otherwise fail every command later, far from the cause.
    check(
      "timeout",
      options.timeout,
      (n) => n > 0 && Number.isFinite(n),
      "a number > 0",
    );
    check(
      "port",
      options.port,
      (n) => Number.isInteger(n) && n >= 1 && n <= 65535,
      "an integer from 1 to 65535",
    );
    check(
      "db",
      options.db,
      (n) => Number.isInteger(n) && n >= 0,
      "an integer >= 0",
    );
    // Strings only: a number would be sent as its digits, a typo'd config
    // would pass (password: 5 authenticates as "5").
    for (
      const field of [
        "hostname",
        "path",
        "prefix",
        "password",
        "username",
      ] as const
    ) {
      const value: unknown = options[field];
      if (value !== undefined && typeof value !== "string") {
        throw new ConfigError(
          `Cannot create RedisStore: ${field}: expected a string, got ${
            typeof value === "bigint"
              ? String(value)
              : JSON.stringify(value) ?? String(value)
          }`,
          { details: { field } },
        );
      }
    }
    this.#runtime = options.runtime ?? defaultRuntime();
    this.#target = options.path !== undefined ? { path: options.path } : {
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 6379,
    };
    this.#where = "path" in this.#target
      ? this.#target.path
      : `${this.#target.hostname}:${this.#target.port}`;
    this.#prefix = options.prefix ?? "pyproxy:";
    this.#timeout = options.timeout ?? 5000;
    if (options.password !== undefined) {
      this.#setup.push(
        options.username === undefined
          ? ["AUTH", options.password]
          : ["AUTH", options.username, options.password],
      );
    }
    if (options.db !== undefined && options.db !== 0) {
      this.#setup.push(["SELECT", String(options.db)]);
    }
  }

  /** Checks the server answers (`PING`); resolves `"PONG"`. */
  async ping(): Promise<string> {
    return String(await this.#command(["PING"]));
  }

  /** The value under `key`, or `undefined`. */
  async get(key: string): Promise<unknown> {
    const reply = await this.#command(["GET", this.#key(key)]);
    if (reply === null) return undefined;
    try {
      return decodeCacheValue(String(reply));
    } catch (err) {
      if (err instanceof SerializationError) throw err;
      // Written by something other than a RedisStore under the same prefix.
      throw new SerializationError(
        `Cannot read cache '${key}': the stored value is not JSON (${
          (err as Error).message
        })`,
        { cause: err },
      );
    }
  }

  /**
   * Stores `value` as JSON (`SET`, with `PX` when `ttl` is given); a value
   * holding bytes as `$bytes:` and JSON with them as base64 (they come back
   * as `Uint8Array`s).
   */
  async set(
    key: string,
    value: unknown,
    options: CacheSetOptions = {},
  ): Promise<void> {
    const json = encodeCacheValue(value);
    if (json === undefined) {
      throw new TypeError(`Cannot cache '${key}': the value is not JSON`);
    }
    const args = ["SET", this.#key(key), json];
    if (options.ttl !== undefined) {
      if (!(options.ttl > 0 && options.ttl !== Infinity)) {
        throw new RangeError(
          `Cannot cache '${key}': ttl must be a positive number of seconds, got ${options.ttl}`,
        );
      }
      // Redis refuses PX beyond a 64-bit integer (and "1e+23" is no integer):
      // ~285,000 years is as good as for ever.
      const ms = Math.min(
        Math.max(1, Math.ceil(options.ttl * 1000)),
        Number.MAX_SAFE_INTEGER,
      );
      args.push("PX", String(ms));
    }
    await this.#command(args);
  }

  /** Removes `key`; `true` when it existed. */
  async delete(key: string): Promise<boolean> {
    return (await this.#command(["DEL", this.#key(key)])) === 1;
  }

  /** Removes every key under this store's prefix (`SCAN` + `DEL`). */
  async clear(): Promise<void> {
    const pattern = this.#prefix.replace(/[*?[\]\\]/g, "\\$&") + "*";
    let cursor = "0";
    do {
      const reply = await this.#command([
        "SCAN",
        cursor,
        "MATCH",
        pattern,
        "COUNT",
        "1000",
      ]);
      const [next, keys] = reply as [string, string[]];
      if (keys.length > 0) await this.#command(["DEL", ...keys]);
      cursor = next;
    } while (cursor !== "0");
  }

  /** Closes the connection; pending commands reject. */
  close(): Promise<void> {
    this.#closed = true;
    this.#drop(
      new ConnectionLostError(`Cannot run redis command: the store is closed`),
    );
    return Promise.resolve();
  }

  /** Same as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // UTF-8 has no lone surrogates: encoded, "a\uD800" and "a\uDC00" would both become "a\uFFFD", one redis key.
  #key(key: string): string {
    if (!key.isWellFormed()) {
      throw new TypeError(
        `Cannot use cache key ${
          JSON.stringify(key)
        }: it holds a lone UTF-16 surrogate, which redis cannot tell from U+FFFD`,
      );
    }
    return this.#prefix + key;
  }

  async #command(args: string[]): Promise<RespValue> {
    if (this.#closed) {
      throw new ConnectionLostError(
        `Cannot run redis ${args[0]}: the store is closed`,
      );
    }
    if (this.#conn === undefined) await this.#connect();
    const reply = await this.#send(args);
    if (reply instanceof RemoteError) {
      throw new RemoteError(
        "RedisError",
        `Cannot run redis ${args[0]}: ${reply.message}`,
      );
    }
    return reply;
  }

  #send(args: string[]): Promise<RespValue> {
    // The connection was dropped after it opened and before this command was
    // queued (a server that answers the setup and closes): queued with no
    // connection to write it, it would wait for its timeout, or take the first
    // reply of the next connection, meant for another command.
    if (this.#writer === undefined) {
      return Promise.reject(
        new ConnectionLostError(
          `Cannot run redis ${
            args[0]
          }: the connection to ${this.#where} was lost`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeoutOrNever(() => {
        // The reply order is lost with a missing reply: the only safe recovery is a new connection.
        this.#drop(
          new TimeoutError(
            `Cannot run redis command: no reply from ${this.#where} within ${this.#timeout} ms`,
          ),
        );
      }, this.#timeout);
      this.#pending.push({ resolve, reject, timer });
      encodeCommand(args, this.#batch);
      if (!this.#flushQueued) {
        this.#flushQueued = true;
        queueMicrotask(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#flushQueued = false;
    const parts = this.#batch;
    this.#batch = [];
    const writer = this.#writer;
    if (parts.length === 0 || writer === undefined) return;
    let size = 0;
    for (const p of parts) size += p.length;
    const bytes = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    writer.write(bytes).catch((err) => this.#lost(writer, err));
  }

  #connect(): Promise<Connection> {
    this.#connecting ??= this.#open().finally(
      () => (this.#connecting = undefined),
    );
    return this.#connecting;
  }

  async #open(): Promise<Connection> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const connecting = this.#runtime.connect(this.#target);
    let conn: Connection;
    try {
      conn = await Promise.race([
        connecting,
        new Promise<never>((_, reject) => {
          timer = setTimeoutOrNever(
            () =>
              reject(
                new TimeoutError(
                  `Cannot connect to redis at ${this.#where}: timed out`,
                ),
              ),
            this.#timeout,
          );
        }),
      ]);
    } catch (err) {
      connecting.then((c) => c.close(), () => {});
      if (err instanceof TimeoutError) throw err;
      throw new ConnectionLostError(
        `Cannot connect to redis at ${this.#where}: ${
          err instanceof Error ? err.message : err
        }`,
        { cause: err },
      );
    } finally {
      clearTimeout(timer);
    }
    if (this.#closed) {
      conn.close();
      throw new ConnectionLostError(
        `Cannot connect to redis at ${this.#where}: the store is closed`,
      );
    }
    const writer = conn.writable.getWriter();
    this.#conn = conn;
    this.#writer = writer;
    this.#read(conn, writer);
    // Queued together before any other command can be, so they run first on the new connection.
    const replies = await Promise.all(
      this.#setup.map((args) => this.#send(args)),
    );
    const failed = replies.findIndex((r) => r instanceof RemoteError);
    if (failed >= 0) {
      const reply = replies[failed] as RemoteError;
      this.#lost(writer, reply);
      throw new RemoteError(
        "RedisError",
        `Cannot connect to redis at ${this.#where}: ${
          this.#setup[failed]![0]
        } failed: ${reply.message}`,
      );
    }
    return conn;
  }

  async #read(
    conn: Connection,
    writer: WritableStreamDefaultWriter<Uint8Array>,
  ): Promise<void> {
    const parser = new RespParser();
    let cause: unknown = "the server closed the connection";
    try {
      const reader = conn.readable.getReader();
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        // A connection that was dropped must not answer the commands of its successor.
        if (writer !== this.#writer) break;
        for (const reply of parser.push(value)) {
          const pending = this.#pending.shift();
          if (pending === undefined) continue;
          clearTimeout(pending.timer);
          pending.resolve(reply);
        }
      }
    } catch (err) {
      cause = err;
    }
    this.#lost(writer, cause);
  }

  #lost(writer: WritableStreamDefaultWriter<Uint8Array>, cause: unknown): void {
    if (writer !== this.#writer) return;
    const why = cause instanceof Error ? cause.message : String(cause);
    this.#drop(
      new ConnectionLostError(
        `Cannot run redis command: connection to ${this.#where} lost (${why})`,
        { cause },
      ),
    );
  }

  // Closes the current connection and rejects everything in flight on it.
  #drop(error: Error): void {
    this.#conn?.close();
    this.#conn = undefined;
    this.#writer = undefined;
    this.#batch = [];
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(error);
    }
  }
}

function check(
  field: string,
  value: unknown,
  ok: (n: number) => boolean,
  expected: string,
): void {
  if (value === undefined || (typeof value === "number" && ok(value))) return;
  throw new ConfigError(
    `Cannot create RedisStore: ${field}: expected ${expected}, got ${
      String(value)
    }`,
    { details: { field } },
  );
}
