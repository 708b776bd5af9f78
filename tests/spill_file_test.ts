import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import { SpillError } from "../src/errors.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import {
  readSpill,
  type SpillRef,
  writeSpill,
} from "../plugins/_spill_file.ts";
import { jsonPieces, type JsonSegment } from "../plugins/_json_pieces.ts";

const runtime = defaultRuntime();

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(
    await Deno.makeTempDir({ prefix: "pyproxy-spill-file-test-" }),
  );
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function exists(path: string): Promise<boolean> {
  return (await runtime.stat(path)) !== null;
}

const SEGMENTS = { crc32: true, strings: 64 * 1024 } as const;

async function write(
  dir: string,
  value: unknown,
  options: { crc32?: boolean; strings?: number } = SEGMENTS,
  name = "h-1.json",
): Promise<SpillRef> {
  const ref = await writeSpill(runtime, `${dir}/${name}`, value, {
    threshold: 1,
    reserve: () => {},
    ...options,
  });
  assert.ok(ref !== undefined);
  return ref;
}

/** Writes a file by hand: `json`, then each segment's bytes, with a CRC-32 reference. */
function craft(
  dir: string,
  json: string,
  segments: { at: (string | number)[]; bytes: Uint8Array }[],
): SpillRef {
  const head = new TextEncoder().encode(json);
  const total = head.length +
    segments.reduce((n, s) => n + s.bytes.length, 0);
  const file = new Uint8Array(total);
  file.set(head);
  let offset = head.length;
  const strings = segments.map((s) => {
    file.set(s.bytes, offset);
    const entry = { at: s.at, offset, length: s.bytes.length };
    offset += s.bytes.length;
    return entry;
  });
  const path = `${dir}/crafted.json`;
  Deno.writeFileSync(path, file);
  return {
    path,
    size: total,
    crc32: crc32(file),
    json: head.length,
    strings,
  };
}

Deno.test("jsonPieces with segments writes null for long well-formed strings below the root and records their paths", () => {
  const long = "a".repeat(70_000);
  const lone = "b".repeat(70_000) + "\ud800";
  const found: JsonSegment[] = [];
  const value = {
    id: 1,
    msg: { data: long, list: [1, long, { deep: long }], lone, short: "x" },
  };
  const text = [...jsonPieces(value, { minLength: 65_536, found })].join("");
  assert.deepEqual(
    JSON.parse(text),
    {
      id: 1,
      msg: { data: null, list: [1, null, { deep: null }], lone, short: "x" },
    },
  );
  assert.deepEqual(found.map((f) => f.at), [
    ["msg", "data"],
    ["msg", "list", 1],
    ["msg", "list", 2, "deep"],
  ]);
  assert.ok(found.every((f) => f.value === long));
  // Without segments nothing changes.
  assert.equal([...jsonPieces(value)].join(""), JSON.stringify(value));
  assert.throws(
    () => [...jsonPieces(value, { minLength: 1000, found: [] })],
    RangeError,
  );
});

Deno.test("spill files with a CRC-32 and string segments round-trip any text, and the file is gone after", async () => {
  await withDir(async (dir) => {
    const ascii = "x".repeat(100_000);
    const mixed = 'é€😀\u0000\n"\\'.repeat(20_000);
    const bom = "\uFEFF" + "y".repeat(70_000);
    const lone = "z".repeat(70_000) + "\udc00";
    // Over the 16 MiB of a whole-segment decode, and across the 4 MiB read chunks.
    const huge = "€".repeat(6_000_000) + "😀";
    const value = {
      id: 7,
      cmd: "executeModel",
      msg: {
        ascii,
        list: [mixed, 1, { bom }],
        lone,
        huge,
        // An own "__proto__" key, as JSON.parse makes it: set as a property, never as the prototype.
        own: JSON.parse(`{"__proto__": ${JSON.stringify(ascii)}}`),
        empty: "",
      },
    };
    const ref = await write(dir, value);
    assert.equal(ref.md5, undefined);
    assert.equal(ref.md5Parts, undefined);
    assert.equal(typeof ref.crc32, "number");
    assert.deepEqual(ref.strings!.map((s) => s.at), [
      ["msg", "ascii"],
      ["msg", "list", 0],
      ["msg", "list", 2, "bom"],
      ["msg", "huge"],
      ["msg", "own", "__proto__"],
    ]);
    const back = await readSpill(runtime, dir, ref);
    assert.deepEqual(back, value);
    const own = (back.msg as { own: object }).own;
    assert.ok(Object.hasOwn(own, "__proto__"));
    assert.equal(Object.getPrototypeOf(own), Object.prototype);
    assert.ok((back.msg as { huge: string }).huge === huge);
    assert.equal(await exists(ref.path), false);
  });
});

