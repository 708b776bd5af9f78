import assert from "node:assert/strict";
import { startGateway } from "./_gateway_harness.ts";

Deno.test("Gateway: concurrent execute calls of a batching model share execute_batch calls and get their own answers", async () => {
  await using gw = await startGateway({ allowManage: true });
  await Deno.writeTextFile(
    `${gw.dir}/batcher.py`,
    `import time
class Batcher:
    batch_size = 16
    batch_delay_ms = 50
    def execute_batch(self, msgs):
        time.sleep(0.05)  # calls arriving meanwhile gather
        return [ValueError("negative") if m["x"] < 0 else {"y": m["x"] + 1, "batch": len(msgs)} for m in msgs]
`,
  );
  const put = await gw.fetch("/v1/models/batcher", {
    method: "PUT",
    body: JSON.stringify({ file: "batcher.py" }),
  });
  assert.equal(put.status, 201, await put.clone().text());
  await put.body?.cancel();
  const info = await (await gw.fetch("/v1/models/batcher")).json();
  assert.deepEqual(info.batch, { size: 16, delayMs: 50 });
  const answers = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      const x = i === 3 ? -1 : i;
      const res = await gw.fetch("/v1/models/batcher/execute", {
        method: "POST",
        body: JSON.stringify({ x }),
      });
      return { status: res.status, body: await res.json() };
    }),
  );
  answers.forEach(({ status, body }, i) => {
    if (i === 3) {
      assert.equal(status, 422);
      assert.equal(body.error.type, "PythonError");
      assert.equal(body.error.exception, "ValueError");
    } else {
      assert.equal(status, 200);
      assert.equal(body.y, i + 1);
    }
  });
  // The first goes alone; the others arrive while it runs and gather.
  assert.ok(
    answers.some(({ body }) => body.batch > 1),
    JSON.stringify(answers),
  );
});
