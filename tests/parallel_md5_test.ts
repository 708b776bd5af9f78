import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ParallelMd5 } from "../plugins/_parallel_md5.ts";

Deno.test("ParallelMd5 gives node:crypto's digest for chunked, interleaved jobs", async () => {
  const md5 = await ParallelMd5.start(60_000); // generous on a loaded machine
  assert.ok(md5 !== undefined, "workers and SharedArrayBuffer run on Deno");
  try {
    const sizes = [0, 1, 63, 64, 65, 1000, 70_000];
    const expected: string[] = [];
    const jobs = sizes.map((size, j) => {
      const data = new Uint8Array(size).map((_, i) => (i * 31 + j) & 0xff);
      expected.push(createHash("md5").update(data).digest("hex"));
      return { data, job: md5.begin() };
    });
    // Chunks of every job are posted interleaved; each job keeps its own order.
    for (let at = 0; at < 70_000; at += 777) {
      await Promise.all(jobs.map(({ data, job }) => {
        if (at >= data.length) return;
        const chunk = data.slice(at, at + 777);
        // The chunk may be reused once update resolves: overwrite it then.
        return job.update(chunk).then(() => chunk.fill(0));
      }));
    }
    const digests = await Promise.all(jobs.map(({ job }) => job.digest()));
    assert.deepEqual(digests, expected);
  } finally {
    md5.close();
  }
});

Deno.test("ParallelMd5: after close, pending and new hashes fail instead of hanging", async () => {
  const md5 = await ParallelMd5.start(60_000); // generous on a loaded machine
  assert.ok(md5 !== undefined);
  const job = md5.begin();
  const pending = job.digest();
  md5.close();
  await assert.rejects(pending, /closed/);
  assert.equal(md5.failed, true);
  await assert.rejects(md5.begin().update(new Uint8Array(1)), /closed/);
});

Deno.test("ParallelMd5: chunks posted back to back keep their order when blocks run out", async () => {
  const md5 = await ParallelMd5.start(60_000); // generous on a loaded machine
  assert.ok(md5 !== undefined);
  try {
    // More chunks than shared blocks, none awaited: the first are copied at once, the rest wait
    // their turn; one chunk is larger than a block. The caller reuses each chunk once it resolved.
    const chunks = Array.from(
      { length: 12 },
      (_, i) =>
        new Uint8Array(i === 7 ? 5 * 1024 * 1024 : 1000 + i).fill(i + 1),
    );
    const expected = createHash("md5");
    for (const chunk of chunks) expected.update(chunk);
    const job = md5.begin();
    const copied = chunks.map((chunk) =>
      job.update(chunk).then(() => chunk.fill(0))
    );
    await Promise.all(copied);
    assert.equal(await job.digest(), expected.digest("hex"));
  } finally {
    md5.close();
  }
});
