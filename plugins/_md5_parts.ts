/**
 * Part hashes of spill files (protocol §8, `partSize`/`md5Parts`): the md5
 * of each `partSize`-byte part, the parts shared out between hash threads.
 * One md5 is a serial chain, so a whole-file hash takes one core however many
 * there are; parts hash side by side. Private to `spillover()`.
 *
 * @module
 */
import { type Md5Job, md5Job, type ParallelMd5 } from "./_parallel_md5.ts";

/**
 * The running part hashes of one file: feed it the bytes in order, then ask
 * for the digests.
 *
 * @example
 * ```ts ignore
 * const job = md5PartsJob([], 1 << 20);
 * await job.update(chunk); // chunk's memory may be reused once this resolves
 * console.log(await job.digests()); // one hex md5 per MiB
 * ```
 */
export interface Md5PartsJob {
  /** Hashes `chunk` (the next bytes); resolves once `chunk` may be reused. */
  update(chunk: Uint8Array): Promise<void>;
  /** One lower-case hex md5 per part, in order (one part for no bytes). */
  digests(): Promise<string[]>;
  /** Abandons the job (after an error). */
  drop(): void;
}

/**
 * Part `k` is hashed on `threads[k % threads.length]`, or on this thread
 * when `threads` is empty.
 *
 * @example
 * ```ts
 * import { md5PartsJob } from "./_md5_parts.ts";
 * const job = md5PartsJob([], 2);
 * await job.update(new TextEncoder().encode("abc"));
 * console.log(await job.digests()); // ["187ef4436122d1cc2f40dc2b92f0eba0", "4a8a08f09d37b73795649038408b5f33"]
 * ```
 */
export function md5PartsJob(
  threads: readonly ParallelMd5[],
  partSize: number,
): Md5PartsJob {
  if (!Number.isInteger(partSize) || partSize < 1) {
    throw new RangeError(
      `Cannot hash parts: partSize must be a positive integer, got ${partSize}`,
    );
  }
  const jobs: Md5Job[] = [];
  // Bytes still to go in the current (last) part.
  let room = 0;
  const next = (): Md5Job => {
    const job = md5Job(
      threads.length === 0 ? undefined : threads[jobs.length % threads.length],
    );
    jobs.push(job);
    room = partSize;
    return job;
  };
  return {
    update(chunk) {
      const copied: Promise<void>[] = [];
      for (let at = 0; at < chunk.length;) {
        const job = room === 0 ? next() : jobs[jobs.length - 1]!;
        const end = Math.min(chunk.length, at + room);
        copied.push(job.update(chunk.subarray(at, end)));
        room -= end - at;
        at = end;
      }
      return copied.length === 1 ? copied[0]! : Promise.all(copied).then(
        () => {},
      );
    },
    digests() {
      if (jobs.length === 0) next();
      return Promise.all(jobs.map((job) => job.digest()));
    },
    drop() {
      for (const job of jobs) job.drop();
    },
  };
}
