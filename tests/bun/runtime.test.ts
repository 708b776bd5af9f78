// The runtime adapter contract under Bun: `bun test tests/bun/`.
import { expect, test } from "bun:test";
import process from "node:process";
import { runtimeContract } from "../_runtime_contract.ts";
import { bunRuntime, defaultRuntime } from "../../src/runtime/mod.ts";

const rt = bunRuntime();
const runScript = (file: string, args: string[]) => ({
  cmd: process.execPath,
  args: ["run", file, ...args],
});

for (const check of runtimeContract) {
  test(`bunRuntime ${check.name}`, () => check.fn({ rt, runScript }), 20_000);
}

test("defaultRuntime returns the Bun adapter on Bun", () => {
  expect(defaultRuntime().name).toBe("bun");
});

test("bunRuntime upgradeWebSocket works across adapter instances", async () => {
  const other = bunRuntime();
  const server = await rt.serve({ hostname: "127.0.0.1", port: 0 }, (req) => {
    const { socket, response } = other.upgradeWebSocket!(req);
    socket.onopen = () => socket.send("hi");
    return response;
  });
  try {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/`);
    const got = await new Promise<string>((resolve, reject) => {
      ws.onmessage = (ev) => resolve(String(ev.data));
      ws.onerror = () => reject(new Error("WebSocket failed"));
    });
    expect(got).toBe("hi");
    ws.close();
  } finally {
    await server.shutdown();
  }
});
