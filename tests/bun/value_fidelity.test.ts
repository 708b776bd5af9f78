// Values through a real Python echo model on Bun (docs/models.md, "What values
// become"): random nested values (a seeded generator: fast-check is Deno's
// here) come back unchanged, by the library and by the gateway; NaN and a
// body's 1e400 fail with a SerializationError instead of arriving as None.
import { expect, test } from "bun:test";
import { Pool, SerializationError } from "../../mod.ts";
import { withGateway } from "./_helpers.ts";

const ECHO = "class Echo:\n    def execute(self, msg):\n        return msg\n";

const STRINGS = ["", "\ud800", "a\udc00b", "\u0000", "\u2028", "😀", '"\\'];
const KEYS = ["__proto__", "constructor", "$bytes", "", "0", "null", "k"];
const NUMBERS = [0, 1.5, -2, 1e308, -1e308, 5e-324, 2 ** 53 - 1, 1e21, 0.1];

/** A small seeded generator (xorshift32): the same values on every run. */
function generator(seed: number): (depth?: number) => unknown {
  let s = seed;
  const next = (n: number): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
  const pick = <T>(items: T[]): T => items[next(items.length)]!;
  const value = (depth = 0): unknown => {
    switch (next(depth > 3 ? 4 : 6)) {
      case 0:
        return null;
      case 1:
        return pick(NUMBERS);
      case 2:
        return pick(STRINGS) + String.fromCharCode(next(0x10000));
      case 3:
        return next(2) === 0;
      case 4:
        return Array.from({ length: next(4) }, () => value(depth + 1));
      default:
        return Object.fromEntries(
          Array.from(
            { length: next(4) },
            () => [pick(KEYS) + pick(["", "x"]), value(depth + 1)],
          ),
        );
    }
  };
  return value;
}

test("Pool.execute on Bun echoes random JSON-able values unchanged and refuses NaN", async () => {
  const pool = await Pool.start({ workers: 1, handleSignals: false });
  try {
    await pool.addModel("echo", { source: ECHO });
    const value = generator(20261207);
    for (let i = 0; i < 200; i++) {
      const sent = { v: value() };
      expect(await pool.execute("echo", sent)).toEqual(sent);
    }
    for (const msg of [{ x: NaN }, { x: [null, -Infinity] }]) {
      const err = await pool.execute("echo", msg).catch((e) => e);
      expect(err).toBeInstanceOf(SerializationError);
      expect(err.message).toMatch(/^Cannot send executeModel: msg\.x/);
    }
  } finally {
    await pool.close();
  }
});

test("The gateway on Bun echoes JSON bodies unchanged and refuses 1e400 with a 400", async () => {
  await withGateway({ "echo.py": ECHO }, {}, async (server) => {
    const post = (body: string) =>
      fetch(`${server.url}/v1/models/echo/execute`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
    const value = generator(7);
    for (let i = 0; i < 100; i++) {
      const text = JSON.stringify({ v: value() });
      const res = await post(text);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual(JSON.parse(text));
    }
    const res = await post('{"x":1e400}');
    expect(res.status).toBe(400);
    const { error } = await res.json();
    expect(error.type).toBe("SerializationError");
    expect(error.message).toMatch(
      /^Cannot send executeModel: msg\.x is Infinity/,
    );
  });
});
