/**
 * Test helper: a gateway with its gRPC port in a Deno process of its own.
 *
 * The gRPC transport is Deno's `node:http2` (nghttp2 in native code), which
 * has crashed the whole process under load (a segfault in a tokio worker, an
 * nghttp2 assertion on a GOAWAY: denoland/deno#36788, docs/runtimes.md).
 * In the test runner's process such a crash ended the whole suite, every
 * file with it; here it ends this gateway's process, and the test that
 * started it fails with an error naming the signal ({@linkcode
 * GatewayProcessDied}).
 *
 * The same file is the child: `deno run -A _gateway_process.ts <dir>
 * <config JSON>` resolves the config as {@linkcode startGateway} does, serves,
 * prints one JSON line (`url`, `grpcTarget`, `token`), reloads when its
 * stdin says `reload <config JSON>` (the new overrides, as at start; it prints
 * `reloaded <ReloadResult JSON>` or `failed <message JSON>`), and shuts down
 * when its stdin says `shutdown` or ends (the test runner gone).
 *
 * @module
 */
import type { GatewayConfig } from "../src/gateway/config.ts";
import { resolveConfig, tokenList } from "../src/gateway/config.ts";
import { type ReloadResult, serve } from "../src/gateway/serve.ts";
import { writeModelsDir } from "./_gateway_harness.ts";

/** The gateway's process died by a signal or exited on its own. */
export class GatewayProcessDied extends Error {
  override name = "GatewayProcessDied";
  readonly code = "GATEWAY_PROCESS_DIED";
  constructor(readonly status: Deno.CommandStatus, stderr: string) {
    super(
      `Cannot use the gateway: its process ${
        status.signal === null
          ? `exited with code ${status.code}`
          : `died by ${status.signal} (Deno's own crash, as in node:http2: docs/runtimes.md)`
      }; its stderr's end: ${JSON.stringify(stderr.slice(-2000))}`,
    );
  }
}

/** A gateway in a process of its own; `await using` shuts it down. */
export interface GatewayProcess extends AsyncDisposable {
  /** Its models directory (removed at dispose). */
  dir: string;
  /** The gateway's token, if it has one. */
  token: string | undefined;
  url: string;
  grpcTarget: string | undefined;
  /** The process. */
  child: Deno.ChildProcess;
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /**
   * Reloads the gateway (`GatewayServer.reload`) with `overrides` in place of
   * the start's (the models directory and defaults as at start): resolves
   * with what it changed, rejects with the reload's error message.
   */
  reload(overrides: GatewayConfig): Promise<ReloadResult>;
  /**
   * Starts the gateway's drain (`GatewayServer.shutdown`) and resolves once
   * it is done and the process exited; the same promise every call. Rejects
   * with {@linkcode GatewayProcessDied} if the process crashed instead.
   */
  shutdown(): Promise<void>;
  /**
   * Resolves once the drain started (after `shutdown()`: the request to
   * stop crosses a pipe, where the gateway's own `shutdown()` drains at
   * once) or the process ended.
   */
  draining: Promise<void>;
}

/** How long a shutdown may take (the grace and the workers' stop) before a kill. */
const SHUTDOWN_LIMIT_MS = 30_000;

/** Keeps the last `max` characters of a stream's text. */
async function tailOf(stream: ReadableStream<Uint8Array>, max = 8000) {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text = (text + chunk).slice(-max);
  }
  return text;
}

/**
 * Starts a gateway as {@linkcode startGateway} does (the example and test
 * models plus `models`, `overrides` over one worker on port 0), in a
 * process of its own. `overrides` must be JSON (no functions).
 * `options.openFiles`: the process's limit of open files (`ulimit -n`).
 */
