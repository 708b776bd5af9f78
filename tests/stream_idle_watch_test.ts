import assert from "node:assert/strict";
import { StreamIdleWatch } from "../src/_stream_idle_watch.ts";
import type { IdleStream } from "../src/model_stream.ts";

/** A stream whose deadline the test sets; `expired` settles at its expire(). */
function fakeStream(idleTimeout: number, deadline: number) {
  const { promise, resolve } = Promise.withResolvers<void>();
  const stream = {
    model: "m",
    worker: "w1",
    idleTimeout,
    deadline,
    expires: 0,
    idleDeadline: () => stream.deadline,
    expire: () => {
      stream.expires++;
      resolve();
    },
    expired: promise,
  };
  return stream satisfies IdleStream;
}

Deno.test("StreamIdleWatch expires a stream past its deadline, not one whose reader waits; one that stops waiting later still expires", async () => {
  const seen: IdleStream[] = [];
  const watch = new StreamIdleWatch((stream) => void seen.push(stream));
  const idle = fakeStream(30, Date.now() + 30);
  const waiting = fakeStream(30, Infinity);
  watch.watch(idle);
  watch.watch(waiting);
  await idle.expired;
  assert.deepEqual(seen, [idle]);
  assert.equal(waiting.expires, 0);
  assert.equal(watch.size, 1);
  // Its reader took an item just now and went away: no call to the watch,
  // yet the timer, still armed for it, finds it.
  waiting.deadline = Date.now() + 30;
  await waiting.expired;
  assert.deepEqual(seen, [idle, waiting]);
  assert.equal(idle.expires, 1);
  assert.equal(watch.size, 0); // and no timer is left (the test's sanitizer)
});

Deno.test("StreamIdleWatch: an unwatched stream never expires; a timeout beyond a timer's range is no timeout; clear() forgets all", async () => {
  const watch = new StreamIdleWatch(() => assert.fail("nothing expires"));
  const gone = fakeStream(20, Date.now() + 20);
  const unwatch = watch.watch(gone);
  unwatch();
  unwatch(); // twice is harmless
  assert.equal(watch.size, 0);
  watch.watch(fakeStream(Infinity, Infinity));
  watch.watch(fakeStream(2 ** 31, Date.now() + 2 ** 31));
  assert.equal(watch.size, 0);
  const cleared = fakeStream(20, Date.now() + 20);
  const unwatchCleared = watch.watch(cleared);
  watch.clear();
  unwatchCleared(); // after clear(): harmless
  assert.equal(watch.size, 0);
  // Well past both deadlines: neither expired (and no timer is left).
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(gone.expires + cleared.expires, 0);
});

Deno.test("StreamIdleWatch: a stream whose expire() throws is reported with the error; the others expire all the same", async () => {
  const reports: Array<[IdleStream, unknown]> = [];
  const watch = new StreamIdleWatch((stream, error) =>
    void reports.push([stream, error])
  );
  const bug = new Error("onIdle bug");
  const throwing = fakeStream(20, Date.now() + 20);
  throwing.expire = () => {
    throw bug;
  };
  const other = fakeStream(20, Date.now() + 20);
  watch.watch(throwing);
  watch.watch(other);
  await other.expired;
  assert.deepEqual(reports, [[throwing, bug], [other, undefined]]);
  assert.equal(watch.size, 0);
});
