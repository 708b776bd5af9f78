// Request ids of batches and evals under Bun: a batching model's calls in
// host.request_ids() and in its log records (and on one line of the
// gateway's log), the library's eval requestId, and X-Request-Id on the
// gateway's eval routes.
import { expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, Pool } from "../../mod.ts";
import { withGateway } from "./_helpers.ts";
import { startServe } from "./_serve_process.ts";

const BATCHER = `import logging

from pyproxy import host

log = logging.getLogger("batcher")


class Batcher:
    batch_size = 4
    # Long: a batch goes when the one before it ends, not on a timer.
    batch_delay_ms = 1000

    def execute_batch(self, msgs):
        log.warning("batch of %d", len(msgs))
        ids = host.request_ids()
        return [{"id": host.request_id(), "ids": ids, "index": i} for i in range(len(msgs))]
`;

type Seen = { id: string | null; ids: Array<string | null>; index: number };

/** The first call goes alone; the other three wait for it and go as one batch. */
const EXPECTED: Seen[] = [
  { id: null, ids: ["req-a"], index: 0 },
  { id: null, ids: [null, "req-c", "req-d"], index: 0 },
  { id: null, ids: [null, "req-c", "req-d"], index: 1 },
  { id: null, ids: [null, "req-c", "req-d"], index: 2 },
];
const IDS = ["req-a", undefined, "req-c", "req-d"];

const EVAL_ID =
  "from pyproxy import host\n(host.request_id(), host.request_ids())";

