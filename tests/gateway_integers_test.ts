/**
 * The gateway keeps integers beyond ±2^53 exact end to end: request body →
 * Python → response body, stream items and channel messages, with real
 * Python workers (its pool runs with `integers: "bigint"`).
 */
import assert from "node:assert/strict";
import { startGateway, type TestGateway, until } from "./_gateway_harness.ts";

const BIG = [
  "9223372036854775807",
  "-9223372036854775808",
  "18446744073709551617",
  "1" + "0".repeat(400),
];

const ECHO = `class Echo:
    inputs = {"id": "integer", "weight": "number?"}
    def execute(self, msg):
        return {"msg": msg, "next": msg["id"] + 1, "big": [2**63 - 1, -(2**63), 2**64 + 1, 10**400],
                "f": 0.12345678901234568}
`;

const STREAM = `class Stream:
    def execute(self, msg):
        yield {"i": 0}
        yield {"id": msg["id"] * 2}
`;

async function putModel(
  gw: TestGateway,
  name: string,
  source: string,
): Promise<void> {
  await Deno.writeTextFile(`${gw.dir}/${name}.py`, source);
  const put = await gw.fetch(`/v1/models/${name}`, {
    method: "PUT",
    body: JSON.stringify({ file: `${name}.py` }),
  });
  await put.body?.cancel();
  assert.ok(put.ok, String(put.status));
}

Deno.test("Gateway keeps integers beyond ±2^53 exact from the request body to Python and back", async () => {
  await using gw = await startGateway({ allowManage: true });
  await putModel(gw, "echo", ECHO);
  await putModel(gw, "stream", STREAM);
  const body = `{"id":${BIG[2]},"weight":${BIG[3]},"list":[${BIG[0]},${
    BIG[1]
  }],"safe":9007199254740991}`;
  const res = await gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    body,
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  const text = await res.text();
  // The literal digits, as Python wrote them (JSON.parse would round them).
  assert.equal(
    text,
    `{"msg":${body},"next":18446744073709551618,"big":[${
      BIG.join(",")
    }],"f":0.12345678901234568}`,
  );
  // A stream item.
  const stream = await gw.fetch("/v1/models/stream/stream", {
    method: "POST",
    body: `{"id":${BIG[2]}}`,
  });
  const sse = await stream.text();
  assert.match(sse, /data: \{"id":36893488147419103234\}/);
  // A channel message, as published and as listed.
  const pub = await gw.fetch("/v1/channels/ids", {
    method: "POST",
    body: `{"id":${BIG[0]}}`,
  });
  assert.equal(pub.status, 200);
  await pub.body?.cancel();
  const list = await (await gw.fetch("/v1/channels?history=1")).text();
  assert.ok(list.includes(`"data":{"id":${BIG[0]}}`), list);
  // A float of 17 digits and an integer field given a float stay what they were.
  const typed = await gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    body: '{"id":1.5}',
  });
  assert.equal(typed.status, 400);
  assert.match((await typed.json()).error.message, /id: expected an integer/);
});

Deno.test("Gateway answers an integer longer than Python converts with a 400, and its worker keeps serving", async () => {
  // The gateway's own limit raised past Python's, so that Python refuses.
  await using gw = await startGateway({
    allowManage: true,
    limits: { maxIntegerDigits: 200_000, shutdownGrace: 2000 },
  });
  await putModel(gw, "echo", ECHO);
  const before = (await (await gw.fetch("/v1/status")).json()).workers[0];
  // Python converts at most 4300 digits from text (sys.set_int_max_str_digits):
  // the call fails alone.
  for (const digits of [4301, 100_000]) {
    const res = await gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      body: `{"id":1,"x":[1${"0".repeat(digits - 1)}]}`,
    });
    const body = await res.json();
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error.type, "InvalidRequestError");
    assert.match(
      body.error.message,
      new RegExp(`an integer of ${digits} digits, more than this Python`),
    );
  }
  const after = (await (await gw.fetch("/v1/status")).json()).workers[0];
  assert.equal(after.pid, before.pid);
  assert.equal(after.restarts, 0);
  const ok = await gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    body: `{"id":${BIG[0]}}`,
  });
  assert.equal(ok.status, 200);
  assert.match(await ok.text(), /"next":9223372036854775808/);
});

