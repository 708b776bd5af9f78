/**
 * Test helpers of the retired-token stream tests
 * (gateway_token_streams_test.ts, gateway_token_holds_test.ts): a model that
 * yields without end and notes its end, and a bound on how long a stream
 * may stay open.
 */

/** Yields a number every 10 ms without end; notes its end in msg["marker"]. */
export const TICKER = `import time


class Ticker:
    def execute(self, msg):
        i = 0
        try:
            while True:
                time.sleep(0.01)
                i += 1
                yield i
        finally:
            with open(msg["marker"], "w") as f:
                f.write("closed")
`;

/** Whether `path` exists. */
export const exists = (path: string): Promise<boolean> =>
  Deno.stat(path).then(() => true, () => false);

/** `promise`, or an error after 5 s (a stream that never ends). */
export async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${what} is still open after 5 s`)),
          5000,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
