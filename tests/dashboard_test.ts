import assert from "node:assert/strict";
import { startGateway } from "./_gateway_harness.ts";
import { waitFor } from "./_harness.ts";

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = await Deno.stat(CHROMIUM).then(
  (s) => s.isFile,
  () => false,
);
if (!hasChromium) {
  console.warn(`dashboard_test: SKIPPED, ${CHROMIUM} is missing`);
}

const TOKEN = "dashboard-token-0123456789";

/**
 * The pages refresh every 200 ms (the least), not every second: each change
 * the tests wait to see showed up to a second later.
 */
const FAST = { dashboardIntervalMs: 200 };

/** Headless Chromium, as the tests drive it. */
async function launch() {
  const { chromium } = await import("playwright-core");
  return await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

// One Chromium for the file's pages (a launch is ~0.6 s of CPU and ~1 s of
// wall time): each step has a browser context of its own (its own
// sessionStorage, cookies and pages, as a fresh browser's), closed at its end.
Deno.test({
  name: "dashboardHtml in Chromium",
  ignore: !hasChromium,
  async fn(t) {
    const browser = await launch();
    try {
      await t.step(
        "dashboardHtml shows live workers, models, request counts and channels in Chromium",
        async () => {
          await using gw = await startGateway(
            { workers: 2, token: TOKEN },
            {},
            FAST,
          );
          const context = await browser.newContext();
          try {
            const page = await context.newPage();
            const errors: string[] = [];
            page.on("pageerror", (err) => errors.push(String(err)));
            page.on("console", (msg) => {
              if (msg.type() === "error") errors.push(msg.text());
            });
            await page.goto(`${gw.url}/?token=${TOKEN}`);
            // The token moves from the URL to sessionStorage.
            await page.waitForFunction(() =>
              !location.search.includes("token")
            );
            await page.waitForSelector(
              '#workers tbody tr[data-state="ready"] >> nth=1',
            );
            assert.equal(await page.locator("#workers tbody tr").count(), 2);
            await page.waitForSelector('#models tr[data-model="scorer"]');
            assert.match(
              await page.locator('#models tr[data-model="scorer"]').innerText(),
              /age, income, debt/,
            );
            // The timeout its calls get: the gateway's default here (30 s).
            const scorerCells = await page.locator(
              '#models tr[data-model="scorer"] td',
            ).allInnerTexts();
            assert.equal(scorerCells[3], "30 s");

            for (let i = 0; i < 3; i++) {
              const res = await gw.fetch("/v1/models/echo/execute", {
                method: "POST",
                body: JSON.stringify({ i }),
              });
              await res.body?.cancel();
            }
            await page.waitForSelector(
              '#models tr[data-model="echo"][data-requests="3"]',
            );
            const pub = await gw.fetch("/v1/channels/alerts", {
              method: "POST",
              body: JSON.stringify({ level: "warn" }),
            });
            await pub.body?.cancel();
            await page.waitForSelector('#channels tr[data-channel="alerts"]');
            assert.match(
              await page.locator('#channels tr[data-channel="alerts"]')
                .innerText(),
              /"level":"warn"/,
            );
            // An int64 id in a channel message is shown with the digits the
            // gateway sent, not as res.json() rounds it (9223372036854776000).
            const ids = await gw.fetch("/v1/channels/ids", {
              method: "POST",
              body: '{"id": 9223372036854775807, "ok": 1}',
            });
            await ids.body?.cancel();
            await page.waitForSelector('#channels tr[data-channel="ids"]');
            assert.match(
              await page.locator('#channels tr[data-channel="ids"]')
                .innerText(),
              /\{"id":9223372036854775807,"ok":1\}/,
            );
            assert.equal(await page.locator("#conn").innerText(), "live");
            assert.equal(await page.locator("#requests").innerText(), "3");

            // A worker killed: its row shows the new pid, the restart and why the
            // last process ended, as /v1/status says.
            const before =
              (await (await gw.fetch("/v1/status")).json()).workers[0];
            Deno.kill(before.pid, "SIGKILL");
            const row =
              `#workers tr[data-worker="${before.id}"][data-state="ready"]`;
            // (It once waited out its 30 s under load: the worker, stalled as the
            // connection ended, took the process for alive and said "connection
            // lost". Should it time out again, the error says what the pool saw.)
            await page.locator(row, { hasText: "killed by SIGKILL" }).waitFor()
              .catch(async (err) => {
                const now =
                  (await (await gw.fetch("/v1/status")).json()).workers;
                throw new Error(`/v1/status workers: ${JSON.stringify(now)}`, {
                  cause: err,
                });
              });
            const after =
              (await (await gw.fetch("/v1/status")).json()).workers[0];
            const cells = await page.locator(`${row} td`).allInnerTexts();
            assert.equal(cells[1], String(after.pid));
            assert.equal(cells[4], "0", "no parked stream");
            assert.equal(cells[5], "1");
            assert.match(
              cells[7]!,
              new RegExp(`^killed by SIGKILL \\(pid ${before.pid}, `),
            );
            assert.deepEqual(errors, []);
          } finally {
            await context.close();
          }
        },
      );
      await t.step(
        "dashboardHtml's last exit names the calls the dead worker was running, as its WorkerCrashedError does",
        async () => {
          const HOLD = `import os
import time


class Hold:
    def execute(self, msg):
        with open(msg["started"] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(msg["started"] + ".tmp", msg["started"])
        time.sleep(30)
`;
          await using gw = await startGateway(
            { token: TOKEN },
            { "hold.py": HOLD },
            FAST,
          );
          const context = await browser.newContext();
          try {
            const page = await context.newPage();
            const errors: string[] = [];
            page.on("pageerror", (err) => errors.push(String(err)));
            await page.goto(`${gw.url}/?token=${TOKEN}`);
            await page.waitForSelector('#workers tbody tr[data-state="ready"]');
            const started = `${gw.dir}/started`;
            const call = gw.fetch("/v1/models/hold/execute", {
              method: "POST",
              body: JSON.stringify({ started }),
            });
            await waitFor(() =>
              Deno.stat(started).then(() => true, () => false)
            );
            const pid = Number(await Deno.readTextFile(started));
            Deno.kill(pid, "SIGKILL");
            const res = await call;
            assert.equal(res.status, 502);
            assert.deepEqual((await res.json()).error.inFlight, { hold: 1 });
            const row = '#workers tr[data-worker="w1"][data-state="ready"]';
            await page.locator(row, { hasText: "while running" }).waitFor();
            const cells = await page.locator(`${row} td`).allInnerTexts();
            assert.match(
              cells[7]!,
              new RegExp(
                `^killed by SIGKILL \\(pid ${pid}, [^)]+\\) while running: hold \\(1 call\\)$`,
              ),
            );
            assert.deepEqual(errors, []);
          } finally {
            await context.close();
          }
        },
      );
      await t.step(
        "dashboardHtml's last exit names a version as the gateway's answers do (hold version 3, not its internal name hold@3)",
        async () => {
          const HOLD = `import os
import time


class Hold:
    def execute(self, msg):
        with open(msg["started"] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(msg["started"] + ".tmp", msg["started"])
        time.sleep(30)
`;
          await using gw = await startGateway(
            {
              token: TOKEN,
              models: [{ name: "hold", file: "hold.py", version: "3" }],
            },
            { "hold.py": HOLD },
            FAST,
          );
          const context = await browser.newContext();
          try {
            const page = await context.newPage();
            const errors: string[] = [];
            page.on("pageerror", (err) => errors.push(String(err)));
            await page.goto(`${gw.url}/?token=${TOKEN}`);
            await page.waitForSelector('#workers tbody tr[data-state="ready"]');
            const started = `${gw.dir}/started`;
            const call = gw.fetch("/v1/models/hold/versions/3/execute", {
              method: "POST",
              body: JSON.stringify({ started }),
            });
            await waitFor(() =>
              Deno.stat(started).then(() => true, () => false)
            );
            const pid = Number(await Deno.readTextFile(started));
            Deno.kill(pid, "SIGKILL");
            const res = await call;
            assert.equal(res.status, 502);
            assert.deepEqual((await res.json()).error.inFlight, {
              "hold@3": 1,
            });
            const row = '#workers tr[data-worker="w1"][data-state="ready"]';
            await page.locator(row, { hasText: "while running" }).waitFor();
            const cells = await page.locator(`${row} td`).allInnerTexts();
            assert.match(
              cells[7]!,
              new RegExp(
                `^killed by SIGKILL \\(pid ${pid}, [^)]+\\) while running: hold version 3 \\(1 call\\)$`,
              ),
            );
            assert.deepEqual(errors, []);
          } finally {
            await context.close();
          }
        },
      );
      await t.step(
        "dashboardHtml shows what plugins report of themselves (autoscale's bounds and state), and no plugins table without any",
        async () => {
          await using gw = await startGateway(
            {
              token: TOKEN,
              plugins: {
                autoscale: {
                  min: 1,
                  max: 3,
                  upAfterMs: 600_000,
                  downAfterMs: 600_000,
                  cooldownMs: 0,
                  sampleInterval: 10,
                },
              },
            },
            {},
            FAST,
          );
          await using plain = await startGateway({ token: TOKEN }, {}, FAST);
          const context = await browser.newContext();
          try {
            const page = await context.newPage();
            const errors: string[] = [];
            page.on("pageerror", (err) => errors.push(String(err)));
            await page.goto(`${gw.url}/?token=${TOKEN}`);
            const max =
              '#plugins tr[data-plugin="autoscale"][data-field="max"]';
            await page.waitForSelector(max);
            assert.deepEqual(await page.locator(`${max} td`).allInnerTexts(), [
              "autoscale",
              "max",
              "3",
            ]);
            assert.deepEqual(
              await page.locator(
                '#plugins tr[data-plugin="autoscale"][data-field="stats.up"] td',
              ).allInnerTexts(),
              ["autoscale", "stats.up", "0"],
            );
            assert.ok(await page.locator("#plugins-section").isVisible());
            // Set at run time: the page follows.
            gw.pool.setScaleBounds({ max: 2 });
            await page.locator(max, { hasText: "2" }).waitFor();
            // A decision's time shows as a clock time, not epoch milliseconds.
            gw.pool.setScaleBounds({ min: 2 });
            const at =
              '#plugins tr[data-plugin="autoscale"][data-field="lastDecision.at"] td';
            await page.waitForSelector(at);
            const shown = (await page.locator(at).allInnerTexts())[2]!;
            assert.match(shown, /\d{1,2}:\d{2}:\d{2}/);
            assert.doesNotMatch(shown, /^\d{12,}$/);

            const other = await context.newPage();
            other.on("pageerror", (err) => errors.push(String(err)));
            await other.goto(`${plain.url}/?token=${TOKEN}`);
            await other.waitForSelector(
              '#workers tbody tr[data-state="ready"]',
            );
            assert.ok(!(await other.locator("#plugins-section").isVisible()));
            assert.deepEqual(errors, []);
          } finally {
            await context.close();
          }
        },
      );
      await t.step(
        "dashboardHtml shows 'none' for a model whose calls have no timeout (timeout: Infinity in a pool createGateway serves), and a model's close timeout",
        async () => {
          const { Pool } = await import("../src/pool.ts");
          const { createGateway } = await import("../src/gateway/app.ts");
          const pool = await Pool.start({ workers: 1, handleSignals: false });
          const ac = new AbortController();
          try {
            const source =
              "class M:\n    def execute(self, msg):\n        return msg\n";
            await pool.addModel("forever", { source, timeout: Infinity });
            await pool.addModel("quick", { source, timeout: 1500, workers: 1 });
            await pool.addModel("closing", {
              source: source + "    close_timeout_ms = 2500\n" +
                "    def close(self):\n        pass\n",
            });
            let port = 0;
            const app = createGateway(pool, { port: () => port, ...FAST });
            const listening = Promise.withResolvers<void>();
            const server = Deno.serve({
              port: 0,
              hostname: "127.0.0.1",
              signal: ac.signal,
              onListen: () => listening.resolve(),
            }, (req) => app.fetch(req));
            await listening.promise;
            port = server.addr.port;
            const context = await browser.newContext();
            try {
              const page = await context.newPage();
              await page.goto(`http://127.0.0.1:${port}/`);
              await page.waitForSelector('#models tr[data-model="forever"]');
              const cells = async (name: string) =>
                (await page.locator(`#models tr[data-model="${name}"] td`)
                  .allInnerTexts())[3];
              assert.equal(await cells("forever"), "none (spec)");
              assert.equal(await cells("quick"), "1500 ms (spec)");
              // The close timeout of a model with a close(), blank for the others.
              const close = async (name: string) =>
                (await page.locator(`#models tr[data-model="${name}"] td`)
                  .allInnerTexts())[4];
              assert.equal(await close("closing"), "2500 ms");
              assert.equal(await close("quick"), "");
              // The workers holding a placed model (workers: 1), "all" otherwise.
              const slots = async (name: string) =>
                (await page.locator(`#models tr[data-model="${name}"] td`)
                  .allInnerTexts())[8];
              assert.equal(await slots("quick"), "w1");
              assert.equal(await slots("forever"), "all");
            } finally {
              await context.close();
              ac.abort();
              await server.finished;
            }
          } finally {
            ac.abort();
            await pool.close();
          }
        },
      );
      await t.step(
        "dashboardHtml shows each version of a model on its own row, the default marked, with its own request count",
        async () => {
          await using gw = await startGateway(
            {
              workers: 1,
              token: TOKEN,
              models: [
                { name: "e", file: "echo.py", version: "1" },
                { name: "e", file: "echo.py", version: "2" },
              ],
            },
            {},
            FAST,
          );
          const context = await browser.newContext();
          try {
            const page = await context.newPage();
            await page.goto(`${gw.url}/?token=${TOKEN}`);
            for (let i = 0; i < 2; i++) {
              const res = await gw.fetch("/v1/models/e/versions/2/execute", {
                method: "POST",
                body: JSON.stringify({ i }),
              });
              assert.equal(res.status, 200);
              await res.body?.cancel();
            }
            await page.waitForSelector(
              '#models tr[data-model="e@2"][data-requests="2"]',
            );
            const cells = async (key: string) =>
              await page.locator(`#models tr[data-model="${key}"] td`)
                .allInnerTexts();
            assert.equal((await cells("e@1"))[0], "e version 1 (default)");
            assert.equal((await cells("e@2"))[0], "e version 2");
            assert.equal((await cells("e@1"))[5], "0");
          } finally {
            await context.close();
          }
        },
      );
    } finally {
      await browser.close();
    }
  },
});

Deno.test("dashboardHtml refreshes every intervalMs: 200 at least, within a timer's range, the default for one that is not a finite number", async () => {
  const { dashboardHtml } = await import("../src/gateway/dashboard.ts");
  const every = (intervalMs?: number) =>
    /setTimeout\(tick, (\d+)\)/.exec(
      dashboardHtml({
        nonce: "n",
        ...(intervalMs === undefined ? {} : { intervalMs }),
      }),
    )?.[1];
  assert.equal(every(), "1000");
  assert.equal(every(500), "500");
  assert.equal(every(10), "200");
  assert.equal(every(2 ** 40), String(2 ** 31 - 1));
  assert.equal(every(NaN), "1000");
  assert.equal(every(Infinity), "1000");
});