Deno.test("Gateway with --debug shows a model's options holding a big integer exactly, in /v1/models, /v1/status and the PUT reply", async () => {
  await using gw = await startGateway({ allowManage: true, debug: true });
  await Deno.writeTextFile(
    `${gw.dir}/opt.py`,
    "class Opt:\n    def __init__(self, options):\n        self.o = options\n    def execute(self, msg):\n        return self.o\n",
  );
  const put = await gw.fetch("/v1/models/opt", {
    method: "PUT",
    body: `{"file":"opt.py","options":{"k":${BIG[0]}}}`,
  });
  const putText = await put.text();
  assert.equal(put.status, 201, putText);
  assert.match(putText, new RegExp(`"options":\\{"k":${BIG[0]}\\}`));
  for (const path of ["/v1/models", "/v1/models/opt", "/v1/status"]) {
    const res = await gw.fetch(path);
    const text = await res.text();
    assert.equal(res.status, 200, `${path}: ${text}`);
    assert.ok(text.includes(`"options":{"k":${BIG[0]}}`), path);
  }
});

// Converts integers of any length, and counts the calls that reached it.
const UNLIMITED = `import sys

sys.set_int_max_str_digits(0)


class Unlimited:
    calls = 0

    def execute(self, msg):
        Unlimited.calls += 1
        return {"calls": Unlimited.calls, "x": msg.get("x")}
`;

Deno.test("Gateway refuses an integer longer than limits.maxIntegerDigits on every body it reads, before Python sees it", async () => {
  await using gw = await startGateway({ allowManage: true, allowEval: true });
  await putModel(gw, "unlimited", UNLIMITED);
  const long = `1${"0".repeat(4300)}`;
  const requests: Array<[string, string, string]> = [
    ["POST", "/v1/models/unlimited/execute", `{"x":${long}}`],
    ["POST", "/v1/models/unlimited/execute", `{"x":[-${long}]}`],
    ["POST", "/v1/models/unlimited/stream", `{"x":${long}}`],
    ["POST", "/v1/channels/ids", `{"x":${long}}`],
    ["POST", "/v1/channels/ids", long],
    ["POST", "/v1/eval", `{"code":"1","x":${long}}`],
    [
      "PUT",
      "/v1/models/unlimited2",
      `{"file":"unlimited.py","options":{"x":${long}}}`,
    ],
    ["PUT", "/v1/workers", `{"count":${long}}`],
  ];
  for (const [method, path, body] of requests) {
    const res = await gw.fetch(path, { method, body });
    const out = await res.json();
    assert.equal(res.status, 400, `${method} ${path}: ${JSON.stringify(out)}`);
    // A model call's or an eval's error has a request id (made up: also
    // its header).
    const { requestId, ...error } = out.error;
    if (path.startsWith("/v1/models/unlimited/") || path === "/v1/eval") {
      assert.equal(res.headers.get("x-request-id"), requestId, path);
    } else assert.equal(requestId, undefined, path);
    assert.deepEqual({ error }, {
      error: {
        type: "InvalidRequestError",
        message:
          "Cannot read request: an integer of 4301 digits is over the limit of 4300 (the gateway's limits.maxIntegerDigits, serve --max-integer-digits)",
        digits: 4301,
        limit: 4300,
      },
    });
  }
  // None reached the worker, which serves the next call; 4300 digits pass.
  const fits = "9".repeat(4300);
  const ok = await gw.fetch("/v1/models/unlimited/execute", {
    method: "POST",
    body: `{"x":${fits}}`,
  });
  assert.equal(ok.status, 200);
  assert.equal(await ok.text(), `{"calls":1,"x":${fits}}`);
  const channels = await (await gw.fetch("/v1/channels")).json();
  assert.deepEqual(channels.channels, []);
});

