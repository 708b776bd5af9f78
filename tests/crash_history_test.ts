import assert from "node:assert/strict";
import { CrashHistory } from "../plugins/_crash_history.ts";

Deno.test("CrashHistory counts a slot's crashes within the window, and prune forgets the slots gone or quiet", () => {
  const history = new CrashHistory(1000);
  assert.equal(history.record("w1", 0), 1);
  assert.equal(history.record("w1", 500), 2);
  assert.equal(history.record("w1", 1200), 2); // the first left the window
  history.record("w2", 1200);
  history.record("w3", 100);
  // w2 is gone (removed by a resize), w3's only crash left the window.
  history.prune(new Set(["w1", "w3"]), 1300);
  assert.equal(history.size, 1);
  assert.equal(history.record("w1", 1300), 3);
  history.forget("w1");
  assert.equal(history.size, 0);
  assert.equal(history.record("w1", 1400), 1);
  history.clear();
  assert.equal(history.size, 0);
});
