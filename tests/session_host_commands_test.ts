import assert from "node:assert/strict";
import { wireError } from "../src/_session_host_commands.ts";
import { ConfigError, InvalidRequestError } from "../src/errors.ts";

Deno.test("wireError: a host handler's error as Python sees it, in words even when it is not an Error", () => {
  assert.deepEqual(wireError(new RangeError("too far")), {
    type: "HostError",
    message: "too far",
    exception: "RangeError",
  });
  assert.deepEqual(wireError(new ConfigError("bad option")), {
    type: "ConfigError",
    message: "bad option",
    exception: "ConfigError",
  });
  assert.equal(
    wireError(new InvalidRequestError("key must be a string")).type,
    "InvalidRequestError",
  );
  // A system error has a `code` of its own, but is a failure of host code.
  const enoent = Object.assign(new Error("no such file"), { code: "ENOENT" });
  assert.equal(wireError(enoent).type, "HostError");
  const cases: Array<[unknown, string, string]> = [
    [{ code: 7, reason: "nope" }, '{"code":7,"reason":"nope"}', "object"],
    [{ message: "like an Error" }, "like an Error", "object"],
    ["plain text", "plain text", "string"],
    [42, "42", "number"],
    [undefined, "undefined", "undefined"],
    [{ big: "x".repeat(300) }, `{"big":"${"x".repeat(192)}...`, "object"],
  ];
  for (const [thrown, message, exception] of cases) {
    assert.deepEqual(wireError(thrown), {
      type: "HostError",
      message,
      exception,
    });
  }
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  assert.equal(wireError(cycle).message, "[object Object]");
  assert.equal(
    wireError(Object.create(null)).message,
    "{}",
  );
});
