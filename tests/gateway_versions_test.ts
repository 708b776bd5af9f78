/**
 * Versions through a real gateway and real Python workers
 * (docs/gateway.md, "Versions"): `PUT /v1/models/{name}/versions/{v}`
 * loads versions side by side, calls pick one or get the default, `/v2`
 * serves each, the metrics count each under a `version` label.
 */
import assert from "node:assert/strict";
import { startGateway, until } from "./_gateway_harness.ts";

const TAGGED = `
import os

class Tagged:
    def __init__(self, options):
        self.v = options["v"]

    def execute(self, msg):
        return {"v": self.v, "pid": os.getpid()}
`;

const V2_MODEL = `
class Doubler:
    inputs = {"x": "number"}
    outputs = {"y": "number"}

    def __init__(self, options):
        self.k = options["k"]

    def execute(self, msg):
        return {"y": msg["x"] * self.k}
`;

const put = (body: unknown): RequestInit => ({
  method: "PUT",
  body: JSON.stringify(body),
});
const post = (body: unknown = {}): RequestInit => ({
  method: "POST",
  body: JSON.stringify(body),
});

Deno.test("Gateway versions: PUT loads two versions side by side, execute picks one or the default, PUT default moves it, DELETE removes one, unknown versions are a 404 naming the others", async () => {
  await using gw = await startGateway(
    { workers: 2, allowManage: true },
    { "tagged.py": TAGGED },
  );
  let res = await gw.fetch(
    "/v1/models/ranker/versions/1",
    put({ file: "tagged.py", options: { v: "one" } }),
  );
  assert.equal(res.status, 201, await res.clone().text());
  const added = await res.json();
  assert.equal(added.action, "added");
  assert.equal(added.model.label, "1");
  assert.equal(added.model.default, true);
  res = await gw.fetch(
    "/v1/models/ranker/versions/2",
    put({ file: "tagged.py", options: { v: "two" }, workers: 1 }),
  );
  const second = await res.json();
  assert.equal(res.status, 201, JSON.stringify(second));
  assert.equal(second.model.default, false);
  const v = async (path: string) => {
    const r = await gw.fetch(path, post());
    assert.equal(r.status, 200, path);
    return (await r.json()).v;
  };
  assert.equal(await v("/v1/models/ranker/execute"), "one");
  // ?publish= tells the model's name and the version that ran.
  res = await gw.fetch("/v1/models/ranker/execute?publish=out", post());
  assert.equal(res.status, 200);
  await res.body?.cancel();
  const { channels } = await (await gw.fetch("/v1/channels")).json();
  const out = channels.find((c: { name: string }) => c.name === "out");
  assert.deepEqual(
    { ...out.history.at(-1).data, result: undefined },
    { model: "ranker", version: "1", result: undefined },
  );
  assert.equal(await v("/v1/models/ranker/versions/1/execute"), "one");
  assert.equal(await v("/v1/models/ranker/versions/2/execute"), "two");
  // The stream routes too.
  res = await gw.fetch("/v1/models/ranker/versions/2/stream", post());
  assert.equal(res.status, 200);
  assert.match(await res.text(), /"v":"two"/);
  // GET: the default's description, with every label; one version's own.
  let got = await (await gw.fetch("/v1/models/ranker")).json();
  assert.deepEqual([got.name, got.label, got.default, got.versions], [
    "ranker",
    "1",
    true,
    ["1", "2"],
  ]);
  got = await (await gw.fetch("/v1/models/ranker/versions/2")).json();
  assert.deepEqual([got.label, got.default, got.workers, got.slots.length], [
    "2",
    false,
    1,
    1,
  ]);
  const { models } = await (await gw.fetch("/v1/models")).json();
  assert.deepEqual(
    models.filter((m: { label?: string }) => m.label !== undefined)
      .map((m: { name: string; label: string }) => `${m.name}@${m.label}`),
    ["ranker@1", "ranker@2"],
  );
  // Unknown versions: 404 naming the ones there are.
  for (
    const path of [
      "/v1/models/ranker/versions/3/execute",
      "/v1/models/ranker/versions/3/stream",
      "/v1/models/ranker/versions/3",
    ]
  ) {
    res = await gw.fetch(path, path.endsWith("3") ? {} : post());
    assert.equal(res.status, 404, path);
    const { error } = await res.json();
    assert.equal(error.type, "ModelNotFoundError");
    assert.match(error.message, /its versions are 1, 2 \(default 1\)/, path);
  }
  // The default moves.
  res = await gw.fetch("/v1/models/ranker/default", put({ version: "2" }));
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    name: "ranker",
    versions: ["1", "2"],
    default: "2",
  });
  assert.equal(await v("/v1/models/ranker/execute"), "two");
  res = await gw.fetch("/v1/models/ranker/default", put({ version: "9" }));
  assert.equal(res.status, 404);
  await res.body?.cancel();
  res = await gw.fetch("/v1/models/ranker/default", put({ version: "a/b" }));
  assert.equal(res.status, 400);
  await res.body?.cancel();
  // Updating version 1 leaves version 2 alone.
  res = await gw.fetch(
    "/v1/models/ranker/versions/1",
    put({ file: "tagged.py", options: { v: "one-b" } }),
  );
  assert.equal(res.status, 200);
  await res.body?.cancel();
  assert.equal(await v("/v1/models/ranker/versions/1/execute"), "one-b");
  assert.equal(await v("/v1/models/ranker/execute"), "two");
  // A bad label is a 400; a PUT without a version of a versioned name too.
  res = await gw.fetch(
    "/v1/models/ranker/versions/..",
    put({ file: "tagged.py", options: { v: "x" } }),
  );
  assert.ok(res.status === 400 || res.status === 404, `${res.status}`);
  await res.body?.cancel();
  res = await gw.fetch(
    `/v1/models/ranker/versions/${"x".repeat(200)}`,
    put({ file: "tagged.py", options: { v: "x" } }),
  );
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /1-64 characters/);
  res = await gw.fetch(
    "/v1/models/ranker",
    put({ file: "tagged.py", options: { v: "x" } }),
  );
  assert.equal(res.status, 400);
  // In the gateway's terms: the route to call, not the library's spec field.
  const hasVersions = (await res.json()).error.message;
  assert.match(hasVersions, /it has versions \(1, 2; default 2\)/);
  assert.match(
    hasVersions,
    /PUT \/v1\/models\/ranker\/versions\/\{version\} loads or replaces one, DELETE \/v1\/models\/ranker removes every version/,
  );
  assert.doesNotMatch(hasVersions, /spec\.version|updateModel/);
  // The metrics: a version label for the versions' calls.
  const metrics = await (await gw.fetch("/metrics")).text();
  assert.match(
    metrics,
    /pyproxy_requests_total\{model="ranker",version="2",status="200"\} \d+/,
  );
  assert.match(
    metrics,
    /pyproxy_requests_total\{model="ranker",version="1",status="200"\} \d+/,
  );
  // DELETE: the default only once it is the last one.
  res = await gw.fetch("/v1/models/ranker/versions/2", { method: "DELETE" });
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /it is the default version/);
  res = await gw.fetch("/v1/models/ranker/versions/1", { method: "DELETE" });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    name: "ranker",
    version: "1",
    removed: true,
  });
  res = await gw.fetch("/v1/models/ranker/versions/1/execute", post());
  assert.equal(res.status, 404);
  await res.body?.cancel();
  got = await (await gw.fetch("/v1/models/ranker")).json();
  assert.deepEqual(got.versions, ["2"]);
  // DELETE by name: every version.
  res = await gw.fetch("/v1/models/ranker", { method: "DELETE" });
  assert.equal(res.status, 200);
  await res.body?.cancel();
  res = await gw.fetch("/v1/models/ranker");
  assert.equal(res.status, 404);
  await res.body?.cancel();
});

