/**
 * The stdio baseline client: spawns `bench/stdio_worker.py`, writes one JSON
 * line per request to its stdin, reads newline-delimited replies from its
 * stdout and matches them by id. Any number of requests may be in flight.
 *
 * @module
 */
import { PendingReplies } from "./pending_replies.ts";

/** Options for {@linkcode StdioClient.start}. */
export interface StdioClientOptions {
  /** The model file the worker serves. */
  model: string;
  /** Python interpreter. @default "python3" */
  python?: string;
}

/**
 * A minimal stdio bridge to one Python worker process.
 *
 * @example
 * ```ts ignore
 * await using client = await StdioClient.start({ model: "bench/models/echo.py" });
 * console.log(await client.execute("echo", { x: 1 })); // { x: 1 }
 * ```
 */
export class StdioClient implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pending = new PendingReplies();
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder();
  #nextId = 1;
  #parts: Uint8Array[] = [];
  #stderr = "";
  #closed = false;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#readLoop();
    this.#drainStderr();
  }

  /** Spawns the worker; resolves once it has answered a first call. */
  static async start(options: StdioClientOptions): Promise<StdioClient> {
    const script = new URL("./stdio_worker.py", import.meta.url).pathname;
    const child = new Deno.Command(options.python ?? "python3", {
      args: [script, "--model", options.model],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const client = new StdioClient(child);
    try {
      await client.request("ping");
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
  }

  /** The worker's process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Sends `{id, cmd, ...args}` and resolves with the reply's `result`. */
  request(cmd: string, args: Record<string, unknown> = {}): Promise<unknown> {
    if (this.#closed) {
      return Promise.reject(
        new Error("Cannot send: the stdio worker is closed"),
      );
    }
    const id = this.#nextId++;
    const line = this.#encoder.encode(
      JSON.stringify({ id, cmd, ...args }) + "\n",
    );
    return this.#pending.expect(id, () => this.#writer.write(line));
  }

  /** Calls the worker's model. */
  execute(name: string, msg: unknown): Promise<unknown> {
    return this.request("executeModel", { name, msg });
  }

  /** Closes stdin (the worker exits), kills it if it lingers, waits for it. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#failAll(new Error("Cannot complete: the stdio client closed"));
    }
    try {
      await this.#writer.close();
    } catch {
      // already closed
    }
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await this.#child.status;
  }

  /** Closes the worker. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #readLoop(): Promise<void> {
    try {
      for await (const chunk of this.#child.stdout) this.#onChunk(chunk);
      this.#failAll(
        new Error(`Cannot complete: the stdio worker exited\n${this.#stderr}`),
      );
    } catch (err) {
      this.#failAll(err);
    }
  }

  #onChunk(chunk: Uint8Array): void {
    let from = 0;
    let nl = chunk.indexOf(10, from);
    while (nl !== -1) {
      let line = chunk.subarray(from, nl);
      if (this.#parts.length > 0) {
        this.#parts.push(line);
        line = concat(this.#parts);
        this.#parts = [];
      }
      this.#pending.settle(JSON.parse(this.#decoder.decode(line)));
      from = nl + 1;
      nl = chunk.indexOf(10, from);
    }
    if (from < chunk.length) this.#parts.push(chunk.subarray(from));
  }

  #failAll(err: unknown): void {
    this.#closed = true;
    this.#pending.failAll(err);
  }

  async #drainStderr(): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of this.#child.stderr) {
        this.#stderr = (this.#stderr + decoder.decode(chunk, { stream: true }))
          .slice(-4096);
      }
    } catch {
      // exited
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
