// A client's GOAWAY after heavy traffic, against the real gateway in a
// process of its own: Deno 2.9's node:http2 freed its nghttp2 session while
// nghttp2 was still reading that GOAWAY (denoland/deno#36788), and the
// gateway's process aborted or segfaulted, 8 runs in 10; the gRPC transport
// now destroys its connections from a timer (src/gateway/grpc_server.ts).
import assert from "node:assert/strict";
import { startGatewayProcess } from "./_gateway_process.ts";

const MODELS = {
  "echo.py": `class Echo:
    """Answers its input x."""

    def execute(self, msg):
        return {"x": msg["x"]}
`,
};

Deno.test("gRPC: the gateway survives clients that close their connection after ~10 MB each way on one ModelStreamInfer (a GOAWAY)", async () => {
  await using gw = await startGatewayProcess({
    grpc: { port: 0 },
    limits: { bodyLimit: 4 << 20 },
  }, MODELS);
  const calls = 80;
  const rounds = 2;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./fixtures/grpc/stream_then_close.ts", import.meta.url)
        .pathname,
      gw.grpcTarget!,
      String(calls),
      String(rounds),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `the client process: ${out.code} ${stderr}`);
  const got = new TextDecoder().decode(out.stdout).trim().split("\n")
    .map((line) => JSON.parse(line));
  assert.deepEqual(
    got,
    Array.from({ length: rounds }, () => ({ status: "0", responses: calls })),
  );
  // Each GOAWAY was read before its connection closed: a crash has
  // happened by now.
  const res = await gw.fetch("/healthz").catch((e: Error) => e);
  assert.ok(
    res instanceof Response && res.ok,
    `the gateway did not answer /healthz (${res})`,
  );
  await res.body?.cancel();
  // Its exit status: a crash in the last moments fails here, naming it.
  await gw.shutdown();
});
