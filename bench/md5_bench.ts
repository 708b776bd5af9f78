/**
 * Picks `MD5_NATIVE_THRESHOLD` in src/protocol/md5.ts: the pure TypeScript
 * MD5 against `node:crypto` for a range of input sizes.
 *
 * Run: `deno bench bench/md5_bench.ts`
 *
 * @module
 */
import { createHash } from "node:crypto";
import { createMd5 } from "../src/protocol/md5.ts";

const ts = createMd5({ nativeThreshold: Infinity });
const out = new Uint8Array(16);

for (const size of [100, 1024, 4096, 16384, 65536, 1048576]) {
  const data = new Uint8Array(size).map((_, i) => (i * 31) & 255);
  Deno.bench(
    { name: `typescript ${size} B`, group: `${size}`, baseline: true },
    () => {
      ts(data, out);
    },
  );
  Deno.bench({ name: `node:crypto ${size} B`, group: `${size}` }, () => {
    out.set(createHash("md5").update(data).digest());
  });
}
