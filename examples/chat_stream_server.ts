/**
 * A chat product's own HTTP server streaming a language model's tokens to
 * browsers as Server-Sent Events, with the library (no gateway): see
 * docs/models.md, "Streaming".
 *
 * - The model holds a "GPU": one generation at a time per worker, also while a
 *   stream is paused for a slow reader (a lock held across the generator).
 * - The first token is awaited before answering, so a request that fails
 *   before it (an unknown model, a timeout, the model's exception) gets a
 *   status of its own, not a 200 with a broken body.
 * - An error after some tokens is the stream's last event (`event: error`),
 *   so the browser keeps what it showed and can tell a failure from a cut.
 * - A browser that leaves cancels the generation (`signal: req.signal`, and
 *   the body's `cancel`): the worker stops within a token.
 *
 *     deno run -A examples/chat_stream_server.ts
 *     bun run examples/chat_stream_server.ts
 *
 * @module
 */
import { Pool } from "../mod.ts";

const LLM = `
import time

from pyproxy import Lock


class Llm:
    """Yields its answer token by token (a pure-Python stand-in for a GPU)."""
    timeout_ms = 180_000  # a long answer may take minutes: more than the default

    def __init__(self, options):
        # One generation at a time on this worker; a request whose reader
        # leaves while it waits for its turn leaves the wait (pyproxy.Lock).
        self.gpu = Lock()
        self.generated = 0

    def execute(self, msg):
        if msg.get("stats"):  # once the GPU is free: after the generations before it
            with self.gpu:
                yield {"generated": self.generated}
            return
        with self.gpu:  # held across every yield, also while the reader is behind
            for i, word in enumerate(msg["prompt"].split() * int(msg.get("repeat", 1))):
                time.sleep(0.005)  # the GPU works
                if i == msg.get("fail_at"):
                    raise RuntimeError("CUDA out of memory")
                self.generated += 1
                yield word + " "
`;

const HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
  "x-accel-buffering": "no", // nginx: pass each event on at once
};
const STATUS: Record<string, number> = {
  MODEL_NOT_FOUND: 404,
  PYTHON_ERROR: 422,
  OVERLOADED: 429,
  NO_WORKER: 503,
  SHUTTING_DOWN: 503,
  TIMEOUT: 504,
};
const encoder = new TextEncoder();
const event = (name: string, data: unknown, id?: number): Uint8Array =>
  encoder.encode(
    `event: ${name}\n${id === undefined ? "" : `id: ${id}\n`}data: ${
      JSON.stringify(data)
    }\n\n`,
  );
const errorOf = (err: unknown) => {
  const { name, message, code } = err as Error & { code?: string };
  return {
    status: STATUS[code ?? ""] ?? 500,
    body: { error: { name, message } },
  };
};

/** `POST /chat` `{"prompt": ...}`: the model's tokens as Server-Sent Events. */
async function chat(pool: Pool, req: Request): Promise<Response> {
  const tokens = pool.executeStream<string>("llm", await req.json(), {
    signal: req.signal, // the browser left: the generation stops
  });
  let first: IteratorResult<string>;
  try {
    first = await tokens.next(); // queueing, the prompt: no byte sent yet
  } catch (err) {
    const { status, body } = errorOf(err);
    return Response.json(body, { status });
  }
  let id = 0;
  let next: IteratorResult<string> | undefined = first;
  const body = new ReadableStream<Uint8Array>({
    // Pulled only as the client takes events: a slow reader pauses the model.
    async pull(controller) {
      try {
        next ??= await tokens.next();
        if (next.done) {
          controller.enqueue(event("end", { tokens: id }));
          controller.close();
        } else {
          controller.enqueue(event("token", next.value, id++));
        }
        next = undefined;
      } catch (err) {
        controller.enqueue(event("error", errorOf(err).body));
        controller.close();
      }
    },
    cancel() {
      tokens.cancel();
    },
  }, { highWaterMark: 0 });
  return new Response(body, { headers: HEADERS });
}

/** What a browser's `fetch` does with the stream: the events, as they come. */
async function read(
  url: URL,
  prompt: Record<string, unknown>,
  stopAfter = Infinity,
): Promise<string> {
  const stop = new AbortController();
  const res = await fetch(url, {
    method: "POST",
    body: JSON.stringify(prompt),
    signal: stop.signal,
  });
  if (!res.ok) return `${res.status} ${JSON.stringify(await res.json())}`;
  let text = "";
  let seen = 0;
  let buffer = "";
  const decoder = new TextDecoder();
  const reader = res.body!.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    for (let at; (at = buffer.indexOf("\n\n")) >= 0;) {
      const lines = buffer.slice(0, at).split("\n");
      buffer = buffer.slice(at + 2);
      const name = lines[0]!.slice("event: ".length);
      const data = JSON.parse(lines.at(-1)!.slice("data: ".length));
      if (name === "token") text += data;
      else text += `[${name} ${JSON.stringify(data)}]`;
      if (++seen === stopAfter) {
        stop.abort(); // the browser tab is closed
        return text + "[left]";
      }
    }
  }
  return text;
}

await using pool = await Pool.start({ workers: 1 });
await pool.addModel("llm", { source: LLM });
const handler = (req: Request) => chat(pool, req);
const server = "Bun" in globalThis
  ? (globalThis as unknown as {
    Bun: {
      serve(o: object): { port: number; stop(force: boolean): unknown };
    };
  }).Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: handler,
    idleTimeout: 0,
  })
  : Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
const port = "port" in server ? server.port : server.addr.port;
const url = new URL(`http://127.0.0.1:${port}/chat`);

try {
  console.log(await read(url, { prompt: "to be or not to be" }));
  console.log(await read(url, { prompt: "one two three four", fail_at: 2 }));
  console.log(await read(url, { prompt: "" })); // no token: ends at once
  console.log(await read(url, {})); // no prompt: the model fails first
  // A browser that leaves after 5 of 500 tokens: the model stops there.
  console.log(await read(url, { prompt: "a b c d e", repeat: 100 }, 5));
  // Without the cancel, the paused stream would keep the GPU (its lock)
  // until its idle timeout: this call would wait minutes and time out.
  const [stats] = await pool.execute<{ generated: number }[]>("llm", {
    stats: true,
  }, { timeout: 10_000 });
  const made = stats!.generated - 8; // 6 + 2 before
  console.log(`the GPU is free again, ${made} of the 500 tokens made`);
} finally {
  await ("shutdown" in server ? server.shutdown() : server.stop(true));
}
