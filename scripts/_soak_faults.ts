// The soak's faults (scripts/soak.ts), injected in turn, and the model
// management and channel traffic that run beside the clients.
import type { Pool } from "../src/pool.ts";
import { pick, sleep } from "./_soak_traffic.ts";

/** Sends `sig` to `pid`, if it still runs. */
export function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch { /* already gone */ }
}

/** What the faults act on. */
export interface SoakTargets {
  url: string;
  auth: Record<string, string>;
  pool: Pool;
  stopping: () => boolean;
}

/** The faults (name, inject) and the loops of model and channel traffic. */
export function soakFaults({ url, auth, pool, stopping }: SoakTargets): {
  faults: Array<[string, () => Promise<string>]>;
  manageLoop: () => Promise<void>;
  publishLoop: () => Promise<void>;
} {
  /** The next gateway worker pid, ready or not. */
  async function gatewayWorker(): Promise<
    { id: string; pid: number } | undefined
  > {
    const status = await (await fetch(`${url}/v1/status`, { headers: auth }))
      .json();
    const ready =
      (status.workers as Array<{ id: string; pid?: number; state: string }>)
        .filter((w) => w.state === "ready" && typeof w.pid === "number");
    return ready.length
      ? pick(ready) as { id: string; pid: number }
      : undefined;
  }

  async function put(path: string, body: unknown): Promise<number> {
    const res = await fetch(`${url}${path}`, {
      method: "PUT",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    await res.body?.cancel();
    return res.status;
  }

  const faults: Array<[string, () => Promise<string>]> = [
    ["SIGKILL a gateway worker", async () => {
      const w = await gatewayWorker();
      if (w) signal(w.pid, "SIGKILL");
      return w ? `${w.id} (${w.pid})` : "none ready";
    }],
    ["SIGSTOP a gateway worker 1.5 s, then SIGCONT", async () => {
      const w = await gatewayWorker();
      if (!w) return "none ready";
      signal(w.pid, "SIGSTOP");
      await sleep(1500);
      signal(w.pid, "SIGCONT");
      return `${w.id} (${w.pid})`;
    }],
    ["PUT /v1/workers 3, then 2", async () => {
      const a = await put("/v1/workers", { count: 3 });
      await sleep(3000);
      const b = await put("/v1/workers", { count: 2 });
      return `${a}, ${b}`;
    }],
    ["SIGKILL a pool worker", () => {
      const ready = pool.status().workers.filter((w) =>
        w.state === "ready" && w.pid
      );
      const w = ready.length ? pick(ready) : undefined;
      if (w?.pid) signal(w.pid, "SIGKILL");
      return Promise.resolve(w ? `${w.id} (${w.pid})` : "none ready");
    }],
    [
      "SIGSTOP a gateway worker past the heartbeat (wedged), then SIGCONT",
      async () => {
        const w = await gatewayWorker();
        if (!w) return "none ready";
        signal(w.pid, "SIGSTOP");
        await sleep(6000);
        signal(w.pid, "SIGCONT");
        return `${w.id} (${w.pid})`;
      },
    ],
    ["pool.resize(3), then 2", async () => {
      const r: string[] = [];
      for (const n of [3, 2]) {
        r.push(await pool.resize(n).then(() => "ok", (e) => (e as Error).name));
        await sleep(1500);
      }
      return r.join(", ");
    }],
  ];

  /** PUT/DELETE of models under traffic: a model that comes and goes, and updates of echo. */
  async function manageLoop(): Promise<void> {
    let n = 0;
    const statuses = new Map<string, number>();
    const count = (k: string) => statuses.set(k, (statuses.get(k) ?? 0) + 1);
    while (!stopping()) {
      await sleep(1500);
      n++;
      try {
        if (n % 2 === 1) {
          count(
            `PUT churn ${await put("/v1/models/churn", { file: "echo.py" })}`,
          );
        } else {
          const res = await fetch(`${url}/v1/models/churn`, {
            method: "DELETE",
            headers: auth,
          });
          await res.body?.cancel();
          count(`DELETE churn ${res.status}`);
        }
        if (n % 10 === 0) {
          count(
            `PUT echo ${await put("/v1/models/echo", { file: "echo.py" })}`,
          );
        }
      } catch (err) {
        count(`failed: ${err}`);
      }
    }
    console.log(`manage: ${JSON.stringify(Object.fromEntries(statuses))}`);
  }

  /** Messages on the channel the subscribers read (32 KB each, ~25 a second). */
  async function publishLoop(): Promise<void> {
    const body = JSON.stringify({ pad: "m".repeat(32_000) });
    while (!stopping()) {
      const res = await fetch(`${url}/v1/channels/soak`, {
        method: "POST",
        headers: auth,
        body,
      }).catch(() => undefined);
      await res?.body?.cancel();
      await sleep(40);
    }
  }

  return { faults, manageLoop, publishLoop };
}
