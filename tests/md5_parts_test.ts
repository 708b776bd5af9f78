import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { md5PartsJob } from "../plugins/_md5_parts.ts";
import { ParallelMd5 } from "../plugins/_parallel_md5.ts";

function expectedParts(data: Uint8Array, partSize: number): string[] {
  const out: string[] = [];
  for (let at = 0; at < Math.max(data.length, 1); at += partSize) {
    out.push(
      createHash("md5").update(data.subarray(at, at + partSize)).digest("hex"),
    );
  }
  return out;
}

/** Feeds `data` cut at `cuts` (offsets) and returns the part digests. */
async function hashParts(
  threads: ParallelMd5[],
  data: Uint8Array,
  partSize: number,
  cuts: number[],
): Promise<string[]> {
  const job = md5PartsJob(threads, partSize);
  let at = 0;
  for (const cut of [...cuts.filter((c) => c < data.length), data.length]) {
    if (cut <= at) continue;
    // A copy that is overwritten once update resolves: the job must not read it later.
    const chunk = data.slice(at, cut);
    await job.update(chunk);
    chunk.fill(0);
    at = cut;
  }
  return await job.digests();
}

Deno.test("md5PartsJob: one md5 per part whatever the chunking, on this thread", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 300 }),
      fc.integer({ min: 1, max: 64 }),
      fc.array(fc.nat({ max: 300 })),
      async (data, partSize, cuts) => {
        const got = await hashParts(
          [],
          data,
          partSize,
          cuts.sort((a, b) => a - b),
        );
        assert.deepEqual(got, expectedParts(data, partSize));
      },
    ),
  );
});

Deno.test("md5PartsJob: parts alternate between two hash threads with the same digests", async () => {
  // A generous start: on a loaded machine a worker can take seconds to start,
  // and this test is about the digests, not the start-up fallback.
  const threads =
    (await Promise.all([ParallelMd5.start(60_000), ParallelMd5.start(60_000)]))
      .filter((t) => t !== undefined);
  assert.equal(threads.length, 2, "workers run on Deno");
  try {
    const data = new Uint8Array(5 * 65536 + 123).map((_, i) => (i * 7) & 0xff);
    const cuts = [1, 65535, 65536, 100_000, 200_000, 262_144, 300_000];
    assert.deepEqual(
      await hashParts(threads, data, 65536, cuts),
      expectedParts(data, 65536),
    );
  } finally {
    threads.forEach((t) => t.close());
  }
});

Deno.test("md5PartsJob: no bytes are one part, the md5 of nothing; partSize is checked", async () => {
  assert.deepEqual(await md5PartsJob([], 1024).digests(), [
    "d41d8cd98f00b204e9800998ecf8427e",
  ]);
  assert.throws(() => md5PartsJob([], 0), RangeError);
  assert.throws(() => md5PartsJob([], 1.5), RangeError);
});