export async function startGatewayProcess(
  overrides: GatewayConfig = {},
  models: Record<string, string> = {},
  options: { openFiles?: number } = {},
): Promise<GatewayProcess> {
  const dir = await writeModelsDir(models);
  const args = [
    "run",
    "-A",
    new URL(import.meta.url).pathname,
    dir,
    JSON.stringify(overrides),
  ];
  // `openFiles`: the process's fd limit (RLIMIT_NOFILE, soft and hard).
  const child = new Deno.Command(
    options.openFiles === undefined ? Deno.execPath() : "/bin/sh",
    {
      args: options.openFiles === undefined ? args : [
        "-c",
        'ulimit -n "$0" && exec "$@"',
        String(options.openFiles),
        Deno.execPath(),
        ...args,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    },
  ).spawn();
  const stderr = tailOf(child.stderr);
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  /** The next stdout line, or undefined at its end. */
  const line = async (): Promise<string | undefined> => {
    while (!out.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) return undefined;
      out += value;
    }
    const at = out.indexOf("\n");
    const first = out.slice(0, at);
    out = out.slice(at + 1);
    return first;
  };
  const stdin = child.stdin.getWriter();
  const first = await line();
  if (first === undefined) {
    await stdin.close().catch(() => {});
    await lines.cancel();
    const status = await child.status;
    const text = await stderr;
    await Deno.remove(dir, { recursive: true });
    throw new GatewayProcessDied(status, text);
  }
  const ready = JSON.parse(first) as {
    url: string;
    grpcTarget?: string;
    token?: string;
  };
  let stopping: Promise<void> | undefined;
  const { promise: draining, resolve: markDraining } = Promise
    .withResolvers<void>();
  const shutdown = (): Promise<void> =>
    stopping ??= (async () => {
      // A dead process's stdin refuses the write: its status says why.
      await stdin.write(new TextEncoder().encode("shutdown\n")).catch(() => {});
      await stdin.close().catch(() => {});
      // A drain that hangs fails the test instead of the suite's time limit.
      let hung = false;
      const limit = setTimeout(() => {
        hung = true;
        try {
          child.kill("SIGKILL");
        } catch {
          // exited meanwhile
        }
      }, SHUTDOWN_LIMIT_MS);
      const drained = await line();
      markDraining();
      const done = drained === "draining" ? await line() : drained;
      await lines.cancel();
      const status = await child.status;
      clearTimeout(limit);
      const text = await stderr;
      if (hung) {
        throw new Error(
          `Cannot shut the gateway down: its process did not end within ${SHUTDOWN_LIMIT_MS} ms (killed); its stderr's end: ${
            JSON.stringify(text.slice(-2000))
          }`,
        );
      }
      if (done !== "shut" || !status.success) {
        throw new GatewayProcessDied(status, text);
      }
    })();
  // Said at once: a test awaiting an answer from the dead process fails later
  // and otherwise names only what it missed.
  void child.status.then((status) => {
    if (stopping === undefined && status.signal !== null) {
      console.error(
        `the gateway process for ${dir} died by ${status.signal} during the test`,
      );
    }
  });
  const token = ready.token;
  return {
    dir,
    token,
    url: ready.url,
    grpcTarget: ready.grpcTarget,
    child,
    fetch(path: string, init: RequestInit = {}): Promise<Response> {
      const headers = new Headers(init.headers);
      if (token !== undefined && !headers.has("authorization")) {
        headers.set("authorization", `Bearer ${token}`);
      }
      return fetch(`${ready.url}${path}`, { ...init, headers });
    },
    async reload(overrides: GatewayConfig): Promise<ReloadResult> {
      await stdin.write(
        new TextEncoder().encode(`reload ${JSON.stringify(overrides)}\n`),
      );
      const answer = await line();
      if (answer?.startsWith("reloaded ")) {
        return JSON.parse(answer.slice("reloaded ".length)) as ReloadResult;
      }
      if (answer?.startsWith("failed ")) {
        throw new Error(JSON.parse(answer.slice("failed ".length)) as string);
      }
      throw new GatewayProcessDied(await child.status, await stderr);
    },
    shutdown,
    draining,
    async [Symbol.asyncDispose]() {
      // A shutdown the test made itself already reported its failure (a
      // GatewayProcessDied with the stderr's end): thrown again here, the
      // runner showed only "SuppressedError: An error was suppressed during
      // disposal", hiding both.
      const made = stopping !== undefined;
      try {
        await shutdown().catch((err) => {
          if (made) return;
          // Thrown over the test's own failure, both would show only as
          // "SuppressedError: An error was suppressed during disposal".
          console.error(`Cannot shut the gateway down at disposal: ${err}`);
          throw err;
        });
      } finally {
        // Said, not thrown: a failed shutdown's own error (its stderr's end)
        // is the one to see, and a removal that fails after it (a worker of
        // a gateway that died still writing its log there) turned both into
        // "SuppressedError: An error was suppressed during disposal" (CI).
        await Deno.remove(dir, { recursive: true }).catch((err) =>
          console.error(`Cannot remove the gateway's directory ${dir}: ${err}`)
        );
      }
    },
  };
}

if (import.meta.main) {
  const [dir, json] = Deno.args;
  const configOf = (overrides: GatewayConfig) =>
    resolveConfig({
      cwd: dir!,
      cli: {
        port: 0,
        workers: 1,
        modelsDir: dir!,
        limits: { shutdownGrace: 2000 },
        ...overrides,
      },
    });
  let overrides = JSON.parse(json ?? "{}") as GatewayConfig;
  const config = configOf(overrides);
  const server = await serve(config, {
    reloadConfig: () => Promise.resolve(configOf(overrides)),
  });
  const enc = new TextEncoder();
  await Deno.stdout.write(enc.encode(
    JSON.stringify({
      url: server.url,
      grpcTarget: server.grpcTarget,
      token: tokenList(config.token)[0],
    }) + "\n",
  ));
  // "reload <JSON>": reload with those overrides; "shutdown" or the end of
  // stdin (the test runner gone): drain, say so.
  let input = "";
  commands: for await (
    const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())
  ) {
    input += chunk;
    for (let at = input.indexOf("\n"); at >= 0; at = input.indexOf("\n")) {
      const command = input.slice(0, at);
      input = input.slice(at + 1);
      if (!command.startsWith("reload ")) break commands;
      overrides = JSON.parse(command.slice("reload ".length)) as GatewayConfig;
      const answer = await server.reload().then(
        (result) => `reloaded ${JSON.stringify(result)}`,
        (err: unknown) =>
          `failed ${
            JSON.stringify(err instanceof Error ? err.message : String(err))
          }`,
      );
      await Deno.stdout.write(enc.encode(answer + "\n"));
    }
  }
  const stopped = server.shutdown();
  await Deno.stdout.write(enc.encode("draining\n"));
  await stopped;
  await Deno.stdout.write(enc.encode("shut\n"));
  // Not at once: the process ends by itself once what it still writes (the
  // last trailers of the streams the shutdown ended) is written, as a
  // gateway in the test process would write them (an exit at once may cut
  // them: a stream ended without its status once in 16 runs). What keeps it up
  // after that (a never-ending model's stream ended by a disconnect did, for
  // 30 s) is not the test's: a second at most.
  Deno.unrefTimer(setTimeout(() => Deno.exit(0), 1000));
}
