/**
 * A client of the wire protocol written from docs/protocol.md alone, on
 * `node:net` and `node:crypto` only: nothing of this repository is imported,
 * as an implementer in another language would have nothing of it. The
 * conformance test (tests/wire_conformance_test.ts) drives a real Python
 * server with it, so what the document says and what the server does cannot
 * drift apart unnoticed.
 *
 * - `startDocServer(pythonDir, modelsDir, flags?)`: `python3 -m
 *   pyproxy_server` as §5 says (secret line on stdin, ready line on stdout);
 *   `await using`-disposable (SIGKILL, then waits for the exit).
 * - `WireClient.connect(port)`: frames of §2 both ways, batch frames of §3
 *   unpacked; `next(predicate)` takes the first message read that matches,
 *   leaving the others queued; `request(cmd, args)` sends and awaits the
 *   reply of that id; `await using`-disposable.
 * - `frame(payload, tweak?)`: one frame's bytes, with knobs to break it.
 * - `hmacHex(key, text)`, `md5Hex(bytes)`.
 *
 * @example
 * ```ts ignore
 * await using server = await startDocServer(pythonDir, modelsDir);
 * await using c = await WireClient.connect(server.port);
 * const hello = await c.next((m) => m.event === "hello");
 * await c.request("auth", { mac: hmacHex(server.secret, String(hello.nonce)) });
 * ```
 *
 * @module
 */
import net from "node:net";
import { Buffer } from "node:buffer";
import { createHash, createHmac, randomBytes } from "node:crypto";

/** A message read or sent: a JSON object. */
export type Wire = Record<string, unknown>;

/** Lowercase hex HMAC-SHA256 of `text` (UTF-8) under `key` (UTF-8), as §4. */
export function hmacHex(key: string, text: string): string {
  return createHmac("sha256", Buffer.from(key, "utf8")).update(
    Buffer.from(text, "utf8"),
  ).digest("hex");
}