Deno.test("Gateway versions: /v2 serves each version, its metadata and the repository index list them all; an unversioned model keeps its counter", async () => {
  await using gw = await startGateway(
    { workers: 1, allowManage: true },
    { "dbl.py": V2_MODEL },
  );
  for (const [label, k] of [["1", 2], ["2", 10]] as const) {
    const res = await gw.fetch(
      `/v1/models/dbl/versions/${label}`,
      put({ file: "dbl.py", options: { k } }),
    );
    assert.equal(res.status, 201);
    await res.body?.cancel();
  }
  const meta = await (await gw.fetch("/v2/models/dbl")).json();
  assert.deepEqual([meta.name, meta.versions], ["dbl", ["1", "2"]]);
  const infer = async (path: string) => {
    const res = await gw.fetch(
      path,
      post({
        inputs: [{ name: "x", datatype: "FP64", shape: [], data: [3] }],
      }),
    );
    assert.equal(res.status, 200, path);
    const out = await res.json();
    return [out.model_name, out.model_version, out.outputs[0].data[0]];
  };
  assert.deepEqual(await infer("/v2/models/dbl/infer"), ["dbl", "1", 6]);
  assert.deepEqual(await infer("/v2/models/dbl/versions/2/infer"), [
    "dbl",
    "2",
    30,
  ]);
  let res = await gw.fetch("/v2/models/dbl/versions/2/ready");
  assert.equal(res.status, 200);
  await res.body?.cancel();
  res = await gw.fetch("/v2/models/dbl/versions/7/infer", post({}));
  assert.equal(res.status, 404);
  assert.match(JSON.stringify(await res.json()), /its versions are 1, 2/);
  // Unversioned: the counter, as before.
  res = await gw.fetch(
    "/v1/models/plain",
    put({ file: "dbl.py", options: { k: 1 } }),
  );
  assert.equal(res.status, 201);
  await res.body?.cancel();
  assert.deepEqual(
    (await (await gw.fetch("/v2/models/plain")).json()).versions,
    ["1"],
  );
  assert.deepEqual(await infer("/v2/models/plain/versions/1/infer"), [
    "plain",
    "1",
    3,
  ]);
  // The repository index has an entry per version, by label (Triton's), and
  // the models directory's dbl.py is not listed again as unloaded.
  const index = async () => {
    const res = await gw.fetch("/v2/repository/index", post({}));
    assert.equal(res.status, 200);
    return (await res.json()).filter((m: { name: string }) =>
      m.name === "dbl" || m.name === "plain"
    );
  };
  assert.deepEqual(await index(), [
    { name: "dbl", version: "1", state: "READY", reason: "" },
    { name: "dbl", version: "2", state: "READY", reason: "" },
    { name: "plain", version: "1", state: "READY", reason: "" },
  ]);
  // A load of the name (the directory's file, no version) is refused while
  // it has versions.
  res = await gw.fetch("/v2/repository/models/dbl/load", post({}));
  assert.equal(res.status, 400);
  const refused = (await res.json()).error;
  assert.match(refused, /PUT \/v1\/models\/dbl\/versions\/\{version\}/);
  assert.doesNotMatch(refused, /spec\.version/);
  // Unloading the name removes every version.
  res = await gw.fetch("/v2/repository/models/dbl/unload", post({}));
  assert.equal(res.status, 200);
  await res.body?.cancel();
  // Unloaded, with the refused load's error as the reason.
  const after = await index();
  assert.equal(after.length, 2);
  assert.deepEqual([after[0].name, after[0].state], ["dbl", "UNAVAILABLE"]);
  assert.match(after[0].reason, /without a version: it has versions/);
  assert.deepEqual(after[1], {
    name: "plain",
    version: "1",
    state: "READY",
    reason: "",
  });
});

