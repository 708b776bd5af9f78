/**
 * {@linkcode Runtime.readRegularFile} for both adapters, with `node:fs`:
 * neither `Deno.open` nor `Bun.file` opens with `O_NONBLOCK`.
 *
 * @module
 */
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import type { Runtime } from "./types.ts";

/**
 * Opens `path` without waiting (`O_NONBLOCK`: a FIFO's open does not wait
 * for a writer; a regular file's reads ignore the flag), checks the open
 * file itself (no race with a swap since a `stat` of the path) and reads
 * at most `limit + 1` bytes of it; with the open file's owner, mode,
 * device and inode (the `fstat` that found it a regular file).
 */
export const readRegularFile: NonNullable<Runtime["readRegularFile"]> = async (
  path,
  limit,
) => {
  const handle = await open(
    path,
    constants.O_RDONLY | (constants.O_NONBLOCK ?? 0),
  );
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) return null;
    const bytes = new Uint8Array(limit + 1);
    let length = 0;
    while (length < bytes.length) {
      const { bytesRead } = await handle.read(
        bytes,
        length,
        bytes.length - length,
        null,
      );
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return {
      bytes: bytes.subarray(0, length),
      uid: stat.uid,
      mode: stat.mode,
      dev: stat.dev,
      ino: stat.ino,
    };
  } finally {
    await handle.close();
  }
};
