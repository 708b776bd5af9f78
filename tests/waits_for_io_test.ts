/**
 * `waitsForIO` (the reconnect probe's last check before it kills a silent
 * worker) against real Python processes: an asyncio loop waiting for I/O is
 * seen; a loop blocked on the GIL, a busy thread and a stopped process are
 * not. Linux only: elsewhere the answer is always `false`.
 */
import assert from "node:assert/strict";
import { waitsForIO } from "../src/_waits_for_io.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";

const linux = Deno.build.os === "linux";

// Prints its pid once its loop runs; `mode` says what its main thread does then.
const SCRIPT = `
import asyncio, ctypes, os, sys, threading
mode = sys.argv[1]
async def main():
    print(os.getpid(), flush=True)
    if mode == "gil":
        # Another thread holds the GIL in C (PyDLL keeps it): the loop, woken by its timer, waits for it.
        threading.Thread(target=lambda: ctypes.PyDLL(None).sleep(60), daemon=True).start()
    while True:
        await asyncio.sleep(0.05 if mode == "gil" else 60)
if mode == "busy":
    print(os.getpid(), flush=True)
    while True:
        pass
asyncio.run(main())
`;

async function withPython(
  mode: "idle" | "gil" | "busy",
  body: (pid: number) => Promise<void>,
): Promise<void> {
  const child = new Deno.Command("python3", {
    args: ["-c", SCRIPT, mode],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    reader.releaseLock();
    const pid = Number(new TextDecoder().decode(value).trim());
    assert.equal(pid, child.pid);
    await body(pid);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.stdout.cancel().catch(() => {});
    await child.status;
  }
}

Deno.test({
  name: "waitsForIO sees an idle asyncio loop waiting for I/O",
  ignore: !linux,
  fn: () =>
    withPython("idle", async (pid) => {
      assert.equal(await waitsForIO(defaultRuntime(), pid, 2000), true);
    }),
});

Deno.test({
  name:
    "waitsForIO does not see a loop that waits for the GIL held by a C call, a busy main thread or a stopped process",
  ignore: !linux,
  fn: async () => {
    const rt = defaultRuntime();
    await withPython("gil", async (pid) => {
      // The first sample may come before the thread took the GIL: wait until it blocks the loop.
      const blocked = Date.now() + 5000;
      while (Date.now() < blocked) {
        const name = await Deno.readTextFile(`/proc/${pid}/wchan`);
        if (name.includes("futex")) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(await waitsForIO(rt, pid, 200), false);
    });
    await withPython("busy", async (pid) => {
      assert.equal(await waitsForIO(rt, pid, 200), false);
    });
    await withPython("idle", async (pid) => {
      Deno.kill(pid, "SIGSTOP");
      assert.equal(await waitsForIO(rt, pid, 200), false);
      Deno.kill(pid, "SIGCONT");
      assert.equal(await waitsForIO(rt, pid, 2000), true);
    });
  },
});

Deno.test("waitsForIO answers false, without throwing, when it cannot tell", async () => {
  const rt = defaultRuntime();
  // No such process (pids are below 2^22 on Linux).
  assert.equal(await waitsForIO(rt, 2 ** 30, 50), false);
  const failing: Runtime = {
    ...rt,
    openRead: () => Promise.reject(new Deno.errors.PermissionDenied("no")),
  };
  assert.equal(await waitsForIO(failing, Deno.pid, 50), false);
});

Deno.test({
  name:
    "waitsForIO given a window that is not a number looks once, not for ever",
  ignore: !linux,
  fn: async () => {
    // Sleeps in nanosleep: never seen waiting for I/O.
    const child = new Deno.Command("sleep", {
      args: ["30"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve("still sampling after 2 s"), 2000);
      });
      try {
        assert.equal(
          await Promise.race([
            waitsForIO(defaultRuntime(), child.pid, NaN),
            late,
          ]),
          false,
        );
      } finally {
        clearTimeout(timer);
      }
    } finally {
      child.kill("SIGKILL");
      await child.status;
    }
  },
});

Deno.test({
  name: "waitsForIO stops watching once its stop callback says so",
  ignore: !linux,
  fn: () =>
    withPython("busy", async (pid) => {
      let looks = 0;
      const started = Date.now();
      // A busy process is never seen waiting: without stop, the whole 10 s.
      assert.equal(
        await waitsForIO(defaultRuntime(), pid, 10_000, () => ++looks >= 3),
        false,
      );
      assert.equal(looks, 3);
      assert.ok(Date.now() - started < 5000);
    }),
});

Deno.test("waitsForIO looks several times even when a starved host looks late (a 250 ms window held 2-3 looks)", async () => {
  // Each look takes 100 ms (a host whose event loop runs late), and the
  // loop is seen running at the first four: the window alone would end
  // the watch after three looks, all of them on the loop's brief runs.
  const rt = defaultRuntime();
  const names = ["futex_wait", "futex_wait", "futex_wait", "futex_wait"];
  let looks = 0;
  const slow: Runtime = {
    ...rt,
    openRead: async () => {
      looks++;
      await new Promise((r) => setTimeout(r, 100));
      const text = new TextEncoder().encode(names.shift() ?? "do_epoll_wait");
      let done = false;
      return {
        read: (into: Uint8Array) => {
          if (done) return Promise.resolve(null);
          done = true;
          into.set(text);
          return Promise.resolve(text.length);
        },
        close: () => Promise.resolve(),
      };
    },
  };
  assert.equal(await waitsForIO(slow, 4242, 250), true);
  assert.equal(looks, 5);
  // A process never seen waiting is given up on after those looks.
  names.push(...Array(20).fill("futex_wait"));
  looks = 0;
  assert.equal(await waitsForIO(slow, 4242, 250), false);
  assert.equal(looks, 8);
});
