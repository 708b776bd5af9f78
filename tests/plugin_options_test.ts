/**
 * The bundled plugins refuse options they do not know, or of the wrong
 * type, with a ConfigError naming the field: pyproxy.json sets them too,
 * where a typo must not pass silently.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { spillover } from "../plugins/spillover.ts";
import { sharedCache } from "../plugins/shared_cache.ts";
import { MemoryStore } from "../plugins/memory_store.ts";
import { RedisStore } from "../plugins/redis_store.ts";

Deno.test("bundled plugins refuse unknown options and wrong types, naming the field", () => {
  const cases: Array<[() => unknown, string]> = [
    [
      () => reconnect({ maxCrash: 1 } as never),
      "Cannot create reconnect plugin: unknown option 'maxCrash' (known: heartbeatInterval, heartbeatTimeout, backoff, maxCrashes, crashWindow, hangGrace, failedRetryAfter)",
    ],
    [
      () => reconnect({ backoff: [] as never }),
      "Cannot create reconnect plugin: backoff: expected an options object",
    ],
    [
      () => reconnect({ backoff: { intial: 5 } as never }),
      "Cannot create reconnect plugin: unknown option 'backoff.intial' (known: backoff.initial, backoff.max, backoff.factor, backoff.jitter)",
    ],
    [
      () => spillover({ thresold: 5 } as never),
      "Cannot create spillover plugin: unknown option 'thresold' (known: threshold, dir, maxBytes)",
    ],
    [
      () => sharedCache({ maxKeyLength: -5 }),
      "Cannot create sharedCache plugin: maxKeyLength: expected an integer >= 1, got -5",
    ],
    [
      () => sharedCache({ namespace: 7 as never }),
      "Cannot create sharedCache plugin: namespace: expected a non-empty string, got 7",
    ],
    [
      () => sharedCache({ store: "redis" as never }),
      'Cannot create sharedCache plugin: store: expected a CacheStore (get, set, delete; set from code only, not in pyproxy.json), got "redis"',
    ],
    [
      () => sharedCache({ closeStore: "yes" as never }),
      'Cannot create sharedCache plugin: closeStore: expected a boolean, got "yes"',
    ],
    [
      () => sharedCache([] as never),
      "Cannot create sharedCache plugin: expected an options object",
    ],
  ];
  for (const [make, message] of cases) {
    assert.throws(make, (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.message, message);
      return true;
    });
  }
  // Good options still pass.
  reconnect({ maxCrashes: 3, backoff: { initial: 10 } });
  spillover({ threshold: 4096 });
  sharedCache({
    store: new MemoryStore(),
    namespace: "app",
    maxKeyLength: 64,
    closeStore: true,
  });
});

Deno.test("the cache stores refuse options of the wrong type instead of coercing them", () => {
  for (const field of ["prefix", "password", "username", "hostname", "path"]) {
    assert.throws(
      () => new RedisStore({ [field]: 5 } as never),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          `Cannot create RedisStore: ${field}: expected a string, got 5`,
    );
  }
  assert.throws(
    () => new MemoryStore({ maxEntries: 1.5 }),
    (err: unknown) =>
      err instanceof RangeError &&
      err.message ===
        "Cannot create MemoryStore: maxEntries must be an integer, got 1.5",
  );
  new RedisStore({ prefix: "app:", password: "secret" }).close();
});

Deno.test("an integer beyond ±2^53 (a BigInt, as pyproxy.json now keeps them) in a plugin option is a ConfigError, not a TypeError from JSON.stringify", () => {
  assert.throws(
    () => sharedCache({ maxKeyLength: 12345678901234567891n } as never),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message ===
        "Cannot create sharedCache plugin: maxKeyLength: expected an integer >= 1, got 12345678901234567891",
  );
  assert.throws(
    () => new RedisStore({ prefix: 12345678901234567891n } as never),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message ===
        "Cannot create RedisStore: prefix: expected a string, got 12345678901234567891",
  );
});