Deno.test("Gateway with a raised limits.maxIntegerDigits passes a longer integer exactly to a model that raised Python's", async () => {
  await using gw = await startGateway({
    allowManage: true,
    limits: { maxIntegerDigits: 10_000, shutdownGrace: 2000 },
  });
  await putModel(gw, "unlimited", UNLIMITED);
  const x = `-9${"8".repeat(9_999)}`;
  const res = await gw.fetch("/v1/models/unlimited/execute", {
    method: "POST",
    body: `{"x":${x}}`,
  });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), `{"calls":1,"x":${x}}`);
  const over = await gw.fetch("/v1/models/unlimited/execute", {
    method: "POST",
    body: `{"x":${x}0}`,
  });
  assert.equal(over.status, 400);
  assert.match(
    (await over.json()).error.message,
    /an integer of 10001 digits is over the limit of 10000 /,
  );
});

Deno.test("Gateway keeps a bare integer body beyond ±2^53 exact (a channel message)", async () => {
  await using gw = await startGateway();
  const pub = await gw.fetch("/v1/channels/ids", {
    method: "POST",
    body: ` ${BIG[1]}`,
  });
  assert.equal(pub.status, 200);
  await pub.body?.cancel();
  const list = await (await gw.fetch("/v1/channels?history=1")).text();
  assert.ok(list.includes(`"data":${BIG[1]}`), list);
});

Deno.test("Gateway writes a channel message's integers once: SSE and WebSocket subscribers and the listing get them exact, no BigInt written again", async () => {
  await using gw = await startGateway();
  const ws = new WebSocket(`${gw.url.replace("http", "ws")}/v1/channels/ids`);
  const opened = new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  const wsText = new Promise<string>((resolve) =>
    ws.onmessage = (e) => resolve(String(e.data))
  );
  const sse = await gw.fetch("/v1/channels/ids");
  const reader = sse.body!.pipeThrough(new TextDecoderStream()).getReader();
  await opened;
  try {
    await until(async () => {
      const { channels } = await (await gw.fetch("/v1/channels")).json();
      return channels.find((c: { name: string; subscribers: number }) =>
        c.name === "ids" && c.subscribers === 2
      );
    }, "the two subscribers");
    // Count the BigInts written from here on (the gateway runs in this process).
    const toString = BigInt.prototype.toString;
    let written = 0;
    BigInt.prototype.toString = function (this: bigint, radix?: number) {
      written++;
      return toString.call(this, radix);
    };
    let sseText = "";
    let list = "";
    try {
      const pub = await gw.fetch("/v1/channels/ids", {
        method: "POST",
        body: `{"id":${BIG[0]},"more":[${BIG[2]},${BIG[3]}]}`,
      });
      assert.equal(pub.status, 200);
      await pub.body?.cancel();
      while (!sseText.includes("\n\n") || !sseText.includes("event: message")) {
        const { value, done } = await reader.read();
        if (done) break;
        sseText += value;
      }
      list = await (await gw.fetch("/v1/channels?history=5")).text();
      await wsText;
    } finally {
      BigInt.prototype.toString = toString;
    }
    const data = `{"id":${BIG[0]},"more":[${BIG[2]},${BIG[3]}]}`;
    assert.match(
      sseText,
      new RegExp(`data: ${data.replace(/[[\]{}]/g, "\\$&")}`),
    );
    assert.ok((await wsText).includes(`"data":${data}`), await wsText);
    assert.ok(list.includes(`"data":${data}`), list);
    // Each of the three written once, at publish: not again for the two
    // subscribers and the listing.
    assert.equal(written, 3);
  } finally {
    await reader.cancel();
    const closed = new Promise((resolve) => (ws.onclose = resolve));
    ws.close();
    await closed;
  }
});

