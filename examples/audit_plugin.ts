/**
 * A plugin of one's own for the gateway's command line: an audit of every
 * model call, one JSON line per call in a file, loaded without writing a
 * program around `serve` (docs/plugins.md, "Loading your plugin in serve"):
 *
 * ```sh
 * deno run -A mod.ts serve --plugin examples/audit_plugin.ts
 * ```
 *
 * or, with options, in `pyproxy.json` (the entry named as the plugin, the
 * path relative to the file):
 *
 * ```json
 * { "plugins": { "audit": { "module": "./audit_plugin.ts", "options": { "file": "/var/log/pyproxy/audit.jsonl" } } } }
 * ```
 *
 * The module's default export is the factory: `serve` calls it with the
 * entry's `options` (nothing for `--plugin`). It imports pyproxy's types
 * only, so it runs wherever it is put. Models may ask it how many calls it
 * saw: `host.call("audit.count")`.
 *
 * @module
 */
import { appendFile } from "node:fs/promises";
import type { CallOutcome, ModelCall, Plugin } from "../src/plugin.ts";

/** Options of the audit plugin (pyproxy.json's `plugins.audit.options`). */
export interface AuditOptions {
  /**
   * The file the lines are appended to; without it, each line goes to
   * the gateway's log (at info).
   */
  file?: string;
}

/**
 * The audit plugin: a line per settled call,
 * `{caller, model, requestId, ok, code, attempts, durationMs}`; `caller` is
 * the id of the token the call's request was let in with (`tokenId`: a
 * token per tenant tells who called), absent when the gateway has no token.
 */
export default function audit(options: AuditOptions = {}): Plugin {
  // A typo in pyproxy.json should fail the start, not audit nothing.
  for (const key of Object.keys(options)) {
    if (key !== "file") {
      throw new TypeError(`unknown option ${key} (known: file)`);
    }
  }
  let count = 0;
  // One write at a time, in the calls' order.
  let writing: Promise<void> = Promise.resolve();
  return {
    name: "audit",
    onSettle(call: ModelCall, outcome: CallOutcome, ctx) {
      count++;
      const line = JSON.stringify({
        caller: call.caller,
        model: call.resolved,
        requestId: call.requestId,
        ok: outcome.ok,
        code: outcome.ok
          ? undefined
          : (outcome.error as { code?: string }).code,
        attempts: outcome.attempts,
        durationMs: outcome.durationMs,
      });
      if (options.file === undefined) {
        ctx.logger.info("audit {line}", { line });
        return;
      }
      const file = options.file;
      writing = writing.then(() => appendFile(file, `${line}\n`)).catch(
        (err) => ctx.logger.warn("Cannot write audit line: {err}", { err }),
      );
    },
    async onPoolClosed() {
      await writing; // the last lines written before the gateway exits
    },
    handlers: {
      "audit.count": () => count,
    },
    // GET /v1/status shows it as pluginStatus.audit.
    status: () => ({ calls: count, file: options.file ?? null }),
  };
}
