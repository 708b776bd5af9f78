/**
 * The floor client: pyproxy's frame format (docs/protocol.md §2) with none of
 * pyproxy's machinery. `Deno.connect`, encode each request as one frame with
 * `node:crypto` MD5 and write it, decode replies from one growing buffer,
 * match them to requests by id. No streams chain, no batching, no auth.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { ReadyChild } from "./child.ts";
import { PendingReplies } from "./pending_replies.ts";

const MAGIC = new Uint8Array([0x50, 0x59, 0x50, 0x58, 1]);
const HEADER = 25;
const OVERHEAD = 41;

/** Where the floor server listens. */
export interface FloorClientOptions {
  /** TCP port (with `hostname`). */
  port?: number;
  /** TCP host. @default "127.0.0.1" */
  hostname?: string;
  /** Unix socket path (instead of a port). */
  path?: string;
}

/**
 * A minimal client for `bench/floor_server.py`.
 *
 * @example
 * ```ts ignore
 * const client = await FloorClient.connect({ port });
 * console.log(await client.execute("echo", { x: 1 })); // { x: 1 }
 * await client.close();
 * ```
 */
export class FloorClient {
  readonly #conn: Deno.Conn;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pending = new PendingReplies();
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder();
  #nextId = 1;
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  #closed = false;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#writer = conn.writable.getWriter();
    this.#readLoop();
  }

  /** Connects to a floor server. */
  static async connect(options: FloorClientOptions): Promise<FloorClient> {
    if (options.path !== undefined) {
      return new FloorClient(
        await Deno.connect({ transport: "unix", path: options.path }),
      );
    }
    const conn = await Deno.connect({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 0,
    });
    conn.setNoDelay(true);
    return new FloorClient(conn);
  }

  /** Sends `{id, cmd, ...args}` and resolves with the reply's `result`. */
  request(cmd: string, args: Record<string, unknown> = {}): Promise<unknown> {
    if (this.#closed) {
      return Promise.reject(
        new Error("Cannot send: the floor client is closed"),
      );
    }
    const id = this.#nextId++;
    const payload = this.#encoder.encode(JSON.stringify({ id, cmd, ...args }));
    const digest = createHash("md5").update(payload).digest();
    const frame = new Uint8Array(OVERHEAD + payload.length);
    frame.set(MAGIC, 0);
    frame.set(digest, 5);
    new DataView(frame.buffer).setUint32(21, payload.length);
    frame.set(payload, HEADER);
    frame.set(digest, HEADER + payload.length);
    return this.#pending.expect(id, () => this.#writer.write(frame));
  }

  /** Calls the server's model. */
  execute(name: string, msg: unknown): Promise<unknown> {
    return this.request("executeModel", { name, msg });
  }

  /** Closes the connection; pending calls reject. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // already closed
      }
      this.#failAll(new Error("Cannot complete: the floor client closed"));
    }
    return Promise.resolve();
  }

  async #readLoop(): Promise<void> {
    try {
      for await (const chunk of this.#conn.readable) {
        this.#append(chunk);
        this.#parse();
      }
      this.#failAll(
        new Error("Cannot complete: the floor server closed the connection"),
      );
    } catch (err) {
      this.#failAll(err);
    }
  }

  #append(chunk: Uint8Array): void {
    if (this.#end + chunk.length > this.#buf.length) {
      const used = this.#end - this.#start;
      const needed = used + chunk.length;
      const target = needed > this.#buf.length
        ? new Uint8Array(Math.max(needed, this.#buf.length * 2))
        : this.#buf;
      target.set(this.#buf.subarray(this.#start, this.#end), 0);
      this.#buf = target;
      this.#start = 0;
      this.#end = used;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  #parse(): void {
    const buf = this.#buf;
    while (this.#end - this.#start >= HEADER) {
      const s = this.#start;
      for (let i = 0; i < 5; i++) {
        if (buf[s + i] !== MAGIC[i]) {
          throw new Error("Cannot decode frame: bad begin marker");
        }
      }
      const length = new DataView(buf.buffer, buf.byteOffset + s + 21, 4)
        .getUint32(0);
      if (this.#end - s < OVERHEAD + length) return;
      const checksum = buf.subarray(s + 5, s + 21);
      const payload = buf.subarray(s + HEADER, s + HEADER + length);
      const digest = createHash("md5").update(payload).digest();
      const end = buf.subarray(s + HEADER + length, s + OVERHEAD + length);
      for (let i = 0; i < 16; i++) {
        if (checksum[i] !== end[i]) {
          throw new Error("Cannot decode frame: bad end marker");
        }
        if (checksum[i] !== digest[i]) {
          throw new Error("Cannot decode frame: bad checksum");
        }
      }
      const msg = JSON.parse(this.#decoder.decode(payload));
      this.#start = s + OVERHEAD + length;
      this.#pending.settle(msg);
    }
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }

  #failAll(err: unknown): void {
    this.#closed = true;
    this.#pending.failAll(err);
  }
}

/** Options for {@linkcode startFloorServer}. */
export interface FloorServerOptions {
  /** The model file the floor serves. */
  model: string;
  /** Listen on this Unix socket instead of a TCP port. */
  unix?: string;
  /** Python interpreter. @default "python3" */
  python?: string;
}

/**
 * Starts `bench/floor_server.py` and waits until it listens.
 *
 * @example
 * ```ts ignore
 * await using server = await startFloorServer({ model: "bench/models/echo.py" });
 * const client = await FloorClient.connect({ port: server.ready.port as number });
 * ```
 */
export function startFloorServer(
  options: FloorServerOptions,
): Promise<ReadyChild> {
  const script = new URL("./floor_server.py", import.meta.url).pathname;
  return ReadyChild.start({
    cmd: options.python ?? "python3",
    args: [
      script,
      "--model",
      options.model,
      ...(options.unix === undefined ? [] : ["--unix", options.unix]),
    ],
  });
}
