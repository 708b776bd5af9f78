/** `discardUnreadBody`: what it reads of a refused request's body, and what not. */
import assert from "node:assert/strict";
import { discardUnreadBody } from "../src/gateway/_unread_body.ts";

/** A request whose body is `chunks`, each pulled counted in `pulled`. */
function counted(
  chunks: number[],
  pulled: { count: number; cancelled: boolean },
  headers: Record<string, string> = {},
): Request {
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      const size = chunks[i++];
      if (size === undefined) return controller.close();
      pulled.count += size;
      controller.enqueue(new Uint8Array(size));
    },
    cancel() {
      pulled.cancelled = true;
    },
  }, { highWaterMark: 0 });
  return new Request("http://localhost/v1/nope", {
    method: "POST",
    body,
    headers,
  });
}

Deno.test("discardUnreadBody reads a body within its bound to the end", async () => {
  const pulled = { count: 0, cancelled: false };
  const request = counted([1000, 1000, 1000], pulled);
  await discardUnreadBody(request, { maxBytes: 4000 });
  assert.equal(pulled.count, 3000);
  assert.equal(pulled.cancelled, false);
  assert.equal(request.bodyUsed, true);
});

Deno.test("discardUnreadBody stops past maxBytes, and leaves a body declared larger unread", async () => {
  const past = { count: 0, cancelled: false };
  await discardUnreadBody(counted([3000, 3000, 3000], past), {
    maxBytes: 4000,
  });
  assert.equal(past.count, 6000);
  assert.equal(past.cancelled, true);

  const declared = { count: 0, cancelled: false };
  const request = counted([10], declared, { "content-length": "4001" });
  await discardUnreadBody(request, { maxBytes: 4000 });
  assert.equal(declared.count, 0);
  assert.equal(request.bodyUsed, false);
});

Deno.test("discardUnreadBody stops waiting after maxMs for a body that does not come", async () => {
  let cancelled = false;
  const request = new Request("http://localhost/v1/nope", {
    method: "POST",
    body: new ReadableStream({
      cancel() {
        cancelled = true;
      },
    }),
  });
  await discardUnreadBody(request, { maxMs: 10 });
  assert.equal(cancelled, true);
});

Deno.test("discardUnreadBody leaves a body already read alone", async () => {
  const request = new Request("http://localhost/", {
    method: "POST",
    body: "{}",
  });
  await request.text();
  await discardUnreadBody(request);
  const locked = new Request("http://localhost/", {
    method: "POST",
    body: "{}",
  });
  const reader = locked.body!.getReader();
  await discardUnreadBody(locked);
  assert.deepEqual((await reader.read()).value, new TextEncoder().encode("{}"));
});
