/**
 * Runs independent scenarios of one test file at once, as steps of one
 * test: for scenarios that mostly wait (a model's timer, a restart's
 * backoff, a hold), each on a pool of its own, so that the file takes about
 * as long as its longest scenario rather than their sum.
 *
 * @module
 */

/** One scenario: its step's name and body. */
export type Scenario = readonly [name: string, fn: () => void | Promise<void>];

/**
 * Runs `scenarios` as steps of `t`, at most `limit` at a time (all by
 * default), and resolves when each has ended (a failed one fails the test,
 * and the others still run to their end). Deno checks leaks (ops,
 * resources) of concurrent steps only for the whole test, so the test's
 * sanitizers still prove that every scenario cleaned up after itself; each
 * scenario keeps its own pool and processes.
 *
 * @example
 * ```ts ignore
 * Deno.test("Pool: scenarios, at once", (t) =>
 *   concurrentSteps(t, [
 *     ["a model that ... is quarantined", async () => {}],
 *     ["a slot that ... fails", async () => {}],
 *   ]));
 * ```
 */
export async function concurrentSteps(
  t: Deno.TestContext,
  scenarios: readonly Scenario[],
  limit = Infinity,
): Promise<void> {
  let next = 0;
  const run = async () => {
    while (next < scenarios.length) {
      const [name, fn] = scenarios[next++]!;
      await t.step({
        name,
        fn,
        // Deno runs steps at once only when none of them checks leaks on
        // its own (the enclosing test still does).
        sanitizeOps: false,
        sanitizeResources: false,
        sanitizeExit: false,
      });
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(limit, scenarios.length) }, run),
  );
}
