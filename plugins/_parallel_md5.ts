/**
 * MD5 of large spill files computed on a second thread while the main
 * thread encodes, decodes and does file I/O. Private to `spillover()`.
 *
 * @module
 */
import { createHash } from "node:crypto";

/**
 * One running hash: feed it chunks in order, then ask for the digest.
 *
 * @example
 * ```ts ignore
 * const job = md5.begin();
 * await job.update(chunk); // chunk's memory may be reused once this resolves
 * console.log(await job.digest());
 * ```
 */
export interface Md5Job {
  /**
   * Hashes `chunk`: it is copied into shared memory (waiting for a free
   * block when all are in use); resolves once `chunk` may be reused.
   */
  update(chunk: Uint8Array): Promise<void>;
  /** The lower-case hex digest of everything given to `update`. */
  digest(): Promise<string>;
  /** Abandons the job (after an error). */
  drop(): void;
}

/**
 * A job on `thread`, or on this thread (node:crypto, each `update` hashed at
 * once) when there is none: callers handle both the same way.
 *
 * @example
 * ```ts
 * import { md5Job } from "./_parallel_md5.ts";
 * const job = md5Job(undefined);
 * await job.update(new TextEncoder().encode("abc"));
 * console.log(await job.digest()); // 900150983cd24fb0d6963f7d28e17f72
 * ```
 */
export function md5Job(thread: ParallelMd5 | undefined): Md5Job {
  if (thread !== undefined) return thread.begin();
  const hash = createHash("md5");
  return {
    update(chunk) {
      hash.update(chunk);
      return Promise.resolve();
    },
    digest: () => Promise.resolve(hash.digest("hex")),
    drop() {},
  };
}

/**
 * A worker thread that computes MD5 over a few recycled blocks of shared
 * memory: a chunk is copied into a free block (a cache-hot memcpy) and only
 * its place is posted; no garbage is made per chunk (views of a
 * SharedArrayBuffer given to TextDecoder would be copied into a fresh
 * buffer each time, which is why callers keep plain buffers). {@linkcode ParallelMd5.start}
 * resolves to `undefined` where workers or SharedArrayBuffer are missing;
 * callers then hash on the main thread.
 *
 * @example
 * ```ts ignore
 * const md5 = await ParallelMd5.start();
 * const job = md5!.begin();
 * await job.update(new Uint8Array([1, 2, 3, 4]));
 * console.log(await job.digest()); // 08d6c05a21512a79a1dfeb9d2a8f262f
 * md5!.close();
 * ```
 */