Deno.test("Gateway versions: management is off by default (PUT, DELETE and the default are 403); execute of a version works without it", async () => {
  await using gw = await startGateway({ workers: 1 }, { "tagged.py": TAGGED });
  for (
    const [path, init] of [
      ["/v1/models/s/versions/1", put({ file: "tagged.py" })],
      ["/v1/models/s/versions/1", { method: "DELETE" }],
      ["/v1/models/s/default", put({ version: "1" })],
    ] as const
  ) {
    const res = await gw.fetch(path, init);
    assert.equal(res.status, 403, `${init.method} ${path}`);
    await res.body?.cancel();
  }
  const res = await gw.fetch("/v1/models/s/versions/1/execute", post());
  assert.equal(res.status, 404);
  await res.body?.cancel();
});

Deno.test("Gateway versions: pyproxy.json models entries with a version load side by side, the first listed the default; /openapi.json lists the version routes and the name's own paths once", async () => {
  await using gw = await startGateway(
    {
      workers: 1,
      allowManage: true,
      models: [
        { name: "t", file: "tagged.py", options: { v: "b" }, version: "b" },
        { name: "t", file: "tagged.py", options: { v: "a" }, version: "a" },
        { name: "echo", file: "echo.py" },
      ],
    },
    { "tagged.py": TAGGED },
  );
  const run = async (path: string) =>
    (await (await gw.fetch(path, post())).json()).v;
  assert.equal(await run("/v1/models/t/execute"), "b");
  assert.equal(await run("/v1/models/t/versions/a/execute"), "a");
  const got = await (await gw.fetch("/v1/models/t")).json();
  assert.deepEqual([got.label, got.versions], ["b", ["b", "a"]]);
  const doc = await (await gw.fetch("/openapi.json")).json();
  const paths = Object.keys(doc.paths);
  for (
    const p of [
      "/v1/models/t/execute",
      "/v1/models/{name}/versions/{version}/execute",
      "/v1/models/{name}/versions/{version}/stream",
      "/v1/models/{name}/versions/{version}",
      "/v1/models/{name}/default",
    ]
  ) assert.ok(paths.includes(p), p);
  assert.deepEqual(
    Object.keys(doc.paths["/v1/models/{name}/versions/{version}"]).sort(),
    ["delete", "get", "parameters", "put"],
  );
});

