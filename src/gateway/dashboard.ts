/**
 * The gateway's live dashboard: one self-contained HTML page that polls
 * `/v1/status`, `/metrics?format=json` and `/v1/channels`. It shows the
 * workers, models and channels, and what plugins report of themselves
 * (`pluginStatus`: autoscale's bounds, target and counters).
 *
 * @module
 */

/** Options for {@linkcode dashboardHtml}. */
export interface DashboardOptions {
  /** Nonce allowing the page's inline script and style under the CSP. */
  nonce: string;
  /**
   * Poll interval in ms: at least 200 and at most 2^31 − 1 (a timer's
   * range); one that is not a finite number is the default.
   * @default {1000}
   */
  intervalMs?: number;
  /** Version shown in the header. */
  version?: string;
}

/**
 * The Content-Security-Policy to send with the page: only its own inline
 * script/style (by nonce) and requests to the gateway itself.
 *
 * @example
 * ```ts
 * import { dashboardCsp } from "./dashboard.ts";
 * console.log(dashboardCsp("abc").includes("'nonce-abc'")); // true
 * ```
 */
export function dashboardCsp(nonce: string): string {
  return `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; ` +
    `img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;
}

/**
 * The dashboard page. With a gateway token, open it as `/?token=<token>`:
 * the script moves the token from the URL to `sessionStorage` and sends it as
 * a bearer token on its requests.
 *
 * @example
 * ```ts
 * import { dashboardHtml } from "./dashboard.ts";
 * const html = dashboardHtml({ nonce: "n0nce" });
 * console.log(html.startsWith("<!doctype html>")); // true
 * ```
 */
export function dashboardHtml(options: DashboardOptions): string {
  const nonce = options.nonce.replace(/[^A-Za-z0-9+/=_-]/g, "");
  // At least 200 ms, and within a timer's range (a NaN or one beyond it
  // would refresh the page without pause).
  const asked = options.intervalMs ?? 1000;
  const interval = Number.isFinite(asked)
    ? Math.min(Math.max(200, Math.round(asked)), 2 ** 31 - 1)
    : 1000;
  const version = (options.version ?? "").replace(/[^0-9A-Za-z.+-]/g, "");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pyproxy dashboard</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">
  :root { font: 14px/1.4 system-ui, sans-serif; color: #1d2330; background: #f6f7f9; }
  body { margin: 0 auto; max-width: 1100px; padding: 16px; }
  header { display: flex; align-items: baseline; gap: 12px; }
  h1 { font-size: 20px; margin: 0; }
  h2 { font-size: 15px; margin: 20px 0 6px; }
  .muted { color: #6b7280; }
  .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin-top: 12px; }
  .card { background: #fff; border: 1px solid #e3e6eb; border-radius: 8px; padding: 10px 12px; }
  .card b { display: block; font-size: 22px; }
  table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #e3e6eb; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eef0f3; font-variant-numeric: tabular-nums; }
  th { background: #f0f2f5; font-weight: 600; }
  .state-ready { color: #0a7a32; } .state-failed { color: #b42318; } .state-restarting, .state-starting { color: #a15c00; }
  #conn.ok { color: #0a7a32; } #conn.err { color: #b42318; }
  code { font-size: 12px; }
</style>
</head>
<body>
<header><h1>pyproxy</h1><span class="muted">${version}</span><span id="conn" class="muted">connecting…</span></header>
<div class="cards">
  <div class="card">workers ready<b id="ready">–</b></div>
  <div class="card">requests/s<b id="rate">–</b></div>
  <div class="card">requests total<b id="requests">–</b></div>
  <div class="card">in flight<b id="inflight">–</b></div>
  <div class="card">queue<b id="queue">–</b></div>
  <div class="card">uptime<b id="uptime">–</b></div>
</div>
<h2>Workers</h2>
<table id="workers"><thead><tr><th>id</th><th>pid</th><th>state</th><th>in flight</th><th>parked</th><th>restarts</th><th>uptime</th><th>last exit</th></tr></thead><tbody></tbody></table>
<h2>Models</h2>
<table id="models"><thead><tr><th>name</th><th>class</th><th>inputs</th><th>timeout</th><th>close timeout</th><th>requests</th><th>errors</th><th>mean latency</th><th>workers</th></tr></thead><tbody></tbody></table>
<section id="plugins-section" hidden>
<h2>Plugins</h2>
<table id="plugins"><thead><tr><th>plugin</th><th>field</th><th>value</th></tr></thead><tbody></tbody></table>
</section>
<h2>Channels</h2>
<table id="channels"><thead><tr><th>name</th><th>subscribers</th><th>published</th><th>last message</th></tr></thead><tbody></tbody></table>
<p class="muted">Updated <span id="updated">never</span>.</p>
<script nonce="${nonce}">
(() => {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem("pyproxy-token", fromUrl);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  const token = sessionStorage.getItem("pyproxy-token");
  const headers = token ? { authorization: "Bearer " + token } : {};
  // Integers beyond ±2^53 (int64 ids in channel messages) are shown with the
  // digits the gateway sent, not rounded by res.json(): read as BigInt from
  // their source text, written back raw (browsers without JSON.parse source
  // access or JSON.rawJSON show them rounded, or as strings).
  const exact = (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\\d+$/.test(context.source)
      ? BigInt(context.source)
      : value;
  const show = (value) =>
    JSON.stringify(value, (key, v) => typeof v === "bigint" ? (JSON.rawJSON ? JSON.rawJSON(String(v)) : String(v)) : v);
  const get = async (path) => {
    const res = await fetch(path, { headers, cache: "no-store" });
    if (!res.ok) throw new Error(path + ": HTTP " + res.status);
    return JSON.parse(await res.text(), exact);
  };
  const $ = (id) => document.getElementById(id);
  const fmtMs = (ms) => ms < 10000 ? ms + " ms" : fmtSecs(ms / 1000);
  const fmtSecs = (s) => s < 120 ? s.toFixed(0) + " s" : s < 7200 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
  const fill = (id, rows) => {
    const body = $(id).tBodies[0];
    body.replaceChildren(...rows.map(({ cells, attrs }) => {
      const tr = document.createElement("tr");
      for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
      for (const cell of cells) {
        const td = document.createElement("td");
        if (cell && typeof cell === "object") { td.textContent = cell.text; td.className = cell.cls; }
        else td.textContent = String(cell);
        tr.append(td);
      }
      return tr;
    }));
  };
  // What a dead worker was running, as its WorkerCrashedError says it:
  // " while running: bad (1 call), plain (3), and 2 more calls"; a version
  // (bad@2 in the data) as "bad version 2", as the gateway's answers name it.
  const running = (f, shown) => {
    if (!f || !f.byName) return "";
    const named = Object.entries(f.byName);
    const parts = named.map(([name, n], i) => (shown.get(name) || name) + " (" + n + (i === 0 ? (n === 1 ? " call" : " calls") : "") + ")");
    const rest = f.calls - named.reduce((a, [, n]) => a + n, 0);
    if (rest > 0) parts.push("and " + rest + " more call" + (rest === 1 ? "" : "s"));
    return " while running: " + parts.join(", ");
  };
  let last;
  async function tick() {
    try {
      const [status, metrics, channels] = await Promise.all([get("/v1/status"), get("/metrics?format=json"), get("/v1/channels?history=1")]);
      const now = performance.now();
      const rate = last ? Math.max(0, (metrics.requests - last.requests) / ((now - last.at) / 1000)) : 0;
      last = { requests: metrics.requests, at: now };
      $("ready").textContent = status.workers.filter((w) => w.state === "ready").length + " / " + status.workers.length;
      $("rate").textContent = rate.toFixed(1);
      $("requests").textContent = String(metrics.requests);
      $("inflight").textContent = String(metrics.inFlight);
      $("queue").textContent = String(status.queue ?? 0);
      $("uptime").textContent = fmtSecs(status.uptime / 1000);
      const versionNames = new Map(status.models.filter((m) => m.label !== undefined).map((m) => [m.name + "@" + m.label, m.name + " version " + m.label]));
      fill("workers", status.workers.map((w) => ({
        attrs: { "data-worker": w.id, "data-state": w.state },
        cells: [w.id, w.pid ?? "–", { text: w.state, cls: "state-" + w.state }, w.inFlight, w.parked ?? 0, w.restarts, fmtSecs((w.uptime || 0) / 1000),
          w.state === "failed" && w.failedReason ? w.failedReason : w.lastExit ? w.lastExit.reason + " (pid " + w.lastExit.pid + ", " + new Date(w.lastExit.at).toLocaleTimeString() + ")" + running(w.lastExit.inFlight, versionNames) : ""],
      })));
      fill("models", status.models.map((m) => {
        // A version of a model with versions: its own row, metrics under name@label.
        const key = m.label === undefined ? m.name : m.name + "@" + m.label;
        const shown = m.label === undefined ? m.name : m.name + " version " + m.label + (m.default ? " (default)" : "");
        const mm = metrics.models[key] || { requests: {}, durationSum: 0 };
        const counts = Object.entries(mm.requests);
        const total = counts.reduce((a, [, n]) => a + n, 0);
        const errors = counts.filter(([s]) => Number(s) >= 400).reduce((a, [, n]) => a + n, 0);
        return {
          attrs: { "data-model": key, "data-requests": String(total) },
          cells: [shown, m.class || "", Object.keys(m.inputs || {}).join(", "), m.timeout === undefined ? "" : (m.timeout === null ? "none" : fmtMs(m.timeout)) + (m.timeoutSource === "default" ? "" : " (" + m.timeoutSource + ")"), m.closeTimeoutMs === undefined ? "" : fmtMs(m.closeTimeoutMs), total, errors, total ? (mm.durationSum / total * 1000).toFixed(1) + " ms" : "–", m.failedReason ? { text: "out of service: " + m.failedReason, cls: "state-failed" } : m.slots ? m.slots.join(", ") : "all"],
        };
      }));
      // What plugins report of themselves (autoscale: bounds, target, state,
      // counters): one row per field, nested objects one level deep; a
      // time ("at", epoch milliseconds) as the clock time it was.
      const when = (k, v) => (k === "at" || /At$/.test(k)) && typeof v === "number" && v > 1e12 ? new Date(v).toLocaleTimeString() : v;
      const plugins = Object.entries(status.pluginStatus || {}).flatMap(([name, st]) =>
        Object.entries(st || {}).flatMap(([field, value]) =>
          value && typeof value === "object" && !Array.isArray(value)
            ? Object.entries(value).map(([k, v]) => [name, field + "." + k, when(k, v)])
            : [[name, field, when(field, value)]]
        )
      );
      $("plugins-section").hidden = plugins.length === 0;
      fill("plugins", plugins.map(([name, field, value]) => ({
        attrs: { "data-plugin": name, "data-field": field },
        cells: [name, field, value === null ? "–" : typeof value === "object" ? show(value).slice(0, 200) : String(value)],
      })));
      fill("channels", channels.channels.map((ch) => ({
        attrs: { "data-channel": ch.name },
        cells: [ch.name, ch.subscribers, ch.published, ch.history.length ? show(ch.history[ch.history.length - 1].data).slice(0, 120) : ""],
      })));
      $("conn").textContent = status.draining ? "draining" : "live";
      $("conn").className = "ok";
      $("updated").textContent = new Date().toLocaleTimeString();
    } catch (err) {
      $("conn").textContent = String(err.message || err);
      $("conn").className = "err";
    } finally {
      setTimeout(tick, ${interval});
    }
  }
  tick();
})();
</script>
</body>
</html>
`;
}
