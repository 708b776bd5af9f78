/**
 * A company policy as a plugin of the gateway: each tenant may make `limit`
 * model calls per `windowMs`, spread out, with bursts of at most `burst`;
 * each tenant known by its own bearer token (the gateway's `token` list or
 * `tokenFile`, one token per tenant). A call over it is refused before it
 * is queued, and the gateway answers 429 with `Retry-After` saying when the
 * tenant may call again (its error class extends `OverloadedError`, its
 * `details.retryAfterMs` is that wait).
 *
 * The rate is kept as a generic cell rate algorithm (GCRA, one time per
 * tenant): a call is let through every `windowMs / limit` ms, `burst` at
 * once after a quiet spell. A fixed window (`limit` calls, then none until
 * the window ends) lets a flooding tenant put its `limit` calls in the
 * queue at once at each window's start, in front of the other tenants':
 * measured (docs/gateway.md, "Serving many tenants"), a small tenant's p90
 * was 285 ms with a fixed window of 50 calls/s, 48 ms with this.
 *
 * The tenant is the call's `caller`: the id of the token the gateway let
 * the request in with (`tokenId(token)`, the first 16 hex digits of its
 * SHA-256), never a request header, which any client may set to another
 * tenant's name (or leave out). `tenants` names the ids, for the status
 * and the metrics; an id it does not name counts under itself. Those are
 * the operator's views: mark each tenant's line of the token file
 * `<token> tenant`, and its token calls models but gets 403 on `/metrics`,
 * `/v1/status` and the dashboard (docs/gateway.md, "Serving many tenants").
 *
 * The plugin's `onCall` sees each model call once, when it is made
 * (docs/plugins.md, "Call hooks"): a call of a model that batches is
 * refused alone (the other tenants' calls of its batch run), and an
 * idempotent call retried after a crash counts once. The counts live in
 * the gateway process: a reload (SIGHUP) keeps them, a restart starts
 * them again, and each of several gateway processes counts its own calls.
 *
 * Run: `deno run -A examples/tenant_quota.ts` (or `bun run examples/tenant_quota.ts`),
 * or load it in `serve` (pyproxy.json):
 * `"plugins": {"tenantQuota": {"module": "./tenant_quota.ts", "options": {"limit": 100, "tenants": {"6c058b0daa6316f5": "acme"}}}}`
 *
 * @module
 */
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { OverloadedError } from "../src/errors.ts";
import type { ModelCall, Plugin, PluginMetric } from "../src/plugin.ts";
import { loadConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { tokenId } from "../src/gateway/security.ts";

/** A tenant over its quota: the gateway's 429, as for a full queue. */
export class QuotaExceededError extends OverloadedError {
  override readonly name = "QuotaExceededError";
  override readonly code = "QUOTA_EXCEEDED";
}

/** Options of {@linkcode tenantQuota}. */
export interface TenantQuotaOptions {
  /** Calls a tenant may make per `windowMs`. */
  limit: number;
  /** The window, in ms. @default {1000} */
  windowMs?: number;
  /** Calls a tenant may make at once, after a quiet spell. @default {limit} */
  burst?: number;
  /**
   * Tenants' names by the ids of their tokens (`tokenId(token)`), for the
   * status and the metrics. @default {{}}
   */
  tenants?: Record<string, string>;
  /** The clock, for tests. @default {Date.now} */
  now?: () => number;
}

/**
 * The per-tenant quota plugin; `status()` shows the calls let through and
 * refused per tenant, `metrics()` the refusals (one series per token at
 * most).
 */
export function tenantQuota(options: TenantQuotaOptions): Plugin {
  // A typo in pyproxy.json should fail the start, not count nothing.
  for (const key of Object.keys(options)) {
    if (!["limit", "windowMs", "burst", "tenants", "now"].includes(key)) {
      throw new TypeError(
        `unknown option ${key} (known: limit, windowMs, burst, tenants)`,
      );
    }
  }
  const { limit, windowMs = 1000, tenants = {}, now = Date.now } = options;
  const burst = options.burst ?? limit;
  if (!(limit > 0 && windowMs > 0 && burst >= 1)) {
    throw new RangeError(
      "limit and windowMs must be > 0, and burst >= 1",
    );
  }
  // A call every `interval` ms; up to `slack` ms of them ahead (a burst).
  const interval = windowMs / limit;
  const slack = (burst - 1) * interval;
  // Per tenant, keyed by the gateway's tokens (as many entries as tokens at
  // most): when its next call is due, if it called at its rate.
  const due = new Map<string, number>();
  const calls = new Map<string, number>();
  const refused = new Map<string, number>();
  const take = (tenant: string): void => {
    const at = now();
    const next = Math.max(due.get(tenant) ?? at, at);
    if (next - at > slack) {
      refused.set(tenant, (refused.get(tenant) ?? 0) + 1);
      throw new QuotaExceededError(
        `Cannot run call: tenant '${tenant}' is over ${limit} calls per ${windowMs} ms`,
        // The gateway's Retry-After: when its next call is let through.
        { details: { tenant, retryAfterMs: next - slack - at } },
      );
    }
    due.set(tenant, next + interval);
    calls.set(tenant, (calls.get(tenant) ?? 0) + 1);
  };
  return {
    name: "tenantQuota",
    onCall(call: ModelCall): void {
      // No caller: a gateway without a token, where every client is one.
      const id = call.caller ?? "anonymous";
      take(Object.hasOwn(tenants, id) ? tenants[id]! : id);
    },
    status: () => ({
      tenants: Object.fromEntries(calls),
      refused: Object.fromEntries(refused),
    }),
    metrics: (): PluginMetric[] =>
      [...refused].map(([tenant, value]) => ({
        name: "pyproxy_tenant_quota_refused_total",
        type: "counter",
        help: "Model calls refused for a tenant over its quota.",
        value,
        labels: { tenant },
      })),
  };
}

export default tenantQuota;

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
  // A random token per tenant (`openssl rand -hex 16`: a guessable one can be
  // found from its id, which plugins show); in production a tokenFile, one
  // token a line.
  const tokens = {
    acme: "d6f41502211c66ec6238ef3a970604bf",
    globex: "28843c05b742af31288a9f7cdf770b96",
  };
  const quota = tenantQuota({
    limit: 2,
    windowMs: 60_000,
    tenants: {
      [tokenId(tokens.acme)]: "acme",
      [tokenId(tokens.globex)]: "globex",
    },
  });
  await using server = await serve(
    await loadConfig({
      cli: {
        port: 0,
        workers: 1,
        modelsDir,
        token: Object.values(tokens),
        forwardHeaders: ["x-tenant"],
      },
    }),
    { plugins: [quota] },
  );
  const call = async (
    tenant: keyof typeof tokens,
    header?: string,
  ): Promise<string> => {
    const res = await fetch(new URL("/v1/models/doubler/execute", server.url), {
      method: "POST",
      headers: {
        authorization: `Bearer ${tokens[tenant]}`,
        ...(header === undefined ? {} : { "x-tenant": header }),
      },
      body: JSON.stringify({ x: 1 }),
    });
    const body = await res.json() as { error?: { type: string } };
    const retry = res.headers.get("retry-after");
    return res.ok
      ? `${res.status}`
      : `${res.status} ${body.error?.type} (Retry-After: ${retry})`;
  };
  for (const tenant of ["acme", "acme", "acme", "globex"] as const) {
    console.log(`${tenant}: ${await call(tenant)}`);
  }
  // A header naming another tenant changes nothing: the token decides.
  console.log(`acme as x-tenant: globex: ${await call("acme", "globex")}`);
  console.log(quota.status!());
}