Deno.test("spill files: CRC-32 alone, md5 with segments, and plain md5 all read back", async () => {
  await withDir(async (dir) => {
    const value = { id: 1, data: "q".repeat(200_000) };
    const crcOnly = await write(dir, value, { crc32: true }, "a.json");
    assert.equal(crcOnly.strings, undefined);
    assert.equal(typeof crcOnly.crc32, "number");
    assert.deepEqual(await readSpill(runtime, dir, crcOnly), value);
    const md5Segments = await write(dir, value, { strings: 65_536 }, "b.json");
    assert.match(String(md5Segments.md5), /^[0-9a-f]{32}$/);
    assert.equal(md5Segments.crc32, undefined);
    assert.equal(md5Segments.strings!.length, 1);
    assert.deepEqual(await readSpill(runtime, dir, md5Segments), value);
    const plain = await write(dir, value, {}, "c.json");
    assert.equal(plain.strings, undefined);
    assert.deepEqual(await readSpill(runtime, dir, plain), value);
  });
});

Deno.test("spill files: a wrong CRC-32 is a SpillError and the file is deleted", async () => {
  await withDir(async (dir) => {
    const ref = await write(dir, { id: 1, data: "w".repeat(100_000) });
    await assert.rejects(
      readSpill(runtime, dir, { ...ref, crc32: (ref.crc32! + 1) >>> 0 }),
      (err: unknown) =>
        err instanceof SpillError && /crc32 mismatch/.test(err.message),
    );
    assert.equal(await exists(ref.path), false);
    const flipped = await write(dir, { id: 1, data: "w".repeat(100_000) });
    const bytes = Deno.readFileSync(flipped.path);
    bytes[bytes.length - 10]! ^= 1;
    Deno.writeFileSync(flipped.path, bytes);
    await assert.rejects(
      readSpill(runtime, dir, flipped),
      (err: unknown) =>
        err instanceof SpillError && /crc32 mismatch/.test(err.message),
    );
  });
});

