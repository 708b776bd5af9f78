import assert from "node:assert/strict";
import { OutputBuffer, type OutputChunk } from "../src/output_buffer.ts";
import { ReplayBudget } from "../src/replay_budget.ts";
import { Pool } from "../src/pool.ts";
import type { Atom } from "../src/atom.ts";
import { SseReader, startGateway, until } from "./_gateway_harness.ts";
import {
  CancelledError,
  ConfigError,
  TimeoutError,
  WorkerCrashedError,
} from "../src/errors.ts";

async function collect(
  stream: ReadableStream<OutputChunk>,
): Promise<OutputChunk[]> {
  const out: OutputChunk[] = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

function fill(buffer: OutputBuffer, from: number, to: number, data: string) {
  for (let seq = from; seq < to; seq++) buffer.push({ fd: 1, data, seq });
}

Deno.test("ReplayBudget bounds the buffers together, dropping from the one holding the most", async () => {
  const budget = new ReplayBudget({ maxBytes: 100 });
  const big = new OutputBuffer({ budget });
  const small = new OutputBuffer({ budget });
  fill(small, 0, 2, "s".repeat(10)); // 20
  fill(big, 0, 20, "b".repeat(10)); // 200 printed
  assert.equal(budget.bytes, 100);
  assert.equal(big.bytes + small.bytes, budget.bytes);
  // The quiet buffer keeps everything; the loud one lost its oldest.
  assert.equal(small.bytes, 20);
  assert.equal(small.dropped, 0);
  assert.equal(big.bytes, 80);
  assert.equal(big.dropped, 12);
  big.end();
  small.end();
  assert.equal(budget.bytes, 0);
  assert.equal(budget.members, 0);
  // The replay starts at the oldest chunk kept, with the gap's size.
  const chunks = await collect(big.readable(0));
  assert.deepEqual(chunks.map((c) => [c.seq, c.truncated]), [
    [12, 12],
    ...[13, 14, 15, 16, 17, 18, 19].map((seq) => [seq, undefined]),
  ]);
});

Deno.test("ReplayBudget shares out evenly among buffers that all print a lot", () => {
  const budget = new ReplayBudget({ maxBytes: 120 });
  const buffers = [0, 1, 2].map(() => new OutputBuffer({ budget }));
  for (let seq = 0; seq < 50; seq++) {
    for (const b of buffers) b.push({ fd: 1, data: "x".repeat(4), seq });
    assert.ok(budget.bytes <= 120, `${budget.bytes} held`);
  }
  assert.deepEqual(buffers.map((b) => b.bytes), [40, 40, 40]);
  for (const b of buffers) b.end();
  assert.equal(budget.bytes, 0);
});

Deno.test("ReplayBudget never drops what an attached reader has not taken, nor the newest chunk", async () => {
  const budget = new ReplayBudget({ maxBytes: 10 });
  const read = new OutputBuffer({ budget });
  const reader = read.readable().getReader();
  const first = reader.read(); // attaches, waits for data
  read.push({ fd: 1, data: "r".repeat(5), seq: 0 });
  assert.equal((await first).value?.seq, 0);
  fill(read, 1, 4, "r".repeat(5));
  // 1..3 are undelivered: held despite the budget (backpressure bounds them).
  assert.equal(read.bytes, 15);
  const other = new OutputBuffer({ budget });
  other.push({ fd: 1, data: "o".repeat(30), seq: 0 });
  assert.equal(other.bytes, 30); // its newest chunk
  assert.deepEqual(
    [(await reader.read()).value?.seq, (await reader.read()).value?.seq],
    [1, 2],
  );
  // Once the reader leaves, what it held back goes at once.
  await reader.cancel();
  assert.equal(read.bytes, 5);
  assert.equal(budget.bytes, 35);
  read.end();
  other.end();
  assert.equal(budget.bytes, 0);
});

Deno.test("ReplayBudget asks a buffer that could drop nothing again only once it reports: a chunk stored past the bound costs one scan, not one per buffer", async () => {
  // 200 buffers that each keep only their newest chunk, together past the
  // bound: nothing can go. Each chunk used to ask every one of them again
  // (a scan each: ~30 ms of the thread per chunk with 2000 evals).
  const budget = new ReplayBudget({ maxBytes: 0 });
  const buffers = Array.from(
    { length: 200 },
    () => new OutputBuffer({ budget }),
  );
  let asked = 0;
  for (const b of buffers) {
    const shrink = b.shrink.bind(b);
    b.shrink = (limit: number) => {
      asked++;
      shrink(limit);
    };
  }
  buffers.forEach((b) => b.push({ fd: 1, data: "x", seq: 0 }));
  asked = 0;
  buffers[7]!.push({ fd: 1, data: "y", seq: 1 });
  // Only the buffer that stored a chunk is asked (it drops its older one,
  // then has nothing more): not the 199 others again.
  assert.equal(asked, 2);
  assert.equal(buffers[7]!.dropped, 1);
  assert.equal(budget.bytes, 200);
  // A reader that takes held-back chunks makes them droppable: the buffer
  // is asked again as it reads, not left out.
  const held = new OutputBuffer({ budget, maxBytes: 1000 });
  const reader = held.readable(0).getReader();
  held.push({ fd: 1, data: "h", seq: 0 });
  assert.equal((await reader.read()).value?.seq, 0); // attached from now on
  fill(held, 1, 4, "h"); // not taken yet: held back
  assert.equal(held.bytes, 3);
  assert.equal((await reader.read()).value?.seq, 1);
  // It took seq 1: that chunk goes now, past the bound.
  assert.equal(held.bytes, 2);
  await reader.cancel();
  // Gone: what it held back goes too (down to the newest chunk).
  assert.equal(held.bytes, 1);
  for (const b of [...buffers, held]) b.end();
  assert.equal(budget.bytes, 0);
});

Deno.test("ReplayBudget counts a buffer only until it ends, and its own cap still applies", () => {
  const budget = new ReplayBudget({ maxBytes: 1000 });
  const capped = new OutputBuffer({ budget, maxBytes: 8 });
  fill(capped, 0, 10, "cc");
  assert.equal(capped.bytes, 8);
  assert.equal(budget.bytes, 8);
  capped.end();
  assert.equal(budget.bytes, 0);
  capped.end();
  assert.equal(budget.bytes, 0);
  // Pushes after the end are ignored and never counted.
  capped.push({ fd: 1, data: "late", seq: 10 });
  assert.equal(budget.bytes, 0);
  assert.throws(() => new ReplayBudget({ maxBytes: -1 }), RangeError);
  assert.throws(() => new ReplayBudget({ maxBytes: NaN }), RangeError);
  const unbounded = new ReplayBudget({ maxBytes: Infinity });
  const b = new OutputBuffer({ budget: unbounded });
  fill(b, 0, 100, "u");
  assert.equal(unbounded.bytes, 100);
});

/**
 * Follows a budget's total after every change (its shares' adds, once the
 * shrink they may start is over): the peak, and a wait for the total to
 * reach some amount. `excluded`: what not to count in the peak.
 */
function watch(budget: ReplayBudget, excluded: () => number = () => 0): {
  peak: () => number;
  reached: (bytes: number) => Promise<void>;
} {
  let peak = 0;
  let depth = 0;
  const waiting: Array<{ bytes: number; resolve: () => void }> = [];
  const join = budget.join.bind(budget);
  budget.join = (member) => {
    const share = join(member);
    const add = share.add.bind(share);
    share.add = (units) => {
      // A shrink's drops are adds too: count only the outermost's result.
      depth++;
      try {
        add(units);
      } finally {
        depth--;
      }
      if (depth > 0) return;
      peak = Math.max(peak, budget.bytes - excluded());
      for (const w of waiting.splice(0)) {
        if (budget.bytes >= w.bytes) w.resolve();
        else waiting.push(w);
      }
    };
    return share;
  };
  return {
    peak: () => peak,
    reached: (bytes) =>
      new Promise((resolve) => waiting.push({ bytes, resolve })),
  };
}

const KIB = 1024;
const MIB = 1024 * KIB;
/** Prints `kib` KiB in lines of 1 KiB ("<tag> <i>" then padding). */
const printing = (tag: string, kib: number) =>
  `import sys\nfor i in range(${kib}):\n    sys.stdout.write(('${tag} %05d ' % i).ljust(1023, '.') + '\\n')\n`;

Deno.test("Pool evalReplayBudget bounds the output its running evals keep together", async () => {
  const flag = await Deno.makeTempFile({ prefix: "evalbudget-" });
  await Deno.remove(flag);
  await using pool = await Pool.start({
    workers: 2,
    handleSignals: false,
    evalReplayBudget: MIB,
  });
  try {
    // What a live reader has not taken yet is never dropped (its window
    // bounds it): the peak is of everything else.
    const held: { live?: Atom } = {};
    const seen = watch(pool.replayBudget, () => held.live?.bufferedBytes ?? 0);
    // A quiet eval, still running while the loud ones print 8 MiB.
    const quiet = pool.eval(
      `import os, time\nprint('quiet')\nwhile not os.path.exists(${
        JSON.stringify(flag)
      }):\n    time.sleep(0.01)\n'q'`,
    );
    const loud = Array.from(
      { length: 8 },
      (_, i) => pool.eval(printing(`L${i}`, 1024)),
    );
    // One more with a live reader: it gets all of it, in order.
    const live = held.live = pool.eval(printing("live", 1024));
    const liveChunks = collect(live.output);
    await Promise.all(loud.map((a) => a.result));
    await live.result;
    const got = await liveChunks;
    assert.deepEqual(got.map((c) => c.seq), got.map((_, i) => i));
    assert.ok(got.every((c) => c.truncated === undefined));
    const lines = got.map((c) => c.data).join("").split("\n");
    assert.equal(lines.length, 1025);
    assert.ok(
      lines.every((l, i) =>
        i === 1024 || l.startsWith(`live ${String(i).padStart(5, "0")} `)
      ),
    );
    // 9 MiB printed; at no moment more than the budget kept (each chunk is
    // at most 64 Ki: the newest chunks, always kept, fit in it).
    assert.ok(seen.peak() <= MIB, `${seen.peak()} held at the peak`);
    assert.ok(seen.peak() > MIB / 2, `${seen.peak()} held at the peak`);
    // The quiet eval, holding the least, lost nothing.
    const replay = await (async () => {
      const reader = quiet.replay(0).getReader();
      const first = await reader.read();
      await reader.cancel();
      return first.value;
    })();
    assert.deepEqual(replay, { fd: 1, data: "quiet\n", seq: 0 });
    // A loud one's replay starts at its oldest kept output, with the gap.
    for (const atom of loud) {
      const chunks = await collect(atom.replay(0));
      const first = chunks[0]!;
      assert.ok(
        first.seq > 0 && first.truncated === first.seq,
        `${first.seq} ${first.truncated}`,
      );
      assert.ok(chunks.slice(1).every((c) => c.truncated === undefined));
      assert.ok(chunks.at(-1)!.data.includes(" 01023 "));
    }
    await Deno.writeTextFile(flag, "");
    assert.equal(await quiet.result, "q");
    assert.equal(pool.replayBudget.bytes, 0);
    assert.equal(pool.replayBudget.members, 0);
    assert.equal(pool.status().evalReplayBytes, 0);
  } finally {
    await Deno.remove(flag).catch(() => {});
  }
});

const FOREVER = "while True:\n    print('x' * 1000)";

Deno.test("Pool evalReplayBudget counts go back to 0 when evals are cancelled, time out, lose their worker or the pool closes", async () => {
  const pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    evalReplayBudget: 256 * KIB,
    // close() gives the eval that prints for ever this long.
    shutdownGrace: 200,
  });
  try {
    const seen = watch(pool.replayBudget);
    const cancelled = pool.eval(FOREVER);
    const timedOut = pool.eval(FOREVER, { timeout: 200 });
    await seen.reached(256 * KIB - 64 * KIB);
    cancelled.cancel();
    await assert.rejects(cancelled.result, CancelledError);
    await assert.rejects(timedOut.result, TimeoutError);
    await Promise.all([cancelled.stopped, timedOut.stopped]);
    assert.equal(pool.replayBudget.bytes, 0);
    assert.equal(pool.replayBudget.members, 0);

    const crashed = pool.eval(FOREVER);
    await seen.reached(256 * KIB - 64 * KIB);
    pool.killWorker(crashed.worker!, "test");
    await assert.rejects(crashed.result, WorkerCrashedError);
    await crashed.stopped;
    assert.equal(pool.replayBudget.bytes, 0);

    const closed = pool.eval(FOREVER);
    await seen.reached(256 * KIB - 64 * KIB);
    await pool.close();
    await closed.stopped;
    assert.equal(pool.replayBudget.bytes, 0);
    assert.equal(pool.replayBudget.members, 0);
    assert.ok(seen.peak() <= 256 * KIB, `${seen.peak()} held at the peak`);
  } finally {
    await pool.close();
  }
});

