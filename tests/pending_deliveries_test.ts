import assert from "node:assert/strict";
import { PendingDeliveries } from "../src/runtime/_pending_deliveries.ts";

Deno.test("PendingDeliveries.settled waits for every delivery, those added meanwhile and failed ones included", async () => {
  const deliveries = new PendingDeliveries();
  const first = Promise.withResolvers<void>();
  const second = Promise.withResolvers<void>();
  deliveries.add(first.promise);
  let settled = false;
  const waiting = deliveries.settled(Infinity).then(() => (settled = true));
  deliveries.add(second.promise);
  first.resolve();
  await first.promise;
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(settled, false);
  assert.equal(deliveries.size, 1);
  second.reject(new Error("client left"));
  await waiting;
  assert.equal(deliveries.size, 0);
});

Deno.test("PendingDeliveries.settled gives up after its timeout, the delivery still pending", async () => {
  const deliveries = new PendingDeliveries();
  const never = Promise.withResolvers<void>();
  deliveries.add(never.promise);
  await deliveries.settled(10);
  assert.equal(deliveries.size, 1);
  never.resolve();
  await deliveries.settled(0);
  assert.equal(deliveries.size, 0);
});