/**
 * A request whose body comes in two parts, the second on `finish()`, over a
 * raw connection (`Connection: close`): the answer's status and body text.
 */
async function slowUpload(
  gw: Awaited<ReturnType<typeof startGateway>>,
  path: string,
  body: string,
): Promise<{ finish(): Promise<{ status: number; text: string }> }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: gw.port });
  const enc = new TextEncoder();
  const cut = body.length - 1;
  try {
    await conn.write(enc.encode(
      [
        `POST ${path} HTTP/1.1`,
        `Host: 127.0.0.1:${gw.port}`,
        `Authorization: Bearer ${gw.token}`,
        "Content-Type: application/json",
        `Content-Length: ${enc.encode(body).byteLength}`,
        "Connection: close",
        "",
        body.slice(0, cut),
      ].join("\r\n"),
    ));
  } catch (err) {
    conn.close();
    throw err;
  }
  return {
    async finish() {
      try {
        await conn.write(enc.encode(body.slice(cut)));
        const text = await new Response(conn.readable).text();
        return { status: Number(text.split(" ")[1]), text };
      } finally {
        try {
          conn.close();
        } catch {
          // closed by the server, and the readable read to its end
        }
      }
    },
  };
}

Deno.test("Gateway versions: a call without a version whose body comes in while its default moves and the old one is removed runs on the new default, its inputs checked against it (was a 404 naming name@label)", async () => {
  await using gw = await startGateway(
    { workers: 1, allowManage: true },
    { "tagged.py": TAGGED, "dbl.py": V2_MODEL },
  );
  let res = await gw.fetch(
    "/v1/models/m/versions/1",
    put({ file: "tagged.py", options: { v: "one" } }),
  );
  assert.equal(res.status, 201);
  await res.body?.cancel();
  // Version 2 declares its inputs: x, a number.
  res = await gw.fetch(
    "/v1/models/m/versions/2",
    put({ file: "dbl.py", options: { k: 10 } }),
  );
  assert.equal(res.status, 201);
  await res.body?.cancel();
  const uploads = [
    await slowUpload(gw, "/v1/models/m/execute", `{"x": 4}`),
    await slowUpload(gw, "/v1/models/m/execute", `{"y": 4}`),
    await slowUpload(gw, "/v1/models/m/stream", `{"x": 5}`),
    await slowUpload(
      gw,
      "/v2/models/m/infer",
      JSON.stringify({
        inputs: [{ name: "x", datatype: "FP64", shape: [], data: [3] }],
      }),
    ),
  ];
  // Each was given the default of its arrival, version 1.
  await until(async () => {
    const text = await (await gw.fetch("/metrics")).text();
    return text.includes(
      'pyproxy_in_flight_requests{model="m",version="1"} 4',
    );
  }, "four calls of version 1 in flight");
  res = await gw.fetch("/v1/models/m/default", put({ version: "2" }));
  assert.equal(res.status, 200);
  await res.body?.cancel();
  res = await gw.fetch("/v1/models/m/versions/1", { method: "DELETE" });
  assert.equal(res.status, 200);
  await res.body?.cancel();
  const [ran, refused, streamed, inferred] = await Promise.all(
    uploads.map((u) => u.finish()),
  );
  assert.equal(ran!.status, 200, ran!.text);
  assert.match(ran!.text, /\{"y":40\}/);
  // Checked against version 2's declared inputs.
  assert.equal(refused!.status, 400, refused!.text);
  assert.match(refused!.text, /ValidationError/);
  assert.equal(streamed!.status, 200, streamed!.text);
  assert.match(streamed!.text, /"y":50/);
  assert.equal(inferred!.status, 200, inferred!.text);
  assert.match(inferred!.text, /"model_version":"2"/);
  assert.match(inferred!.text, /"data":\[30\]/);
  for (const r of [ran, refused, streamed, inferred]) {
    assert.doesNotMatch(r!.text, /m@1/);
  }
});