test(
  "Pool on Bun: a batching model's calls send their requestIds (host.request_ids(), log records), and pool.eval its requestId",
  async () => {
    const entries: Array<[string, Record<string, unknown>]> = [];
    const at = (m: string, p?: Record<string, unknown>) =>
      void entries.push([m, p ?? {}]);
    const logger = {
      trace: () => {},
      debug: () => {},
      info: at,
      warn: at,
      error: at,
      fatal: at,
    };
    await using pool = await Pool.start({
      workers: 1,
      logger,
      handleSignals: false,
    });
    await pool.addModel("batcher", { source: BATCHER });
    const seen = await Promise.all(
      IDS.map((requestId) =>
        pool.execute<Seen>(
          "batcher",
          {},
          requestId === undefined ? {} : { requestId },
        )
      ),
    );
    expect(seen).toEqual(EXPECTED);
    expect(await pool.execute("batcher", {})).toEqual({
      id: null,
      ids: [null],
      index: 0,
    });
    expect(
      entries.filter(([, p]) => p.model === "batcher").map(([m, p]) => [
        m,
        p.message,
        p.requestIds,
        p.requestIdList,
      ]),
    ).toEqual([
      [
        "{message} (request ids {requestIdList})",
        "batch of 1",
        ["req-a"],
        "req-a",
      ],
      [
        "{message} (request ids {requestIdList})",
        "batch of 3",
        ["req-c", "req-d"],
        "req-c, req-d",
      ],
      ["{message}", "batch of 1", undefined, undefined],
    ]);
    let error: unknown;
    try {
      await pool.execute("batcher", {}, { requestId: "a b" });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    // Eval: the code reads it, the atom keeps it.
    const atom = pool.eval(EVAL_ID, { requestId: "req-eval" });
    expect(atom.requestId).toBe("req-eval");
    expect(await atom.result).toEqual(["req-eval", ["req-eval"]]);
    const plain = pool.eval(EVAL_ID);
    expect(plain.requestId).toBeUndefined();
    expect(await plain.result).toEqual([null, [null]]);
    expect(() => pool.eval("1", { requestId: "a/b" })).toThrow(ConfigError);
  },
  30_000,
);

/** The events of an eval's SSE response, as [event, data]. */
async function evalEvents(res: Response): Promise<Array<[string, unknown]>> {
  const text = await res.text();
  return text.split("\n\n").filter((block) => block.includes("event: "))
    .map((block) => {
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? "";
      const data = /^data: (.*)$/m.exec(block)?.[1];
      return [event, data === undefined ? undefined : JSON.parse(data)];
    });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

test(
  "serve() on Bun: X-Request-Id reaches a batching model's host.request_ids() and the eval's code; every error of the eval routes carries an id",
  async () => {
    const token = "bun-reqid-token-0123456789";
    await withGateway({ "batcher.py": BATCHER }, {
      token,
      allowEval: true,
    }, async (server) => {
      const headers = (requestId?: string): Record<string, string> => ({
        authorization: `Bearer ${token}`,
        ...(requestId === undefined ? {} : { "x-request-id": requestId }),
      });
      const post = (path: string, body: string, requestId?: string) =>
        fetch(`${server.url}${path}`, {
          method: "POST",
          headers: headers(requestId),
          body,
        });
      // Batching: however the calls arrive and are batched, each finds its
      // own id (or None) at its index in host.request_ids().
      const answers = await Promise.all(
        IDS.map((id) => post("/v1/models/batcher/execute", "{}", id)),
      );
      expect(answers.map((r) => r.headers.get("x-request-id"))).toEqual([
        "req-a",
        null,
        "req-c",
        "req-d",
      ]);
      const seen = await Promise.all(answers.map((r) => r.json() as Seen));
      expect(seen.map((s) => [s.id, s.ids[s.index]])).toEqual(
        IDS.map((id) => [null, id ?? null]),
      );
      // Eval: the client's id reaches the code.
      const body = JSON.stringify({ code: EVAL_ID });
      const res = await post("/v1/eval", body, "req-eval");
      expect(res.headers.get("x-request-id")).toBe("req-eval");
      expect((await evalEvents(res)).slice(1)).toEqual([
        ["result", { value: ["req-eval", ["req-eval"]] }],
      ]);
      const plain = await post("/v1/eval", body);
      expect((await evalEvents(plain)).slice(1)).toEqual([
        ["result", { value: [null, [null]] }],
      ]);
      // A failed eval's error event: the client's id, else a new one; in a
      // replay, the eval's own id whatever the replay sends.
      const failing = JSON.stringify({ code: "1/0" });
      for (const sent of ["req-fail", undefined]) {
        const failed = await post("/v1/eval", failing, sent);
        const atomId = failed.headers.get("x-atom-id");
        const events = await evalEvents(failed);
        const error = events.at(-1)?.[1] as Record<string, unknown>;
        expect(events.at(-1)?.[0]).toBe("error");
        expect(error).toMatchObject({ status: 422, type: "PythonError" });
        if (sent === undefined) expect(error.requestId).toMatch(UUID);
        else expect(error.requestId).toBe(sent);
        const replay = await fetch(
          `${server.url}/v1/eval/${atomId}/events`,
          { headers: headers("req-replay") },
        );
        const again = (await evalEvents(replay)).at(-1)?.[1] as Record<
          string,
          unknown
        >;
        expect(again.requestId).toBe(sent ?? "req-replay");
      }
      // Error responses of the eval routes: the client's id, else a new one.
      for (const sent of ["req-bad", undefined]) {
        for (
          const [path, init, status] of [
            ["/v1/eval", { method: "POST", body: "print(1)" }, 400],
            ["/v1/eval", { method: "POST", body: '{"code": 7}' }, 400],
            ["/v1/eval/nope/events", {}, 404],
          ] as const
        ) {
          const bad = await fetch(`${server.url}${path}`, {
            ...init,
            headers: headers(sent),
          });
          expect([path, bad.status]).toEqual([path, status]);
          const id = bad.headers.get("x-request-id");
          if (sent === undefined) expect(id).toMatch(UUID);
          else expect(id).toBe(sent);
          const { error } = await bad.json() as {
            error: { requestId: string };
          };
          expect(error.requestId).toBe(id!);
        }
      }
    });
  },
  30_000,
);

test(
  "bun run mod.ts serve writes a batch's log record with its request ids on one line",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-reqid-"));
    await writeFile(join(dir, "batcher.py"), BATCHER);
    const { child, url, stderr } = await startServe([
      "--port",
      "0",
      "--workers",
      "1",
      "--models",
      dir,
    ]).catch(async (err) => {
      await rm(dir, { recursive: true, force: true });
      throw err;
    });
    try {
      // Long ids: the line grows past what a console prints an array on.
      const ids = ["req-a", undefined, "req-cccccccc", "req-dddddddd"];
      await Promise.all(ids.map(async (id) => {
        const res = await fetch(`${url}/v1/models/batcher/execute`, {
          method: "POST",
          headers: id === undefined ? {} : { "x-request-id": id },
          body: "{}",
        });
        await res.body?.cancel();
      }));
      child.kill("SIGTERM");
      expect(await child.exited).toBe(0);
      // One line per record, each with its batch's ids; every id in some
      // line (the calls may arrive, and be batched, in any order).
      const lines = (await stderr).split("\n")
        .filter((line) => line.includes("pyproxy·python·batcher"));
      const listed: string[] = [];
      for (const line of lines) {
        const m =
          /WRN pyproxy·python·batcher batch of \d( \(request ids ([\w., -]+)\))?$/
            .exec(line);
        expect(m === null ? line : "").toBe("");
        if (m?.[2] !== undefined) listed.push(...m[2].split(", "));
      }
      expect(listed.sort()).toEqual(["req-a", "req-cccccccc", "req-dddddddd"]);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
      await rm(dir, { recursive: true, force: true });
    }
  },
  30_000,
);