export class ParallelMd5 {
  #worker: Worker;
  #nextJob = 0;
  #nextSeq = 0;
  #acks = new Map<
    number,
    { resolve(): void; reject(err: Error): void }
  >();
  #digests = new Map<
    number,
    { resolve(hex: string): void; reject(err: Error): void }
  >();
  #failure: Error | undefined;
  // Shared blocks not in use, and callers waiting for one.
  #free: Uint8Array<SharedArrayBuffer>[] = [];
  #blocks = 0;
  #waiting: (() => void)[] = [];

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.onmessage = (event: MessageEvent) => {
      const m = event.data as {
        type: string;
        seq?: number;
        job?: number;
        hex?: string;
      };
      if (m.type === "ack") {
        const ack = this.#acks.get(m.seq!);
        this.#acks.delete(m.seq!);
        ack?.resolve();
      } else if (m.type === "digest") {
        const digest = this.#digests.get(m.job!);
        this.#digests.delete(m.job!);
        digest?.resolve(m.hex!);
      }
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault?.();
      this.#fail(new Error(`md5 worker failed: ${event.message}`));
    };
  }

  /**
   * Starts the worker and checks it answers within `timeoutMs`; `undefined`
   * when it cannot run here (or is that slow to start: hashing then stays on
   * the calling thread).
   */
  static async start(timeoutMs = 10_000): Promise<ParallelMd5 | undefined> {
    if (
      typeof Worker !== "function" || typeof SharedArrayBuffer !== "function"
    ) return undefined;
    let md5: ParallelMd5 | undefined;
    try {
      const worker = new Worker(
        new URL("./_md5_worker.ts", import.meta.url).href,
        { type: "module" },
      );
      md5 = new ParallelMd5(worker);
      const job = md5.begin();
      await job.update(new Uint8Array([97, 98, 99]));
      const hex = await withTimeout(job.digest(), timeoutMs);
      if (hex !== "900150983cd24fb0d6963f7d28e17f72") {
        throw new Error(`md5 worker answered ${hex}`);
      }
      return md5;
    } catch {
      md5?.close();
      return undefined;
    }
  }

  async #block(): Promise<Uint8Array<SharedArrayBuffer>> {
    for (;;) {
      if (this.#failure !== undefined) throw this.#failure;
      const free = this.#free.pop();
      if (free !== undefined) return free;
      if (this.#blocks < BLOCKS) {
        this.#blocks++;
        return new Uint8Array(new SharedArrayBuffer(BLOCK_BYTES));
      }
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
  }

  async #post(job: number, chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.length || at === 0; at += BLOCK_BYTES) {
      const part = chunk.subarray(at, at + BLOCK_BYTES);
      this.#send(job, await this.#block(), part);
      if (chunk.length === 0) break;
    }
  }

  /** A free block right now (none while others wait for one), else undefined. */
  #blockNow(): Uint8Array<SharedArrayBuffer> | undefined {
    if (this.#failure !== undefined || this.#waiting.length > 0) return;
    const free = this.#free.pop();
    if (free !== undefined || this.#blocks >= BLOCKS) return free;
    this.#blocks++;
    return new Uint8Array(new SharedArrayBuffer(BLOCK_BYTES));
  }

  #send(job: number, block: Uint8Array<SharedArrayBuffer>, part: Uint8Array) {
    block.set(part);
    const seq = this.#nextSeq++;
    this.#acks.set(seq, {
      resolve: () => this.#recycle(block),
      reject: () => {},
    });
    this.#worker.postMessage({
      type: "update",
      job,
      seq,
      buffer: block.buffer,
      offset: 0,
      length: part.length,
    });
  }

  #recycle(block: Uint8Array<SharedArrayBuffer>): void {
    this.#free.push(block);
    this.#waiting.shift()?.();
  }

  /** True once the worker failed or was closed: callers hash on the main thread. */
  get failed(): boolean {
    return this.#failure !== undefined;
  }

  /** Starts a new hash. */
  begin(): Md5Job {
    const job = this.#nextJob++;
    let tail: Promise<void> = Promise.resolve();
    // Updates still waiting for a block; while there are none, a chunk that fits a free block is
    // copied and posted at once, so the worker starts hashing before the caller goes on.
    let queued = 0;
    return {
      update: (chunk) => {
        if (queued === 0 && chunk.length > 0 && chunk.length <= BLOCK_BYTES) {
          const block = this.#blockNow();
          if (block !== undefined) {
            this.#send(job, block, chunk);
            return Promise.resolve();
          }
        }
        // Chained: a later chunk never takes a free block (and its place in the hash) first.
        queued++;
        const copied = tail.then(() => this.#post(job, chunk)).finally(() => {
          queued--;
        });
        tail = copied.catch(() => {});
        return copied;
      },
      digest: async () => {
        await tail;
        if (this.#failure !== undefined) throw this.#failure;
        const hex = new Promise<string>((resolve, reject) =>
          this.#digests.set(job, { resolve, reject })
        );
        this.#worker.postMessage({ type: "digest", job });
        return await hex;
      },
      drop: () => {
        if (this.#failure === undefined) {
          this.#worker.postMessage({ type: "drop", job });
        }
      },
    };
  }

  /** Stops the worker; pending hashes fail. */
  close(): void {
    this.#fail(new Error("md5 worker closed"));
  }

  #fail(err: Error): void {
    if (this.#failure !== undefined) return;
    this.#failure = err;
    this.#worker.terminate();
    for (const ack of this.#acks.values()) ack.reject(err);
    for (const wake of this.#waiting) wake();
    this.#waiting = [];
    this.#free = [];
    for (const digest of this.#digests.values()) digest.reject(err);
    this.#acks.clear();
    this.#digests.clear();
  }
}

// Blocks of shared memory: chunks up to this size go in one; at most this many in use at once.
const BLOCK_BYTES = 4 * 1024 * 1024;
const BLOCKS = 4;

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("md5 worker timed out")), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
