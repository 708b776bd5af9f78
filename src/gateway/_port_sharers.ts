/**
 * Whether another process shares a TLS listener's port by `SO_REUSEPORT`
 * (Linux): the gateway binds its TLS port so for a reload's new certificate,
 * which lets a second `serve` of the same user on the same port listen too
 * instead of failing with `EADDRINUSE` (two started together both pass the
 * start's probe); the kernel would then share the connections between them.
 *
 * @module
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/**
 * How many listening TCP sockets of other processes are bound to the
 * address and `port` this process listens on: 0 when there are none, and
 * where `/proc` cannot tell (not Linux).
 */
export function otherListeners(port: number): number {
  let own: Set<string>;
  const lines: Array<{ table: string; local: string; inode: string }> = [];
  try {
    own = new Set();
    for (const fd of readdirSync("/proc/self/fd")) {
      try {
        const target = readlinkSync(`/proc/self/fd/${fd}`);
        if (target.startsWith("socket:[")) own.add(target.slice(8, -1));
      } catch {
        // Closed meanwhile (the directory's own fd among them).
      }
    }
    const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
    for (const table of ["tcp", "tcp6"]) {
      let text: string;
      try {
        text = readFileSync(`/proc/net/${table}`, "utf8");
      } catch {
        continue; // No IPv6.
      }
      for (const line of text.split("\n").slice(1)) {
        const fields = line.trim().split(/\s+/);
        // local_address is fields[1], st fields[3] (0A: LISTEN), inode [9].
        const local = fields[1];
        if (fields[3] !== "0A" || local?.endsWith(hex) !== true) continue;
        lines.push({ table, local, inode: fields[9] ?? "0" });
      }
    }
  } catch {
    return 0;
  }
  const mine = new Set(
    lines.filter((l) => own.has(l.inode)).map((l) => `${l.table} ${l.local}`),
  );
  return lines.filter((l) =>
    !own.has(l.inode) && l.inode !== "0" && mine.has(`${l.table} ${l.local}`)
  ).length;
}
