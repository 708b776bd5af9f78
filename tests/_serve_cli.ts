/**
 * `mod.ts serve ...` as a child process for the CLI tests, returned once it
 * has printed its banner.
 *
 * @module
 */

const MOD = new URL("../mod.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

/** Options of {@linkcode startServeCli}. */
export interface ServeCliOptions {
  /** Environment added to the child's. */
  env?: Record<string, string>;
  /** Read stdout until the banner matches this. @default {the dashboard line} */
  until?: RegExp;
  /** Kill a start that takes longer than this (ms): its banner then ends early. */
  bound?: number;
  /** @default {the repository} */
  cwd?: string;
  /** Deno's permission flags. @default {["-A"]} */
  permissions?: string[];
  /** Throw (with its stderr) when serve ends before `until`; else return what it printed. */
  requireBanner?: boolean;
}

/** A running `serve`: disposing kills it if it still runs. */
export interface ServeCli extends AsyncDisposable {
  child: Deno.ChildProcess;
  /** What it printed on stdout up to `until`. */
  banner: string;
  /** Its whole stderr, once it ended. */
  stderr: Promise<string>;
  /** The first `listening on http://...` address of the banner, if any. */
  url: string | undefined;
}

/** Starts `mod.ts serve ...args` and reads its stdout up to its banner. */
export async function startServeCli(
  args: string[],
  options: ServeCliOptions = {},
): Promise<ServeCli> {
  const until = options.until ?? /dashboard: .*\n/;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...(options.permissions ?? ["-A"]), MOD, "serve", ...args],
    cwd: options.cwd ?? ROOT,
    env: options.env ?? {},
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const dispose = async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
    await stdout.cancel();
    await stderr;
  };
  const guard = options.bound === undefined
    ? undefined
    : setTimeout(() => child.kill("SIGKILL"), options.bound);
  try {
    let banner = "";
    while (!until.test(banner)) {
      const { value, done } = await stdout.read();
      if (done) {
        if (options.requireBanner) {
          throw new Error(
            `serve ended before its banner: ${banner} ${await stderr}`,
          );
        }
        break;
      }
      banner += value;
    }
    const url = /listening on (http:\/\/\S+)/.exec(banner)?.[1];
    return { child, banner, stderr, url, [Symbol.asyncDispose]: dispose };
  } catch (err) {
    await dispose();
    throw err;
  } finally {
    clearTimeout(guard);
  }
}