Deno.test("Pool evalReplayBudget is validated as a pool option", async () => {
  for (const bad of [-1, NaN, "1"]) {
    await assert.rejects(
      Pool.start({
        workers: 1,
        handleSignals: false,
        evalReplayBudget: bad as number,
      }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          "Cannot start pool: evalReplayBudget: expected a number >= 0",
    );
  }
});

Deno.test("serve bounds eval replay by limits.evalReplayBudget and reports what running evals hold", async () => {
  await using gw = await startGateway({
    allowEval: true,
    limits: { evalReplayBudget: 64 * KIB, shutdownGrace: 2000 },
  });
  // Abandoned after its first event, while it prints 512 KiB.
  const res = await gw.fetch("/v1/eval", {
    method: "POST",
    body: JSON.stringify({ code: printing("gw", 512) + "'done'" }),
  });
  const events = new SseReader(res.body!);
  const first = await events.next();
  assert.equal(first?.event, "atom");
  const id = (first?.data as { id: string }).id;
  await events.cancel();
  const status = await until(async () => {
    const s = await (await gw.fetch("/v1/status")).json();
    return s.queue === 0 && s.inFlight === 0 && s;
  }, "the eval to end");
  assert.equal(status.evalReplayBytes, 0);
  const metrics = await (await gw.fetch("/metrics")).text();
  assert.match(metrics, /^pyproxy_eval_replay_bytes 0$/m);
  // Its replay starts at the oldest output kept, after a gap, and holds no
  // more than the budget.
  const replay = await gw.fetch(`/v1/eval/${id}/events`, {
    headers: { "last-event-id": "-1" },
  });
  const all = await new SseReader(replay.body!).all();
  const output = all.filter((e) => e.event === "output").map((e) =>
    e.data as { data: string; truncated?: number }
  );
  assert.ok(
    (output[0]?.truncated ?? 0) > 0,
    `truncated: ${output[0]?.truncated}`,
  );
  const kept = output.map((o) => o.data).join("");
  assert.ok(kept.length <= 64 * KIB, `${kept.length} kept`);
  assert.ok(kept.split("\n").at(-2)!.startsWith("gw 00511 "));
  assert.deepEqual(all.at(-1), { event: "result", data: { value: "done" } });
});