Deno.test("Gateway refuses a channel message with an integer beyond ±2^53 nested deeper than 1000 levels: subscribers and the listing keep working", async () => {
  // With limits.maxJsonDepth raised past the 1000 levels within which such
  // integers are read exactly (the exact parse's walk overflowed the stack a
  // few thousand levels deep; at 1100 the writer refused the message).
  await using gw = await startGateway({
    limits: { maxJsonDepth: 2000, shutdownGrace: 2000 },
  });
  const sse = await gw.fetch("/v1/channels/deep");
  const reader = sse.body!.pipeThrough(new TextDecoderStream()).getReader();
  try {
    await until(async () => {
      const { channels } = await (await gw.fetch("/v1/channels")).json();
      return channels.find((c: { name: string; subscribers: number }) =>
        c.name === "deep" && c.subscribers === 1
      );
    }, "the subscriber");
    const deep = "[".repeat(1100) + BIG[0] + "]".repeat(1100);
    const pub = await gw.fetch("/v1/channels/deep", {
      method: "POST",
      body: deep,
    });
    const { error } = await pub.json();
    assert.equal(pub.status, 400);
    assert.equal(error.type, "InvalidRequestError");
    assert.equal(
      error.message,
      "Cannot read request: the body is nested 1100 levels deep and may hold an integer beyond ±2^53, which the gateway reads exactly only within 1000 levels (send it as a string, or nest it less)",
    );
    assert.equal(error.depth, 1100);
    assert.equal(error.limit, 1000);
    // Not kept: the listing answers, and the subscriber gets the next one.
    const ok = await gw.fetch("/v1/channels/deep", {
      method: "POST",
      body: `{"id":${BIG[0]}}`,
    });
    const { epoch, ...published } = await ok.json();
    assert.match(epoch, /^[0-9a-f]{8}$/);
    assert.deepEqual(published, { channel: "deep", seq: 1, delivered: 1 });
    const list = await gw.fetch("/v1/channels?history=5");
    assert.equal(list.status, 200);
    assert.ok((await list.text()).includes(`"data":{"id":${BIG[0]}}`));
    let text = "";
    while (!text.includes("event: message")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    assert.ok(text.includes(`id: 1\ndata: {"id":${BIG[0]}}`), text);
    // Nor did it make a channel of its own.
    const none = await gw.fetch("/v1/channels/fresh", {
      method: "POST",
      body: deep,
    });
    await none.body?.cancel();
    assert.equal(none.status, 400);
    const { channels } = await (await gw.fetch("/v1/channels")).json();
    assert.ok(!channels.some((c: { name: string }) => c.name === "fresh"));
  } finally {
    await reader.cancel();
  }
});

const DEEP = `import sys

sys.setrecursionlimit(100_000)


class Deep:
    def execute(self, msg):
        v = 2**64 if msg["big"] else 1
        for _ in range(msg["d"]):
            v = [v]
        return {"v": v}
`;

Deno.test("Gateway answers a model's result holding an integer beyond ±2^53 nested past 1000 levels with 422 SerializationError (not 413), and the worker keeps serving", async () => {
  await using gw = await startGateway({ allowManage: true });
  await putModel(gw, "deep", DEEP);
  for (const d of [1500, 5000]) {
    const res = await gw.fetch("/v1/models/deep/execute", {
      method: "POST",
      body: JSON.stringify({ d, big: true }),
    });
    assert.equal(res.status, 422);
    const { error } = await res.json();
    assert.equal(error.type, "SerializationError");
    assert.match(
      error.message,
      /^Cannot complete executeModel: it is nested \d+ levels deep and holds an integer beyond ±2\^53/,
    );
    assert.equal(typeof error.requestId, "string");
  }
  // Without such an integer: the result, at that depth.
  const ok = await gw.fetch("/v1/models/deep/execute", {
    method: "POST",
    body: JSON.stringify({ d: 1500, big: false }),
  });
  assert.equal(ok.status, 200);
  assert.equal(
    await ok.text(),
    `{"v":${"[".repeat(1500)}1${"]".repeat(1500)}}`,
  );
});
