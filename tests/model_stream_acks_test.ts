import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import {
  ModelStream,
  type StreamPool,
  type StreamRequestOptions,
} from "../src/model_stream.ts";
import { modelsDir } from "./_pool_harness.ts";

const COUNTER = `
import time
class Counter:
    def execute(self, msg):
        for i in range(msg["n"]):
            if msg.get("sleep"):
                time.sleep(msg["sleep"])
            yield "x" * msg["size"] if msg.get("size") else i
`;

/** The pool, with the `itemAck`s its streams send counted. */
function countAcks(pool: Pool): { acks: number } {
  const counted = { acks: 0 };
  const control = pool.control.bind(pool);
  pool.control = (worker, cmd, args, options) => {
    if (cmd === "itemAck") counted.acks++;
    return control(worker, cmd, args, options);
  };
  return counted;
}

Deno.test("ModelStream acknowledges a model's items at a language model's pace in a few itemAcks, not one per item", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
  });
  await pool.addModel("counter", { source: COUNTER });
  const counted = countAcks(pool);
  let read = 0;
  for await (
    const i of pool.executeStream("counter", { n: 300, sleep: 0.001 })
  ) assert.equal(i, read++);
  assert.equal(read, 300);
  // One per item read as it came before (~0.9 per item); now one per half
  // window (32 items) or 100 ms: ~10.
  assert.ok(counted.acks * 4 < read, `${counted.acks} acks for ${read} items`);
});

Deno.test("ModelStream: a window full by its bytes (items of 300 KB) goes on, its acks sent as half of it is read", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
  });
  await pool.addModel("counter", { source: COUNTER });
  const counted = countAcks(pool);
  let read = 0;
  for await (
    const item of pool.executeStream<string>("counter", {
      n: 40,
      size: 300_000,
      sleep: 0.001,
    })
  ) {
    assert.equal(item.length, 300_000);
    read++;
  }
  // 40 items of 300 KB: ten windows of 1 MiB (four items each) and more.
  assert.equal(read, 40);
  assert.ok(counted.acks >= 10, `${counted.acks} acks`);
});

/**
 * A pool that runs no server: the test sends the stream's events and sees
 * its acks.
 */
function fakePool() {
  const acks: number[] = [];
  let onEvent: ((event: Record<string, unknown>) => void) | undefined;
  let end: ((reply: unknown) => void) | undefined;
  let acked: (() => void) | undefined;
  const pool: StreamPool = {
    request<T>(
      _cmd: string,
      _args?: Record<string, unknown>,
      options: StreamRequestOptions = {},
    ): Promise<T> {
      onEvent = options.onEvent;
      options.onSlot?.({ park() {}, unpark() {} });
      return new Promise<T>((resolve) => {
        end = resolve as (reply: unknown) => void;
      });
    },
    control<T>(
      _worker: string,
      _cmd: string,
      args: Record<string, unknown>,
    ): Promise<T> {
      acks.push(args.seq as number);
      acked?.();
      return Promise.resolve({ acked: true } as T);
    },
  };
  return {
    pool,
    acks,
    start: () => onEvent!({ event: "streamStart", id: 1, serverId: "w1" }),
    item: (seq: number, data: unknown) =>
      onEvent!({ event: "item", id: 1, seq, data }),
    end: (items: number) => end!({ items }),
    /** Resolves at the next ack sent. */
    nextAck: () => new Promise<void>((resolve) => (acked = resolve)),
  };
}

/** The event loop's next turn (an ack due "at once" is sent by then). */
const nextTurn = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("ModelStream sends an itemAck at once when half the window (32 items or 512 KiB) is read, else within 100 ms for what was read", async () => {
  const fake = fakePool();
  const stream = new ModelStream(fake.pool, "m", {}, {});
  fake.start();
  for (let seq = 0; seq < 40; seq++) fake.item(seq, seq);
  // 31 items read: no ack on the next turn...
  for (let i = 0; i < 31; i++) await stream.next();
  await nextTurn();
  assert.deepEqual(fake.acks, []);
  // ...the 32nd sends one at once, for all read.
  await stream.next();
  await nextTurn();
  assert.deepEqual(fake.acks, [31]);
  // A few more read: acknowledged later, together.
  const later = fake.nextAck();
  for (let i = 0; i < 5; i++) await stream.next();
  await nextTurn();
  assert.deepEqual(fake.acks, [31]);
  await later;
  assert.deepEqual(fake.acks, [31, 36]);
  // By bytes: two items of 300 KB read are over half the window's 1 MiB.
  const rest = fake.nextAck();
  for (let i = 37; i < 40; i++) await stream.next(); // the small ones left
  await rest;
  assert.deepEqual(fake.acks, [31, 36, 39]);
  const big = "x".repeat(300_000);
  fake.item(40, big);
  fake.item(41, big);
  await stream.next();
  await nextTurn();
  assert.deepEqual(fake.acks, [31, 36, 39]);
  await stream.next();
  await nextTurn();
  assert.deepEqual(fake.acks, [31, 36, 39, 41]);
  // An ack due later is not sent once the stream ended, and its timer is
  // cleared (the op sanitizer sees none left).
  fake.item(42, 1);
  await stream.next();
  fake.end(43);
  assert.equal((await stream.next()).done, true);
  await nextTurn();
  assert.deepEqual(fake.acks, [31, 36, 39, 41]);
});
