/**
 * Starting the benchmark's helper processes: spawn, read the one JSON ready
 * line a server prints on stdout, keep a short stderr tail for error
 * messages, and kill for sure on dispose.
 *
 * @module
 */

/** Options for {@linkcode ReadyChild.start}. */
export interface ReadyChildOptions {
  /** Executable. */
  cmd: string;
  /** Arguments. */
  args: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /** How long to wait for the ready line, in ms. @default 15000 */
  readyTimeout?: number;
  /**
   * Whether the child prints a JSON ready line on stdout. When false, the
   * child counts as started once spawned (use {@linkcode waitForHttp}).
   * @default true
   */
  readyLine?: boolean;
  /** Called with each line the child prints on stdout after its ready line (if any). */
  onStdoutLine?: (line: string) => void;
}

/**
 * A child process that announced itself with a JSON line on stdout. Keeps
 * stdin open (the reference servers exit when it closes).
 *
 * @example
 * ```ts ignore
 * await using floor = await ReadyChild.start({ cmd: "python3", args: ["bench/floor_server.py", "--model", "bench/models/echo.py"] });
 * console.log(floor.ready.port);
 * ```
 */
export class ReadyChild implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stderr = "";
  #exited = false;
  #onStdoutLine: ((line: string) => void) | undefined;
  /** The parsed ready line (empty object when `readyLine` is false). */
  ready: Record<string, unknown> = {};

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    child.status.then(() => (this.#exited = true), () => (this.#exited = true));
    this.#drainStderr(child.stderr);
  }

  /** Spawns the child and waits for its ready line. */
  static async start(options: ReadyChildOptions): Promise<ReadyChild> {
    const child = new Deno.Command(options.cmd, {
      args: options.args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      ...(options.env === undefined ? {} : { env: options.env }),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    }).spawn();
    const rc = new ReadyChild(child);
    rc.#onStdoutLine = options.onStdoutLine;
    try {
      if (options.readyLine === false) {
        rc.#drainStdout(child.stdout);
        return rc;
      }
      rc.ready = await rc.#readReadyLine(
        child.stdout,
        options.readyTimeout ?? 15_000,
      );
      return rc;
    } catch (err) {
      await rc.kill();
      throw new Error(
        `Cannot start ${options.cmd} ${
          options.args.join(" ")
        }: ${err}\n${rc.stderrTail()}`,
      );
    }
  }

  /** Process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Resolves when the process exits. */
  get status(): Promise<Deno.CommandStatus> {
    return this.#child.status;
  }

  /** The last few KiB of stderr. */
  stderrTail(): string {
    return this.#stderr;
  }

  /** Writes to the child's stdin. */
  async write(data: Uint8Array): Promise<void> {
    await this.#stdin.write(data);
  }

  /** Kills the child (SIGTERM, then SIGKILL after a grace period) and waits for it. */
  async kill(): Promise<void> {
    try {
      await this.#stdin.close();
    } catch {
      // already closed
    }
    if (!this.#exited) {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), 2000);
    });
    const outcome = await Promise.race([this.#child.status, grace]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // gone meanwhile
      }
      await this.#child.status;
    }
  }

  /** Kills the child. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }

  async #readReadyLine(
    stdout: ReadableStream<Uint8Array>,
    timeoutMs: number,
  ): Promise<Record<string, unknown>> {
    const reader = stdout.getReader();
    const decoder = new TextDecoder();
    let text = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no ready line within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      while (!text.includes("\n")) {
        const { value, done } = await Promise.race([reader.read(), timeout]);
        if (done) throw new Error("exited before its ready line");
        text += decoder.decode(value, { stream: true });
      }
    } finally {
      clearTimeout(timer);
    }
    reader.releaseLock();
    const end = text.indexOf("\n");
    this.#drainStdout(stdout, text.slice(end + 1));
    return JSON.parse(text.slice(0, end));
  }

  async #drainStdout(
    stdout: ReadableStream<Uint8Array>,
    rest = "",
  ): Promise<void> {
    const onLine = this.#onStdoutLine;
    const decoder = new TextDecoder();
    let text = rest;
    const lines = (): void => {
      let nl: number;
      while ((nl = text.indexOf("\n")) >= 0) {
        onLine!(text.slice(0, nl));
        text = text.slice(nl + 1);
      }
    };
    try {
      if (onLine !== undefined) lines();
      for await (const chunk of stdout) {
        if (onLine === undefined) continue; // only the ready line matters
        text += decoder.decode(chunk, { stream: true });
        lines();
      }
    } catch {
      // the child died
    }
  }

  async #drainStderr(stderr: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stderr) {
        this.#stderr = (this.#stderr + decoder.decode(chunk, { stream: true }))
          .slice(-4096);
      }
    } catch {
      // the child died
    }
  }
}

/**
 * Polls `url` until it answers (any status) or the time runs out.
 *
 * @example
 * ```ts ignore
 * await waitForHttp("http://127.0.0.1:8080/", 10_000);
 * ```
 */
export async function waitForHttp(
  url: string,
  timeoutMs: number,
  init?: RequestInit,
  child?: ReadyChild,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  let exited = false;
  child?.status.then(() => (exited = true));
  while (performance.now() < deadline) {
    if (exited) {
      throw new Error(
        `Cannot reach ${url}: the server exited: ${
          lastLine(child?.stderrTail())
        }`,
      );
    }
    try {
      const res = await fetch(url, init);
      await res.body?.cancel();
      if (res.status < 500) return;
      last = new Error(`status ${res.status}`);
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `Cannot reach ${url} within ${timeoutMs} ms: ${last}\n${
      child?.stderrTail() ?? ""
    }`,
  );
}

function lastLine(text: string | undefined): string {
  const lines = (text ?? "").trim().split("\n").filter((l) => l.trim() !== "");
  // Strip terminal colour codes (ESC [ ... m) from Deno's error output.
  const esc = String.fromCharCode(27);
  return (lines[lines.length - 1] ?? "(no stderr)")
    .split(esc).map((
      part,
      i,
    ) => (i === 0 ? part : part.replace(/^\[[0-9;]*m/, "")))
    .join("").slice(0, 300);
}

/**
 * A TCP port that was free a moment ago (for servers that cannot bind port 0
 * and report it, such as uvicorn with several workers).
 *
 * @example
 * ```ts ignore
 * const port = freePort();
 * ```
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
