/**
 * A company policy as a plugin of the gateway: at most `limit` model calls
 * per tenant within `windowMs`, the tenant named by a request header; a
 * call over it is refused before it is queued, and the gateway answers 429
 * with `Retry-After` saying when the tenant's window ends (its error class
 * extends `OverloadedError`, its `details.retryAfterMs` is that wait).
 *
 * The plugin's `onCall` sees each model call once, when it is made
 * (docs/plugins.md, "Call hooks"): a call of a model that batches is
 * refused alone (the other tenants' calls of its batch run), and an
 * idempotent call retried after a crash counts once. It sees the header
 * only when the gateway forwards it (`forwardHeaders`, so the model can
 * read it too).
 *
 * Run: `deno run -A examples/tenant_quota.ts` (or `bun run examples/tenant_quota.ts`)
 *
 * @module
 */
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { OverloadedError } from "../src/errors.ts";
import type { ModelCall, Plugin } from "../src/plugin.ts";
import { loadConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";

/** A tenant over its quota: the gateway's 429, as for a full queue. */
export class QuotaExceededError extends OverloadedError {
  override readonly name = "QuotaExceededError";
  override readonly code = "QUOTA_EXCEEDED";
}

/** Options of {@linkcode tenantQuota}. */
export interface TenantQuotaOptions {
  /** Calls a tenant may make within `windowMs`. */
  limit: number;
  /** The window, in ms. @default {1000} */
  windowMs?: number;
  /** The request header naming the tenant (lower-case). @default {"x-tenant"} */
  header?: string;
  /** The clock, for tests. @default {Date.now} */
  now?: () => number;
}

/** The per-tenant quota plugin; `status()` shows the calls counted per tenant. */
export function tenantQuota(options: TenantQuotaOptions): Plugin {
  const { limit, windowMs = 1000, header = "x-tenant", now = Date.now } =
    options;
  // Per tenant: the start of its window and the calls counted in it.
  const windows = new Map<string, { start: number; calls: number }>();
  const refused = new Map<string, number>();
  const take = (tenant: string): void => {
    const at = now();
    let w = windows.get(tenant);
    if (w === undefined || at - w.start >= windowMs) {
      windows.set(tenant, w = { start: at, calls: 0 });
    }
    if (w.calls >= limit) {
      refused.set(tenant, (refused.get(tenant) ?? 0) + 1);
      throw new QuotaExceededError(
        `Cannot run call: tenant '${tenant}' made ${limit} calls within ${windowMs} ms`,
        // The gateway's Retry-After: when its window ends.
        { details: { tenant, retryAfterMs: w.start + windowMs - at } },
      );
    }
    w.calls++;
  };
  return {
    name: "tenantQuota",
    onCall(call: ModelCall): void {
      const tenant = call.headers?.[header];
      if (tenant !== undefined) take(tenant);
    },
    status: () => ({
      tenants: Object.fromEntries(
        [...windows].map(([t, w]) => [t, w.calls]),
      ),
      refused: Object.fromEntries(refused),
    }),
  };
}

if (import.meta.main) {
  // The servers write their logs under modelsDir, so run from a scratch copy.
  const modelsDir = await mkdtemp(join(tmpdir(), "pyproxy-example-"));
  await copyFile(
    fileURLToPath(new URL("./models/doubler.py", import.meta.url)),
    join(modelsDir, "doubler.py"),
  );
  await using _cleanup = {
    [Symbol.asyncDispose]: () => rm(modelsDir, { recursive: true }),
  };
  const quota = tenantQuota({ limit: 2, windowMs: 60_000 });
  await using server = await serve(
    await loadConfig({
      cli: { port: 0, workers: 1, modelsDir, forwardHeaders: ["x-tenant"] },
    }),
    { plugins: [quota] },
  );
  const call = async (tenant: string): Promise<string> => {
    const res = await fetch(new URL("/v1/models/doubler/execute", server.url), {
      method: "POST",
      headers: { "x-tenant": tenant },
      body: JSON.stringify({ x: 1 }),
    });
    const body = await res.json() as { error?: { type: string } };
    const retry = res.headers.get("retry-after");
    return res.ok
      ? `${res.status}`
      : `${res.status} ${body.error?.type} (Retry-After: ${retry})`;
  };
  for (const tenant of ["acme", "acme", "acme", "globex"]) {
    console.log(`${tenant}: ${await call(tenant)}`);
  }
  console.log(quota.status!());
}