Deno.test("spill files: bad segment references are SpillErrors, and the file is deleted every time", async () => {
  await withDir(async (dir) => {
    const value = {
      id: 3,
      msg: { a: "a".repeat(70_000), b: "b".repeat(70_000) },
    };
    const cases: [string, (ref: SpillRef) => unknown, RegExp][] = [
      ["a path that does not exist", (r) => ({
        ...r,
        strings: [{ ...r.strings![0]!, at: ["msg", "nope"] }, r.strings![1]],
      }), /string segment 0: no null at \["msg","nope"\]/],
      ["a path to a value that is not null", (r) => ({
        ...r,
        strings: [{ ...r.strings![0]!, at: ["id"] }, r.strings![1]],
      }), /no null at \["id"\]/],
      ["an index into an object", (r) => ({
        ...r,
        strings: [{ ...r.strings![0]!, at: ["msg", 0] }, r.strings![1]],
      }), /no null/],
      ["overlapping segments", (r) => ({
        ...r,
        strings: [r.strings![0], { ...r.strings![1]!, offset: r.json! + 5 }],
      }), /overlaps/],
      ["a segment inside the JSON", (r) => ({
        ...r,
        strings: [{ ...r.strings![0]!, offset: 0 }, r.strings![1]],
      }), /overlaps/],
      ["a segment past the end", (r) => ({
        ...r,
        strings: [r.strings![0], { ...r.strings![1]!, length: r.size }],
      }), /ends past the file/],
      [
        "json without strings",
        (r) => ({ ...r, strings: undefined }),
        /json and strings together/,
      ],
      [
        "strings without json",
        (r) => ({ ...r, json: undefined }),
        /json and strings together/,
      ],
      [
        "json past the file",
        (r) => ({ ...r, json: r.size + 1 }),
        /json at most size/,
      ],
      ["an empty path", (r) => ({
        ...r,
        strings: [{ ...r.strings![0]!, at: [] }, r.strings![1]],
      }), /invalid \$spill reference/],
    ];
    for (const [label, edit, pattern] of cases) {
      const ref = await write(dir, value);
      await assert.rejects(
        readSpill(runtime, dir, edit(ref)),
        (err: unknown) =>
          err instanceof SpillError && pattern.test(err.message),
        label,
      );
      assert.equal(await exists(ref.path), false, label);
    }
  });
});

Deno.test("spill files: invalid UTF-8 in a segment is a SpillError, short or long", async () => {
  await withDir(async (dir) => {
    const short = craft(dir, '{"id":1,"s":null}', [{
      at: ["s"],
      bytes: new Uint8Array([0x61, 0xff, 0x62]),
    }]);
    await assert.rejects(
      readSpill(runtime, dir, short),
      (err: unknown) =>
        err instanceof SpillError &&
        /string segment 0: invalid UTF-8/.test(err.message),
    );
    const bytes = new Uint8Array(17 * 1024 * 1024).fill(0x61);
    bytes[9 * 1024 * 1024] = 0xc3; // a lead byte followed by an ASCII byte
    const long = craft(dir, '{"id":1,"s":null}', [{ at: ["s"], bytes }]);
    await assert.rejects(
      readSpill(runtime, dir, long),
      (err: unknown) =>
        err instanceof SpillError && /invalid UTF-8/.test(err.message),
    );
    // A real U+FFFD is text like any other.
    const fffd = craft(dir, '{"id":1,"s":null}', [{
      at: ["s"],
      bytes: new TextEncoder().encode("a\uFFFDb"),
    }]);
    assert.deepEqual(await readSpill(runtime, dir, fffd), {
      id: 1,
      s: "a\uFFFDb",
    });
  });
});

Deno.test("spill files with segments read back any JSON message with long strings anywhere (property)", async () => {
  const fc = (await import("fast-check")).default;
  await withDir(async (dir) => {
    // Long strings (some with lone surrogates, some multi-byte) inside random JSON.
    const long = fc.tuple(
      fc.constantFrom("a", "é", "😀", "\ud800", '\n"\\', "\uFEFF"),
      fc.integer({ min: 65_536, max: 80_000 }),
    ).map(([unit, n]) => unit.repeat(Math.ceil(n / unit.length)));
    const value = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: "small" },
        fc.jsonValue({ maxDepth: 1 }),
        long,
        fc.array(tie("node"), { maxLength: 4 }),
        fc.dictionary(
          fc.oneof(fc.string(), fc.constant("__proto__")),
          tie("node"),
          { maxKeys: 4 },
        ),
      ),
    })).node;
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.string(), value, { maxKeys: 4 }),
        async (msg) => {
          const message = JSON.parse(JSON.stringify({ id: 1, msg }));
          const ref = await write(dir, message, SEGMENTS, `p-${++n}.json`);
          assert.deepEqual(await readSpill(runtime, dir, ref), message);
          assert.equal(await exists(ref.path), false);
        },
      ),
      { numRuns: 20 },
    );
  });
});
