import assert from "node:assert/strict";
import { startGateway } from "./_gateway_harness.ts";

const GATED = `import os, time
class Gated:
    def execute(self, msg):
        while not os.path.exists(msg["gate"]):
            time.sleep(0.01)
        yield "hi"
`;

Deno.test("Gateway model stream ?firstItemTimeout=: a 504 that names the bound (its error event with ?early=1); a bad value is a 400", async () => {
  await using gw = await startGateway({
    allowManage: true,
    limits: { shutdownGrace: 2000, streamKeepAlive: 100 },
  });
  await Deno.writeTextFile(`${gw.dir}/gated.py`, GATED);
  const put = await gw.fetch("/v1/models/gated", {
    method: "PUT",
    body: JSON.stringify({ file: "gated.py" }),
  });
  await put.body?.cancel();
  assert.equal(put.status, 201);
  const post = (query: string) =>
    gw.fetch(`/v1/models/gated/stream${query}`, {
      method: "POST",
      body: JSON.stringify({ gate: `${gw.dir}/never` }),
      headers: { "x-request-id": "first-1" },
    });

  const late = await post("?firstItemTimeout=200");
  assert.equal(late.status, 504);
  const error = (await late.json()).error;
  assert.deepEqual(
    { type: error.type, bound: error.bound, waited: error.waited },
    { type: "TimeoutError", bound: "firstItemTimeout", waited: "worker" },
  );
  assert.match(
    error.message,
    /^Cannot stream model 'gated': no first item within 200 ms, the request's \?firstItemTimeout=; the call was cancelled$/,
  );
  // With early headers: the same body, as the stream's error event.
  const early = await post("?firstItemTimeout=200&early=1");
  assert.equal(early.status, 200);
  const text = await early.text();
  const data = text.split("\n").find((l) => l.startsWith("data: "))!;
  assert.deepEqual(JSON.parse(data.slice(6)).error, error);

  for (const bad of ["0", "-5", "1.5", "soon"]) {
    const res = await post(`?firstItemTimeout=${bad}`);
    assert.equal(res.status, 400, bad);
    assert.match((await res.json()).error.message, /firstItemTimeout must be/);
  }
  const metrics = await (await gw.fetch("/metrics")).text();
  assert.match(
    metrics,
    /pyproxy_requests_total\{model="gated",status="504"\} 2/,
  );
});

Deno.test("Gateway model stream: limits.streamFirstItemTimeout bounds every stream's first item; ?firstItemTimeout= may only lower it", async () => {
  await using gw = await startGateway({
    allowManage: true,
    limits: { shutdownGrace: 2000, streamFirstItemTimeout: 200 },
  });
  await Deno.writeTextFile(`${gw.dir}/gated.py`, GATED);
  const put = await gw.fetch("/v1/models/gated", {
    method: "PUT",
    body: JSON.stringify({ file: "gated.py" }),
  });
  await put.body?.cancel();
  const post = (query: string, gate = `${gw.dir}/never`) =>
    gw.fetch(`/v1/models/gated/stream${query}`, {
      method: "POST",
      body: JSON.stringify({ gate }),
    });
  for (const query of ["", "?firstItemTimeout=60000"]) {
    const late = await post(query);
    assert.equal(late.status, 504, query);
    const error = (await late.json()).error;
    assert.equal(error.bound, "firstItemTimeout");
    assert.match(
      error.message,
      /no first item within 200 ms, the gateway's limits\.streamFirstItemTimeout \(serve --stream-first-item-timeout\)/,
    );
  }
  const lower = await post("?firstItemTimeout=100");
  assert.match(
    (await lower.json()).error.message,
    /within 100 ms, the request's/,
  );
  // A first item in time: the stream as ever.
  await Deno.writeTextFile(`${gw.dir}/open`, "");
  const ok = await post("", `${gw.dir}/open`);
  assert.equal(ok.status, 200);
  assert.match(await ok.text(), /event: end\ndata: \{"items":1\}/);
});
