/**
 * docs/protocol.md as a contract: a client written from the document alone
 * (tests/_wire_client.ts: `node:net` and `node:crypto`, nothing of this
 * repository) drives a real Python server through what the document says
 * — handshake, requests and errors, events, host commands, cancel, eval,
 * streams, corrupted frames, pipelining and spill-over — so a statement
 * implementers rely on cannot drift from the server unnoticed.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  frame,
  md5Hex,
  startDocServer,
  type Wire,
  WireClient,
} from "./_wire_client.ts";

const PYTHON_DIR = new URL("../python", import.meta.url).pathname;

const MODELS: Record<string, string> = {
  // Declared inline: §3's pipelined replies come in batch frames when the
  // calls run on the server's loop, which a model still learning (or sent
  // back to threads by a call a busy machine preempted) does not do.
  "doubler.py": "class Doubler:\n" +
    "    inline = True\n" +
    "    def execute(self, msg):\n" +
    "        return {'y': msg['x'] * 2}\n",
  // Prints, then calls the host: waits (holding its call thread) for our reply.
  "caller.py": "from pyproxy import host, HostError\n" +
    "class Caller:\n" +
    "    def execute(self, msg):\n" +
    "        print('calling')\n" +
    "        if msg == 'timeout':\n" +
    "            try:\n" +
    "                host.call('slow', {}, timeout=0.2)\n" +
    "            except HostError as exc:\n" +
    "                return 'gave up'\n" +
    "        return host.call('add', {'a': 1, 'b': 2}, timeout=30)\n",
  "streamer.py": "class Streamer:\n" +
    "    def execute(self, msg):\n" +
    "        for i in range(msg):\n" +
    "            yield i\n",
  // close() that takes a while: removeModel is in flight meanwhile.
  "closer.py": "import threading\n" +
    "class Closer:\n" +
    "    def execute(self, msg):\n" +
    "        return msg\n" +
    "    def close(self):\n" +
    "        threading.Event().wait(0.5)\n",
};

async function withServer(
  flags: string[],
  body: (c: WireClient, secret: string, port: number) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-wire-" });
  try {
    for (const [name, text] of Object.entries(MODELS)) {
      await Deno.writeTextFile(`${dir}/${name}`, text);
    }
    await using server = await startDocServer(PYTHON_DIR, dir, flags);
    await using c = await WireClient.connect(server.port);
    await body(c, server.secret, server.port);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const isError = (type: string) => (m: Wire): boolean =>
  m.ok === false && (m.error as Wire).type === type;

Deno.test("wire: §4 handshake, then §3 and §6 requests and their errors", async () => {
  await withServer([], async (c, secret, port) => {
    const auth = await c.authenticate(secret);
    const result = auth.result as Wire;
    assert.deepEqual(result.serverId, "w1");
    assert.deepEqual(result.maxFrameSize, 64 * 1024 * 1024);

    assert.deepEqual((await c.request("ping")).result, "pong");
    assert((await c.request("addModel", { name: "d", file: "doubler.py" })).ok);
    assert.deepEqual(
      (await c.request("executeModel", { name: "d", msg: { x: 5 } })).result,
      { y: 10 },
    );
    assert(
      isError("ModelNotFoundError")(
        await c.request("executeModel", { name: "nope", msg: 1 }),
      ),
    );
    assert(isError("UnknownCommandError")(await c.request("frobnicate")));
    c.send({});
    assert(isError("InvalidRequestError")(await c.next((m) => m.id === null)));

    // A wrong mac: AuthenticationError, then the close.
    await using bad = await WireClient.connect(port);
    await bad.next((m) => m.event === "hello");
    assert(
      isError("AuthenticationError")(
        await bad.request("auth", { mac: "0".repeat(64) }),
      ),
    );
    await bad.waitClosed();
  });
});

Deno.test("wire: §7 host commands from the server's own counter, and its cancel of one it gave up on", async () => {
  await withServer([], async (c, secret) => {
    await c.authenticate(secret);
    await c.request("addModel", { name: "caller", file: "caller.py" });
    const id = c.nextId++;
    c.send({ id, cmd: "executeModel", name: "caller", msg: "add" });
    const call = await c.next((m) => m.cmd === "add");
    assert.deepEqual(call.id, 1); // the server counts its own requests from 1
    assert.deepEqual(call.args, { a: 1, b: 2 });
    c.send({ id: call.id, ok: true, result: 3 });
    const reply = await c.reply(id);
    assert.deepEqual(reply.result, 3);
    // The print came as a log event, before the reply.
    const log = c.queue.find((m) => m.event === "log");
    assert.deepEqual([log?.message, log?.request, log?.stream], [
      "calling",
      id,
      "stdout",
    ]);

    const late = c.nextId++;
    c.send({ id: late, cmd: "executeModel", name: "caller", msg: "timeout" });
    const slow = await c.next((m) => m.cmd === "slow");
    const cancel = await c.next((m) => m.cmd === "cancel");
    assert.deepEqual(cancel.target, slow.id);
    c.send({ id: cancel.id, ok: true, result: { cancelled: true } });
    assert.deepEqual((await c.reply(late)).result, "gave up");
  });
});

Deno.test("wire: §6 cancel of a queued call answers it before the cancel's own reply; removeModel is a threaded call", async () => {
  await withServer(["--threads", "1"], async (c, secret) => {
    await c.authenticate(secret);
    await c.request("addModel", { name: "caller", file: "caller.py" });
    // The one call thread waits for our answer to its host command...
    const first = c.nextId++;
    c.send({ id: first, cmd: "executeModel", name: "caller", msg: "add" });
    const call = await c.next((m) => m.cmd === "add");
    // ...so this one stays queued.
    const queued = c.nextId++;
    c.send({ id: queued, cmd: "executeModel", name: "caller", msg: "add" });
    const cancel = c.nextId++;
    c.send({ id: cancel, cmd: "cancel", target: queued });
    const replies = [
      await c.next((m) => m.id === queued || m.id === cancel),
      await c.next((m) => m.id === queued || m.id === cancel),
    ];
    assert.deepEqual(replies[0]!.id, queued);
    assert(isError("CancelledError")(replies[0]!));
    assert.deepEqual(replies[1]!.result, { cancelled: true });
    c.send({ id: call.id, ok: true, result: 3 });
    assert.deepEqual((await c.reply(first)).result, 3);

    // removeModel waits for close(): a second request with its id is refused.
    await c.request("addModel", { name: "closer", file: "closer.py" });
    const remove = c.nextId++;
    c.send(
      { id: remove, cmd: "removeModel", name: "closer" },
      { id: remove, cmd: "removeModel", name: "closer" },
    );
    const dup = await c.reply(remove);
    assert(isError("InvalidRequestError")(dup));
    assert(String((dup.error as Wire).message).includes("already in flight"));
    assert.deepEqual((await c.reply(remove)).result, {
      name: "closer",
      removed: true,
    });
  });
});

Deno.test("wire: §9 eval events, chunks and sessions; §6 streams, window and itemAck", async () => {
  await withServer([], async (c, secret) => {
    await c.authenticate(secret);
    const session = (await c.request("openSession")).result as Wire;
    const id = c.nextId++;
    c.send({
      id,
      cmd: "eval",
      code: "x = 40\nprint('hi')\nx + 2",
      session: session.session,
    });
    const reply = await c.reply(id);
    const start = c.queue.findIndex((m) => m.event === "evalStart");
    const outputs = c.queue.filter((m) => m.event === "output" && m.id === id);
    assert(start >= 0 && c.queue[start]!.session === session.session);
    assert.deepEqual(reply.result, { value: 42, chunks: outputs.length });
    assert.deepEqual(outputs.map((o) => o.data).join(""), "hi\n");
    c.queue = [];
    assert.deepEqual(
      ((await c.request("eval", { code: "x", session: session.session }))
        .result as Wire).value,
      40,
    );

    await c.request("addModel", { name: "s", file: "streamer.py" });
    const stream = c.nextId++;
    c.send({ id: stream, cmd: "executeStream", name: "s", msg: 70 });
    await c.next((m) => m.event === "streamStart" && m.id === stream);
    for (let seq = 0; seq < 64; seq++) {
      const item = await c.next((m) => m.event === "item" && m.id === stream);
      assert.deepEqual([item.seq, item.data], [seq, seq]);
    }
    // 64 items sent and not acknowledged: the next waits for the ack.
    assert.deepEqual(
      (await c.request("itemAck", { target: stream, seq: 63 })).result,
      { acked: true },
    );
    for (let seq = 64; seq < 70; seq++) {
      const item = await c.next((m) => m.event === "item" && m.id === stream);
      assert.deepEqual(item.seq, seq);
    }
    assert.deepEqual((await c.reply(stream)).result, { items: 70 });
  });
});

Deno.test("wire: §2 recoverable and fatal frames; §3 pipelining with batch frames", async () => {
  await withServer(["--max-frame-size", "65536"], async (c, secret, port) => {
    await c.authenticate(secret, { batch: true });
    await c.request("addModel", { name: "d", file: "doubler.py" });
    c.write(frame({ id: 90, cmd: "ping" }, { sum: new Uint8Array(16) }));
    assert(isError("ChecksumError")(await c.next((m) => m.id === null)));
    c.write(frame(new TextEncoder().encode("{not json")));
    assert(isError("ProtocolError")(await c.next((m) => m.id === null)));
    assert.deepEqual((await c.request("ping")).result, "pong");

    const ids = Array.from({ length: 64 }, () => c.nextId++);
    c.send(
      ...ids.map((id, x) => ({
        id,
        cmd: "executeModel",
        name: "d",
        msg: { x },
      })),
    );
    for (const [x, id] of ids.entries()) {
      assert.deepEqual((await c.reply(id)).result, { y: 2 * x });
    }
    assert(c.batchFrames > 0, "64 pipelined replies came in batch frames");

    for (
      const tweak of [
        { length: 65537 },
        { marker: "XXXX" },
        { version: 2 },
        { end: new Uint8Array(16) },
      ]
    ) {
      await using other = await WireClient.connect(port);
      await other.authenticate(secret);
      other.write(frame({ id: 5, cmd: "ping" }, tweak));
      await other.waitClosed();
      assert.deepEqual(
        other.queue,
        [],
        `nothing sent before the close (${JSON.stringify(tweak)})`,
      );
    }
  });
});

Deno.test("wire: §8 a spilled request, and a reply spilled back with its checksum", async () => {
  await withServer([], async (c, secret) => {
    await c.authenticate(secret);
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-wire-spill-" });
    try {
      const configured = await c.request("configure", {
        spill: { dir, threshold: 1000 },
      });
      assert.deepEqual((configured.result as Wire).spill, {
        dir: await Deno.realPath(dir),
        threshold: 1000,
      });
      await c.request("addModel", {
        name: "echo",
        source: "class M:\n    def execute(self, msg):\n        return msg\n",
      });
      const message = {
        id: c.nextId++,
        cmd: "executeModel",
        name: "echo",
        msg: "y".repeat(5000),
      };
      const bytes = Buffer.from(JSON.stringify(message));
      await Deno.writeFile(`${dir}/h-1.json`, bytes, { mode: 0o600 });
      c.send({
        id: message.id,
        cmd: "executeModel",
        $spill: {
          path: `${dir}/h-1.json`,
          size: bytes.length,
          md5: md5Hex(bytes),
        },
      });
      const stub = await c.reply(message.id);
      assert.deepEqual(Object.keys(stub).sort(), ["$spill", "id"]);
      const ref = stub.$spill as { path: string; size: number; md5: string };
      const file = await Deno.readFile(ref.path);
      assert.deepEqual([file.length, md5Hex(file)], [ref.size, ref.md5]);
      const reply = JSON.parse(new TextDecoder().decode(file)) as Wire;
      assert.deepEqual([reply.id, reply.ok, reply.result], [
        message.id,
        true,
        message.msg,
      ]);
      // The receiver deleted the file it read.
      await Deno.stat(`${dir}/h-1.json`).then(
        () => assert(false, "the spilled request's file is still there"),
        () => {},
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});
