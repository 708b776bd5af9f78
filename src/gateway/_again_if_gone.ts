/**
 * One read of a file that a Kubernetes secret's rotation may have moved.
 *
 * @module
 */

/**
 * `read()`, and once more at once when it finds the file gone: the kubelet
 * swaps a secret's `..data` symlink and then removes the old version's
 * directory, which a read that followed the old link finds gone (the new
 * one is there).
 *
 * @example
 * ```ts
 * import { againIfGone } from "./_again_if_gone.ts";
 * let reads = 0;
 * const text = await againIfGone(() =>
 *   ++reads === 1
 *     ? Promise.reject(Object.assign(new Error("gone"), { code: "ENOENT" }))
 *     : Promise.resolve("pem")
 * );
 * console.log(text, reads); // "pem" 2
 * ```
 */
export async function againIfGone<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if ((err as { code?: unknown }).code !== "ENOENT") throw err;
    return await read();
  }
}
