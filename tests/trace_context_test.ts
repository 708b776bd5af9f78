// The W3C trace context parser (src/_trace_context.ts): what it takes and
// refuses, checked against generated headers (fast-check).
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  checkTracestate,
  formatTraceparent,
  parseTraceparent,
  RandomHexIds,
} from "../src/_trace_context.ts";

const hex = (length: number) =>
  fc.string({
    unit: fc.constantFrom(..."0123456789abcdef"),
    minLength: length,
    maxLength: length,
  });
const traceId = hex(32).filter((s) => !/^0+$/.test(s));
const spanId = hex(16).filter((s) => !/^0+$/.test(s));

Deno.test("parseTraceparent takes every valid version-00 header and gives its fields back", () => {
  fc.assert(
    fc.property(traceId, spanId, hex(2), (trace, span, flags) => {
      const header = `00-${trace}-${span}-${flags}`;
      const parsed = parseTraceparent(header);
      assert.deepEqual(parsed, {
        traceId: trace,
        parentId: span,
        sampled: (parseInt(flags, 16) & 1) === 1,
      });
      assert.equal(
        formatTraceparent(trace, span, parsed!.sampled),
        `00-${trace}-${span}-${parsed!.sampled ? "01" : "00"}`,
      );
    }),
  );
});

Deno.test("parseTraceparent refuses a header changed in any one character, or never throws on any string", () => {
  fc.assert(
    fc.property(
      traceId,
      spanId,
      fc.nat(54),
      fc.constantFrom(..."GZx-_ ABCDEF\u00e9"),
      (trace, span, at, char) => {
        const header = `00-${trace}-${span}-01`;
        const changed = header.slice(0, at) + char + header.slice(at + 1);
        if (changed === header) return;
        // The only change that stays valid: a hex digit for another one.
        const result = parseTraceparent(changed);
        if (result !== undefined) {
          assert.match(char, /[0-9a-f]/);
          assert.equal(changed[at], char);
        }
      },
    ),
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 600 }), (value) => {
      const result = parseTraceparent(value);
      if (result === undefined) return;
      assert.match(result.traceId, /^[0-9a-f]{32}$/);
      assert.match(result.parentId, /^[0-9a-f]{16}$/);
    }),
  );
});

Deno.test("parseTraceparent refuses what the W3C spec refuses", () => {
  const ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  assert.ok(parseTraceparent(ok));
  for (
    const bad of [
      "",
      ok.toUpperCase(),
      ok.slice(0, -1),
      ok + "-extra", // version 00 has nothing after the flags
      ok + " ",
      "ff" + ok.slice(2), // version ff is invalid
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ]
  ) {
    assert.equal(parseTraceparent(bad), undefined, bad);
  }
  // A later version: its own fields after a "-" are ignored.
  assert.equal(
    parseTraceparent("01" + ok.slice(2) + "-what-comes-later")?.traceId,
    "4bf92f3577b34da6a3ce929d0e0e4736",
  );
  assert.equal(parseTraceparent("01" + ok.slice(2) + "x"), undefined);
});

Deno.test("checkTracestate takes list members and refuses anything else", () => {
  assert.equal(
    checkTracestate("rojo=00f067aa0ba902b7"),
    "rojo=00f067aa0ba902b7",
  );
  assert.equal(
    checkTracestate(" rojo=1 ,, t@vendor=x y "),
    "rojo=1,t@vendor=x y",
  );
  for (
    const bad of [
      "",
      "no-equals",
      "Rojo=1",
      "rojo=1,rojo=2",
      "rojo=a,b",
      "rojo=\u00e9",
      "rojo=" + "x".repeat(600),
      Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(","),
    ]
  ) {
    assert.equal(checkTracestate(bad), undefined, bad);
  }
});

Deno.test("RandomHexIds gives lower-case hex of its length", () => {
  const ids = new RandomHexIds();
  assert.match(ids.next(16), /^[0-9a-f]{32}$/);
  assert.match(ids.next(8), /^[0-9a-f]{16}$/);
  // Past its 4 KiB of random bytes (~170 spans) it draws afresh: 1000 trace
  // ids, all valid and all different.
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const id = ids.next(16);
    assert.match(id, /^[0-9a-f]{32}$/);
    seen.add(id);
  }
  assert.equal(seen.size, 1000);
});