/** Lowercase hex MD5 of `bytes`. */
export function md5Hex(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

/** Knobs to break a frame: another marker, version, length or digests. */
export interface FrameTweak {
  /** Begin marker (4 ASCII characters). */
  marker?: string;
  /** Version byte. */
  version?: number;
  /** Length field, instead of the payload's. */
  length?: number;
  /** Checksum field and, unless `end` is given, end marker. */
  sum?: Uint8Array;
  /** End marker. */
  end?: Uint8Array;
}

/** One frame of §2 around `payload` (an object is JSON-encoded first). */
export function frame(
  payload: Wire | Uint8Array,
  tweak: FrameTweak = {},
): Buffer {
  const body = payload instanceof Uint8Array
    ? Buffer.from(payload)
    : Buffer.from(JSON.stringify(payload), "utf8");
  const digest = createHash("md5").update(body).digest();
  const head = Buffer.alloc(25);
  head.write(tweak.marker ?? "PYPX", 0, "latin1");
  head[4] = tweak.version ?? 1;
  Buffer.from(tweak.sum ?? digest).copy(head, 5);
  head.writeUInt32BE(tweak.length ?? body.length, 21);
  return Buffer.concat([head, body, tweak.end ?? tweak.sum ?? digest]);
}

/** One connection to a server, reading frames as they come. */
export class WireClient implements AsyncDisposable {
  /** Messages read and not taken yet, in order. */
  queue: Wire[] = [];
  /** Batch frames read (§3). */
  batchFrames = 0;
  /** Whether the server closed the connection. */
  closed = false;
  /** The next request id this client gives. */
  nextId = 1;
  #sock: net.Socket;
  #buf: Buffer = Buffer.alloc(0);
  #wake: (() => void)[] = [];
  #gone: Promise<void>;

  private constructor(sock: net.Socket) {
    this.#sock = sock;
    this.#gone = new Promise((resolve) => sock.once("close", () => resolve()));
    sock.on("data", (data: Buffer) => this.#read(data));
    sock.on("close", () => {
      this.closed = true;
      this.#notify();
    });
    sock.on("error", () => {});
  }

  /** Connects to `127.0.0.1:port`. */
  static connect(port: number): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(port, "127.0.0.1", () => {
        sock.off("error", reject);
        resolve(new WireClient(sock));
      });
      sock.once("error", reject);
    });
  }

  #read(data: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, data]) : data;
    while (this.#buf.length >= 25) {
      const buf = this.#buf;
      if (buf.toString("latin1", 0, 4) !== "PYPX" || buf[4] !== 1) {
        throw new Error("bad frame header from the server");
      }
      const length = buf.readUInt32BE(21);
      if (buf.length < 41 + length) break;
      const sum = buf.subarray(5, 21);
      const payload = buf.subarray(25, 25 + length);
      if (!sum.equals(buf.subarray(25 + length, 41 + length))) {
        throw new Error("end marker differs from the checksum");
      }
      if (!createHash("md5").update(payload).digest().equals(sum)) {
        throw new Error("checksum differs from the payload");
      }
      const msg = JSON.parse(payload.toString("utf8")) as Wire;
      this.#buf = buf.subarray(41 + length);
      if (
        Array.isArray(msg.batch) && !("id" in msg) && !("cmd" in msg) &&
        !("event" in msg)
      ) {
        this.batchFrames++;
        this.queue.push(...(msg.batch as Wire[]));
      } else this.queue.push(msg);
    }
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = [];
    for (const f of wake) f();
  }

  /** Sends `messages`, each in a frame of its own, in one write. */
  send(...messages: Wire[]): void {
    this.#sock.write(Buffer.concat(messages.map((m) => frame(m))));
  }

  /** Sends raw bytes. */
  write(bytes: Uint8Array): void {
    this.#sock.write(bytes);
  }

  /** The first message read that matches `predicate` (waits for it). */
  async next(predicate: (m: Wire) => boolean = () => true): Promise<Wire> {
    for (;;) {
      const i = this.queue.findIndex(predicate);
      if (i >= 0) return this.queue.splice(i, 1)[0]!;
      if (this.closed) throw new Error("the connection closed while waiting");
      await new Promise<void>((resolve) => this.#wake.push(resolve));
    }
  }

  /** The reply to this client's request `id` (§3: no `event`, no `cmd`). */
  reply(id: number): Promise<Wire> {
    return this.next((m) =>
      typeof m.event !== "string" && typeof m.cmd !== "string" && m.id === id
    );
  }

  /** Sends request `cmd` with `args` under the next id; its reply. */
  request(cmd: string, args: Wire = {}): Promise<Wire> {
    const id = this.nextId++;
    this.send({ id, cmd, ...args });
    return this.reply(id);
  }

  /** Reads `hello`, sends `auth` (with `extra`), checks `serverMac`. */
  async authenticate(secret: string, extra: Wire = {}): Promise<Wire> {
    const hello = await this.next((m) => m.event === "hello");
    const clientNonce = randomBytes(16).toString("hex");
    const reply = await this.request("auth", {
      mac: hmacHex(secret, String(hello.nonce)),
      clientNonce,
      ...extra,
    });
    const result = reply.result as Wire | undefined;
    if (result?.serverMac !== hmacHex(secret, "server:" + clientNonce)) {
      throw new Error("the server did not prove it knows the secret");
    }
    return reply;
  }

  /** Resolves when the server has closed the connection. */
  waitClosed(): Promise<void> {
    return this.#gone;
  }

  /** Closes the socket and waits for its end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#sock.destroy();
    await this.#gone;
  }
}

/** A server started as §5 says. */
export interface DocServer extends AsyncDisposable {
  /** Its TCP port, from the ready line. */
  readonly port: number;
  /** The secret given on its stdin. */
  readonly secret: string;
  /** The ready line. */
  readonly ready: Wire;
}

/**
 * Starts `python3 -m pyproxy_server --path <modelsDir> --id w1 <flags>` with
 * `PYTHONPATH=<pythonDir>`, writes the secret line, reads the ready line.
 */
export async function startDocServer(
  pythonDir: string,
  modelsDir: string,
  flags: string[] = [],
): Promise<DocServer> {
  const secret = randomBytes(32).toString("hex");
  const child = new Deno.Command("python3", {
    args: ["-m", "pyproxy_server", "--path", modelsDir, "--id", "w1", ...flags],
    env: { PYTHONPATH: pythonDir },
    cwd: modelsDir,
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const stdin = child.stdin.getWriter();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const dispose = async (): Promise<void> => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
    await lines.cancel().catch(() => {});
    await stdin.close().catch(() => {});
  };
  try {
    await stdin.write(
      new TextEncoder().encode(JSON.stringify({ secret }) + "\n"),
    );
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error("the server exited without a ready line");
      text += value;
    }
    const ready = JSON.parse(text.slice(0, text.indexOf("\n"))) as Wire;
    return {
      port: ready.port as number,
      secret,
      ready,
      [Symbol.asyncDispose]: dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}
