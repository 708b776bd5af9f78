// `bun run mod.ts serve` as a child process, for the Bun tests that need the
// real command (signals, exit codes). Kept out of _helpers.ts, which must
// type-check under Deno too: this file uses Bun.spawn.
const MOD = new URL("../../mod.ts", import.meta.url).pathname;

/** Where to start `serve`: its working directory and extra environment. */
export interface ServeProcessOptions {
  cwd?: string;
  env?: Record<string, string>;
}

/**
 * Starts `bun run mod.ts serve` with `args`; resolves with the child, its
 * URL (from the "listening on" line) and its whole stderr once it exits.
 */
export async function startServe(
  args: string[],
  options: ServeProcessOptions = {},
) {
  const child = Bun.spawn([process.execPath, "run", MOD, "serve", ...args], {
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    ...(options.env !== undefined
      ? { env: { ...process.env, ...options.env } }
      : {}),
    stdout: "pipe",
    stderr: "pipe",
  });
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  let url: string | undefined;
  while (url === undefined) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`serve exited: ${await stderr}`);
    out += value;
    url = /listening on (http:\/\/\S+)/.exec(out)?.[1];
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return { child, url, stderr };
}
