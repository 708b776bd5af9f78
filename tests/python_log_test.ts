import assert from "node:assert/strict";
import { pythonLoggers } from "../src/_python_log.ts";
import type { Logger } from "../src/logger.ts";

function childLogger(): Logger & { children: number } {
  const none = () => {};
  const logger = {
    children: 0,
    trace: none,
    debug: none,
    info: none,
    warn: none,
    error: none,
    fatal: none,
    getChild(): Logger {
      logger.children++;
      return logger;
    },
  };
  return logger;
}

Deno.test("pythonLoggers reuses a model's logger", () => {
  const custom = childLogger();
  const loggers = pythonLoggers(custom);
  assert.equal(loggers("a"), loggers("a"));
  assert.equal(custom.children, 1);
  assert.equal(loggers.size, 1);
});

Deno.test("pythonLoggers holds a bounded number of loggers when model names keep changing", () => {
  const loggers = pythonLoggers(childLogger());
  // Models added and removed under new names, each printing once.
  for (let i = 0; i < 10_000; i++) loggers(`model-${i}`);
  assert.ok(loggers.size <= 256, `${loggers.size} loggers held`);
  // The default loggers (LogTape's) too.
  const defaults = pythonLoggers(undefined);
  for (let i = 0; i < 10_000; i++) defaults(`model-${i}`);
  assert.ok(defaults.size <= 256, `${defaults.size} loggers held`);
});