Deno.test("Gateway versions: /openapi.json documents the name's paths with the default's inputs after PUT .../default (was the old default's, cached)", async () => {
  const declares = (field: string, type: string) => `
class M:
    inputs = {"${field}": "${type}"}

    def __init__(self, options):
        pass

    def execute(self, msg):
        return {}
`;
  await using gw = await startGateway(
    { workers: 1, allowManage: true },
    { "a.py": declares("a", "number"), "b.py": declares("b", "string") },
  );
  for (const [label, file] of [["1", "a.py"], ["2", "b.py"]]) {
    const res = await gw.fetch(`/v1/models/m/versions/${label}`, put({ file }));
    assert.equal(res.status, 201);
    await res.body?.cancel();
  }
  const documented = async () => {
    const doc = await (await gw.fetch("/openapi.json")).json();
    const body = doc.paths["/v1/models/m/execute"].post.requestBody;
    return Object.keys(body.content["application/json"].schema.properties);
  };
  assert.deepEqual(await documented(), ["a"]);
  const res = await gw.fetch("/v1/models/m/default", put({ version: "2" }));
  assert.equal(res.status, 200);
  await res.body?.cancel();
  assert.deepEqual(await documented(), ["b"]);
});

Deno.test("Gateway versions: a version's internal name (m@2) is no model name of the gateway: execute and stream are a 404 naming its route (was an alias of /versions/2); a library model named a@b is called as it is", async () => {
  await using gw = await startGateway(
    { workers: 1, allowManage: true },
    { "tagged.py": TAGGED },
  );
  for (const label of ["1", "2"]) {
    const res = await gw.fetch(
      `/v1/models/m/versions/${label}`,
      put({ file: "tagged.py", options: { v: label } }),
    );
    assert.equal(res.status, 201);
    await res.body?.cancel();
  }
  for (const path of ["/v1/models/m@2/execute", "/v1/models/m%402/stream"]) {
    const res = await gw.fetch(path, post());
    assert.equal(res.status, 404, path);
    const { error } = await res.json();
    assert.equal(error.type, "ModelNotFoundError");
    assert.equal(
      error.message,
      'Cannot find model "m@2": it is version "2" of model "m" (/v1/models/m/versions/2)',
    );
  }
  // Not "Cannot find model model".
  const res = await gw.fetch("/v1/models/m/versions/7");
  assert.match(
    (await res.json()).error.message,
    /^Cannot find model "m" version "7": its versions are 1, 2/,
  );
  // The library may name a model without versions with an '@'.
  await gw.pool.addModel("a@b", { file: "tagged.py", options: { v: "ab" } });
  const ab = await gw.fetch("/v1/models/a@b/execute", post());
  assert.equal(ab.status, 200);
  assert.equal((await ab.json()).v, "ab");
  const text = await (await gw.fetch("/metrics")).text();
  assert.match(
    text,
    /pyproxy_requests_total\{model="_unknown",status="404"\} 2/,
  );
});
