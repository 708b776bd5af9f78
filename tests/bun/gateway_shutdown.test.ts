// `bun run mod.ts serve` on SIGTERM, with real workers: pyproxy.json's env
// reaches each worker with {worker} and {index} filled in, every worker runs
// its model's close() (slower than the stop's 1 s) before serve exits 0, and
// an eval's event stream that a slow client reads after the pool closed still
// ends with its result (Bun's server stop waits for the bytes not yet sent).
import { expect, test } from "bun:test";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitGone } from "./_helpers.ts";
import { startServe } from "./_serve_process.ts";

const TOKEN = "bun-shutdown-token-0123456789";

async function workerPids(url: string): Promise<number[]> {
  const res = await fetch(`${url}/v1/status`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  const { workers } = await res.json() as { workers: Array<{ pid: number }> };
  return workers.map((w) => w.pid);
}

async function exists(path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false);
}

const ENV_CLOSER = `import os, time

HERE = os.path.dirname(os.path.abspath(__file__))


class EnvCloser:
    close_timeout_ms = 3000

    def execute(self, msg):
        time.sleep(0.2)  # both workers get one of two calls at once
        return {"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "tag": os.environ.get("TAG")}

    def close(self):
        time.sleep(1.5)
        with open(os.path.join(HERE, "closes.log"), "a") as f:
            f.write(os.environ.get("TAG", "?") + " closed\\n")
`;

test(
  "bun run mod.ts serve: pyproxy.json's env per worker, and on SIGTERM each worker's close() slower than 1 s, exit 0",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-shutdown-"));
    await writeFile(join(dir, "env_closer.py"), ENV_CLOSER);
    await writeFile(
      join(dir, "pyproxy.json"),
      JSON.stringify({
        port: 0,
        workers: 2,
        modelsDir: ".",
        token: TOKEN,
        env: { CUDA_VISIBLE_DEVICES: "{index}", TAG: "worker {worker}" },
      }),
    );
    const { child, url } = await startServe([
      "--config",
      join(dir, "pyproxy.json"),
    ]);
    try {
      const auth = { authorization: `Bearer ${TOKEN}` };
      const status = await (await fetch(`${url}/v1/status`, { headers: auth }))
        .json() as {
          workers: Array<{ id: string; index: number; pid: number }>;
        };
      expect(status.workers.map((w) => [w.id, w.index])).toEqual([
        ["w1", 0],
        ["w2", 1],
      ]);
      const answers = await Promise.all([0, 1].map(async () => {
        const res = await fetch(`${url}/v1/models/env_closer/execute`, {
          method: "POST",
          headers: auth,
          body: "{}",
        });
        return await res.json() as { gpu: string; tag: string };
      }));
      expect(answers.map((a) => `${a.gpu} ${a.tag}`).sort()).toEqual([
        "0 worker w1",
        "1 worker w2",
      ]);
      child.kill("SIGTERM");
      expect(await child.exited).toBe(0);
      const closes = (await readFile(join(dir, "closes.log"), "utf8"))
        .split("\n").filter(Boolean).sort();
      expect(closes).toEqual(["worker w1 closed", "worker w2 closed"]);
      expect(await waitGone(status.workers.map((w) => w.pid))).toEqual([]);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);

// Prints N lines of 1000 characters, marks that it did, returns "fin" N *
// 1000 times: the output is flow-controlled (the eval waits while it is
// not read), the result is not, so the gateway holds it whatever the
// kernel's socket buffers take (up to 4 MiB each way here).
const PRINTER = `import os
for i in range(N):
    print("%04d" % i + "x" * 995, flush=False)
open(os.path.join(DIR, "printed"), "w").close()
"fin" * N * 1000`;

// A client with a 4 KiB receive buffer: posts the eval, reads its status
// line, then reads the rest only once told to (a line on stdin); prints the
// status, the length of the output events' text and the last other event.
const SLOW_CLIENT = `import json, socket, sys
port, token, body = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
s.sendall(b"POST /v1/eval HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n"
          b"Authorization: Bearer " + token.encode() + b"\\r\\n"
          b"Content-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body) + body)
data = s.recv(64)
print(data.split(b" ")[1].decode(), flush=True)
sys.stdin.readline()
parts = [data]
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    parts.append(b)
data = b"".join(parts)
head, _, rest = data.partition(b"\\r\\n\\r\\n")
if b"transfer-encoding: chunked" in head.lower():
    body, at = [], 0
    while True:
        end = rest.index(b"\\r\\n", at)
        n = int(rest[at:end], 16)
        if n == 0:
            break
        body.append(rest[end + 2:end + 2 + n])
        at = end + 4 + n
    rest = b"".join(body)
output, last = 0, None
for block in rest.decode().split("\\n\\n"):
    fields = dict(line.split(": ", 1) for line in block.split("\\n") if ": " in line)
    if fields.get("event") == "output":
        output += len(json.loads(fields["data"])["data"])
    elif fields.get("event") not in (None, "atom"):
        last = [fields["event"], json.loads(fields["data"])]
print(json.dumps({"output": output, "last": last}), flush=True)
`;

/** Starts SLOW_CLIENT posting `body` to the gateway at `url`. */
function slowClient(url: string, body: unknown) {
  return Bun.spawn([
    "python3",
    "-c",
    SLOW_CLIENT,
    new URL(url).port,
    TOKEN,
    JSON.stringify(body),
  ], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
}

test(
  "bun run mod.ts serve on SIGTERM lets an eval's stream that a slow client reads after the workers stopped end with its result",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-shutdown-"));
    const { child, url, stderr } = await startServe([
      "--port",
      "0",
      "--workers",
      "1",
      "--models",
      dir,
      "--allow-eval",
      "--token",
      TOKEN,
    ]);
    let client: ReturnType<typeof slowClient> | undefined;
    try {
      const pids = await workerPids(url);
      // 3 MB of output, then a 9 MB result: more than the socket buffers
      // take while the client reads nothing (3 MB alone was not always).
      const lines = 3000;
      client = slowClient(url, {
        code: PRINTER,
        locals: { DIR: dir, N: lines },
      });
      const reader = client.stdout.pipeThrough(new TextDecoderStream())
        .getReader();
      let text = "";
      const line = async (): Promise<string> => {
        while (!text.includes("\n")) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`client ended: ${text}`);
          text += value;
        }
        const i = text.indexOf("\n");
        const first = text.slice(0, i);
        text = text.slice(i + 1);
        return first;
      };
      expect(await line()).toBe("200");
      while (!await exists(join(dir, "printed"))) {
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill("SIGTERM");
      // The drain is past the pool: the stream is all that is left.
      expect(await waitGone(pids)).toEqual([]);
      expect(child.exitCode).toBe(null);
      client.stdin.write("go\n");
      await client.stdin.end();
      expect(JSON.parse(await line())).toEqual({
        output: lines * 1000,
        last: ["result", { value: "fin".repeat(lines * 1000) }],
      });
      expect(await child.exited).toBe(0);
      expect(await stderr).toContain("Stopped");
    } finally {
      client?.kill("SIGKILL");
      child.kill("SIGKILL");
      await child.exited;
      await client?.exited;
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);
