import assert from "node:assert/strict";
import { ModelCatalog } from "../src/gateway/model_catalog.ts";
import type {
  GatewayModelSpec,
  GatewayPoolEvent,
} from "../src/gateway/gateway_pool.ts";

/** A pool stand-in that answers model commands and emits their events, as Pool does. */
function eventPool() {
  const listeners = new Set<(ev: GatewayPoolEvent) => void>();
  const emit = (ev: GatewayPoolEvent) => {
    for (const l of listeners) l(ev);
  };
  const answer = (
    action: "add" | "update",
    name: string,
    spec: GatewayModelSpec,
    description: Record<string, unknown>,
  ) => {
    // Emitted before the command's promise resolves, with the same answer.
    emit({ type: "model", action, name, spec, description });
    return Promise.resolve(description);
  };
  return {
    emit,
    answer,
    on(listener: (ev: GatewayPoolEvent) => void) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    addModel: (name: string, spec: GatewayModelSpec) =>
      answer("add", name, spec, { name, class: "A", inputs: { x: "number" } }),
    updateModel: (name: string, spec: GatewayModelSpec) =>
      answer("update", name, spec, { name, class: "B", timeoutMs: 150 }),
    removeModel: (name: string) => {
      emit({ type: "model", action: "remove", name });
      return Promise.resolve({ name, removed: true });
    },
    listeners,
  };
}

Deno.test("ModelCatalog.follow records a command made through it once, and one made on the pool directly too", async () => {
  const pool = eventPool();
  const catalog = new ModelCatalog();
  const stop = catalog.follow(pool);
  // Following twice subscribes once.
  catalog.follow(pool)();
  assert.equal(pool.listeners.size, 1);
  const added = await catalog.add(pool, "m", { file: "m.py" });
  assert.deepEqual([added.class, added.version], ["A", 1]);
  assert.ok(catalog.validator("m") !== undefined);
  // On the pool directly: the catalog follows.
  await pool.updateModel("m", { file: "m.py" });
  const updated = catalog.get("m");
  assert.deepEqual(
    [updated?.class, updated?.version, updated?.timeout, updated?.inputs],
    ["B", 2, 150, undefined],
  );
  assert.equal(catalog.timeout("m"), 150);
  assert.equal(catalog.validator("m"), undefined);
  await pool.removeModel("m");
  assert.equal(catalog.get("m"), undefined);
  assert.equal(catalog.timeout("m"), undefined);
  stop();
  assert.equal(pool.listeners.size, 0);
  await pool.addModel("m", { file: "m.py" });
  assert.equal(catalog.get("m"), undefined, "no longer followed");
});

Deno.test("ModelCatalog.remove keeps a description that the pool's events recorded after the remove (a new add on the pool directly)", async () => {
  const pool = eventPool();
  const catalog = new ModelCatalog();
  catalog.follow(pool);
  await catalog.add(pool, "m", { file: "m.py" });
  // The removal's event, then an add made on the pool directly whose event
  // comes before the removal's answer reaches the catalog.
  const removeModel = (name: string) => {
    pool.emit({ type: "model", action: "remove", name });
    pool.emit({
      type: "model",
      action: "add",
      name,
      spec: { file: "m2.py" },
      description: { name, class: "Again", timeoutMs: 70 },
    });
    return Promise.resolve({ name, removed: true });
  };
  await catalog.remove({ removeModel }, "m");
  assert.deepEqual(
    [catalog.get("m")?.class, catalog.get("m")?.version, catalog.timeout("m")],
    ["Again", 2, 70],
  );
  // A plain remove still forgets.
  await catalog.remove(pool, "m");
  assert.equal(catalog.get("m"), undefined);
  assert.equal(catalog.timeout("m"), undefined);
});

Deno.test("ModelCatalog without events records each answer, even one object answered twice", async () => {
  const answer = { name: "m", class: "A" };
  const pool = {
    addModel: () => Promise.resolve(answer),
    updateModel: () => Promise.resolve(answer),
  };
  const catalog = new ModelCatalog();
  catalog.follow({}); // no `on`: nothing to follow
  assert.equal((await catalog.add(pool, "m", {})).version, 1);
  assert.equal((await catalog.update(pool, "m", {})).version, 2);
  assert.equal((await catalog.update(pool, "m", {})).version, 3);
});

Deno.test("createGateway stops following the pool's model events when its stopSignal aborts (no listener left per gateway made over a long-lived pool)", async () => {
  const { createGateway } = await import("../src/gateway/app.ts");
  const pool = eventPool();
  const stops: AbortController[] = [];
  for (let i = 0; i < 5; i++) {
    const stop = new AbortController();
    stops.push(stop);
    createGateway(pool as unknown as Parameters<typeof createGateway>[0], {
      stopSignal: stop.signal,
    });
  }
  // Each gateway follows the pool twice: its catalog, and its metrics (a
  // model removed on the pool takes its series with it).
  assert.equal(pool.listeners.size, 10, "each gateway follows the pool");
  for (const stop of stops) stop.abort();
  assert.equal(pool.listeners.size, 0, "none left once stopped");
  // Made with a stopSignal already aborted: it does not follow at all.
  createGateway(pool as unknown as Parameters<typeof createGateway>[0], {
    stopSignal: AbortSignal.abort(),
  });
  assert.equal(pool.listeners.size, 0);
});

Deno.test("ModelCatalog.list shows why a model runs threaded (a hung inline call), known to it or not", async () => {
  const pool = eventPool();
  const catalog = new ModelCatalog();
  const stop = catalog.follow(pool);
  await pool.addModel("m", { file: "m.py" });
  const reason =
    "worker w1 died while a call of it held the worker's event loop";
  const status = {
    status: () => ({
      models: [
        { name: "m", spec: {}, threaded: reason },
        { name: "other", spec: {}, threaded: reason },
        { name: "plain", spec: {} },
      ],
    }),
  } as unknown as Parameters<ModelCatalog["list"]>[0];
  const [m, other, plain] = catalog.list(status);
  assert.equal(m?.class, "A");
  assert.equal(m?.threaded, reason);
  assert.equal(other?.threaded, reason);
  assert.equal(plain?.threaded, undefined);
  assert.equal(
    catalog.get("m")?.threaded,
    undefined,
    "the record is not changed",
  );
  stop();
});
