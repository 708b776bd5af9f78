import assert from "node:assert/strict";
import { DenoBodyText } from "../src/runtime/deno_body_text.ts";
import { readJsonBody } from "../src/gateway/read_json_body.ts";
import { denoRuntime } from "../src/runtime/deno.ts";

/** What a handler saw of one request. */
interface Seen {
  body?: unknown;
  status?: number;
  /** Whether Deno offered its text path for this request (checked apart from ours). */
  offered: boolean;
}

/**
 * A real `Deno.serve` whose handler reads each body with `readJsonBody`
 * through `bodies`, reporting what it got.
 */
async function withServer(
  bodies: DenoBodyText,
  run: (url: string, seen: Seen[]) => Promise<void>,
): Promise<void> {
  const seen: Seen[] = [];
  const ready = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => ready.resolve(port),
  }, async (request) => {
    const entry: Seen = { offered: offersTextPath(request) };
    seen.push(entry);
    try {
      entry.body = await readJsonBody(request, 8 << 20, undefined, {
        takeBodyText: (r) => bodies.take(r),
      });
      return new Response("ok");
    } catch (err) {
      const res = (err as { getResponse?: () => Response }).getResponse?.();
      entry.status = res?.status ?? 500;
      return new Response("no", { status: entry.status });
    }
  });
  try {
    await run(`http://127.0.0.1:${await ready.promise}/`, seen);
  } finally {
    await server.shutdown();
  }
}

/** Deno's own path, detected independently of `DenoBodyText`. */
function offersTextPath(request: Request): boolean {
  const key = Object.getOwnPropertySymbols(request).find((s) =>
    s.description === "request"
  );
  const inner = key === undefined
    ? undefined
    : (request as unknown as Record<symbol, { consumeTextBody?: unknown }>)[
      key
    ];
  return typeof inner?.consumeTextBody === "function";
}

async function post(url: string, body: BodyInit): Promise<number> {
  const res = await fetch(url, { method: "POST", body });
  await res.body?.cancel();
  return res.status;
}

Deno.test("DenoBodyText takes a small body of Deno.serve as text, integers beyond 2^53 exact", async () => {
  const bodies = new DenoBodyText();
  await withServer(bodies, async (url, seen) => {
    assert.equal(await post(url, '{"id":12345678901234567891,"x":[1.5]}'), 200);
    assert.deepEqual(seen[0]!.body, { id: 12345678901234567891n, x: [1.5] });
    // Where this Deno offers the path, it is the one taken; on a Deno
    // without it, the body was read with text() and nothing was taken.
    assert.equal(bodies.taken, seen[0]!.offered ? 1 : 0);
  });
});

Deno.test("DenoBodyText and text() agree on a 3 MB body, and the path is taken again after it", async () => {
  const bodies = new DenoBodyText();
  const big = { s: "é".repeat(1_500_000), n: 9007199254740993n };
  const text = `{"s":"${big.s}","n":9007199254740993}`;
  await withServer(bodies, async (url, seen) => {
    assert.equal(await post(url, text), 200);
    assert.deepEqual(seen[0]!.body, big);
    assert.equal(await post(url, '{"a":1}'), 200);
    assert.deepEqual(seen[1]!.body, { a: 1 });
    // The large one is usually left to text() (Deno hands over only a body
    // it holds whole); the small one after it takes the path again.
    if (seen[1]!.offered) assert.ok(bodies.taken >= 1);
    else assert.equal(bodies.taken, 0);
  });
});

Deno.test("DenoBodyText keeps a byte order mark (refused as by text()) and replaces bad UTF-8", async () => {
  const bodies = new DenoBodyText();
  await withServer(bodies, async (url, seen) => {
    assert.equal(await post(url, '\uFEFF{"a":1}'), 400);
    // 0xff is not UTF-8: replaced with U+FFFD, as text() does.
    assert.equal(
      await post(url, new Uint8Array([0x22, 0xff, 0x22])),
      200,
    );
    assert.equal(seen[1]!.body, "\uFFFD");
    assert.equal(bodies.taken, seen[0]!.offered ? 2 : 0);
  });
});

Deno.test("DenoBodyText gives undefined, body untouched, for a Request built in process", async () => {
  const bodies = new DenoBodyText();
  const request = new Request("http://localhost/", {
    method: "POST",
    body: '{"a":2}',
  });
  assert.equal(bodies.take(request), undefined);
  assert.equal(request.bodyUsed, false);
  assert.deepEqual(await request.json(), { a: 2 });
  assert.equal(bodies.taken, 0);
});

Deno.test("denoRuntime().takeBodyText takes the body of a request from its own serve()", async () => {
  const rt = denoRuntime();
  const got: { text?: string | undefined; offered?: boolean } = {};
  const server = await rt.serve({ hostname: "127.0.0.1", port: 0 }, (req) => {
    got.offered = offersTextPath(req);
    got.text = rt.takeBodyText?.(req);
    return new Response("ok");
  });
  try {
    assert.equal(
      await post(`http://127.0.0.1:${server.port}/`, '{"b":3}'),
      200,
    );
    assert.equal(got.text, got.offered ? '{"b":3}' : undefined);
  } finally {
    await server.shutdown();
  }
});

/**
 * Sends a POST over a raw connection, its body only once the server asked
 * for it (`Expect: 100-continue`): the handler then runs before the body
 * arrives, so Deno's text path is not there and the body is read the slow
 * way. Resolves the response's status.
 */
async function postAfterContinue(port: number, body: Uint8Array) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const enc = new TextEncoder();
    await conn.write(enc.encode(
      "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" +
        `Content-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
    ));
    const dec = new TextDecoder();
    let got = "";
    const buf = new Uint8Array(4096);
    let sent = false;
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      got += dec.decode(buf.subarray(0, n));
      if (!sent && got.includes("100 Continue\r\n\r\n")) {
        sent = true;
        await conn.write(body);
      }
    }
    const finals = got.split("\r\n\r\n").map((part) =>
      /^HTTP\/1\.1 (\d{3})/.exec(part)?.[1]
    ).filter((s) => s !== undefined && s !== "100");
    return { sent, status: Number(finals[0]) };
  } finally {
    conn.close();
  }
}

Deno.test("readJsonBody on Deno refuses a body after a byte order mark however it arrives (text path or not)", async () => {
  const bodies = new DenoBodyText();
  const bom = new TextEncoder().encode('\uFEFF{"a":1}');
  await withServer(bodies, async (url, seen) => {
    const port = Number(new URL(url).port);
    // Whole with its headers: the text path, which keeps the mark.
    assert.equal(await post(url, bom), 400);
    // Sent once Deno asked for it: read from the body stream, where
    // `text()` dropped the mark and answered 200.
    const late = await postAfterContinue(port, bom);
    assert.ok(late.sent);
    assert.equal(late.status, 400);
    assert.equal(seen.length, 2);
    // The same body without the mark is read either way.
    const plain = new TextEncoder().encode('{"a":1}');
    assert.equal((await postAfterContinue(port, plain)).status, 200);
    assert.deepEqual(seen[2]!.body, { a: 1 });
  });
});
