/**
 * The worker behind {@linkcode ParallelMd5}: hashes chunks of shared memory
 * off the main thread. Private to `spillover()`.
 *
 * Messages in: `{type: "update", job, seq, buffer, offset, length}` (the
 * buffer is a SharedArrayBuffer), `{type: "digest", job}`, `{type: "drop", job}`.
 * Messages out: `{type: "ack", seq}` once a chunk is hashed (its memory may be
 * reused), `{type: "digest", job, hex}`.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";

interface WorkerScope {
  onmessage: ((event: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
}

const scope = globalThis as unknown as WorkerScope;
const jobs = new Map<number, Hash>();

scope.onmessage = (event: MessageEvent): void => {
  const m = event.data as {
    type: string;
    job: number;
    seq?: number;
    buffer?: SharedArrayBuffer;
    offset?: number;
    length?: number;
  };
  if (m.type === "update") {
    let hash = jobs.get(m.job);
    if (hash === undefined) jobs.set(m.job, hash = createHash("md5"));
    hash.update(new Uint8Array(m.buffer!, m.offset, m.length));
    scope.postMessage({ type: "ack", seq: m.seq });
  } else if (m.type === "digest") {
    const hash = jobs.get(m.job) ?? createHash("md5");
    jobs.delete(m.job);
    scope.postMessage({ type: "digest", job: m.job, hex: hash.digest("hex") });
  } else if (m.type === "drop") {
    jobs.delete(m.job);
  }
};
