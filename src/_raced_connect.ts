/**
 * A TCP connect raced by fresh ones while it has not completed (internal).
 *
 * A listener's full accept queue makes Linux drop a TCP connect's SYN
 * (`ListenOverflows`), and the connecting side sends it again only after
 * 1 s, then 3 s: a local process flooding a TCP worker with connects it
 * closes at once (~40 000 a second each, two of them) kept the queue full,
 * and of the host's connects with a 3 s `connectTimeout` 4 of 7 got in at a
 * cap of 16 (median 1 s: the second SYN) and 0 of 4 at the default 1024
 * (flood26). A fresh connect is a fresh SYN, with the same chance of
 * finding room as any of the flood's: one every few ms, not two in 3 s.
 *
 * @module
 */
import type { Connection, ConnectTarget } from "./runtime/types.ts";

/** The wait before a second connect to a loopback address, in ms. */
const LOOPBACK_FIRST_MS = 10;
/**
 * The longest wait between two connects to a loopback address, in ms: a
 * loopback connect that completes does so in well under 1 ms, unless its
 * SYN was dropped.
 */
const LOOPBACK_MAX_MS = 100;
/**
 * The wait before a second connect to another address, and the longest, in
 * ms: its round trip is not known, and a connect still under way is kept,
 * so one that takes longer costs a connection opened and closed at once.
 */
const REMOTE_FIRST_MS = 250;
const REMOTE_MAX_MS = 1000;
/** Connects started for one at most (each may wait on its own SYNs). */
const MAX_RACED_CONNECTS = 32;

/** Whether `hostname` is a loopback address (or `localhost`). */
function loopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" ||
    hostname.startsWith("127.") || hostname.startsWith("::ffff:127.");
}

/**
 * Connects to `target`; over TCP, while no connect has completed, starts
 * another after a pause that doubles (from 10 ms to a loopback address,
 * 250 ms to another), none after `deadline` (a `Date.now()` value), at
 * most {@linkcode MAX_RACED_CONNECTS}. Resolves with the first connection
 * (the others are given up through `target.signal`, or closed as they
 * complete); rejects with the error of the
 * last failed connect once none is under way (a refused connect, the only
 * one under way, fails at once as before). A Unix socket's connect is one
 * connect: it completes or fails at once.
 *
 * `target.signal`, the caller's, gives up every connect under way and
 * starts no other: the caller's own timeout leaves none behind (each would
 * wait on its SYNs for up to two minutes, a descriptor held, and up to 32
 * of them for each connect that timed out).
 *
 * @example
 * ```ts ignore
 * const conn = await racedConnect(runtime.connect, { hostname: "127.0.0.1", port }, Date.now() + 3000);
 * ```
 */
export function racedConnect(
  connect: (target: ConnectTarget) => Promise<Connection>,
  target: ConnectTarget,
  deadline: number,
): Promise<Connection> {
  if (target.path !== undefined) return connect(target);
  const near = loopback(target.hostname ?? "127.0.0.1");
  let gap = near ? LOOPBACK_FIRST_MS : REMOTE_FIRST_MS;
  const maxGap = near ? LOOPBACK_MAX_MS : REMOTE_MAX_MS;
  // Gives up the connects still under way once one completed: each would
  // otherwise wait on its own SYNs for up to a minute or two.
  const losers = new AbortController();
  const each: ConnectTarget = { ...target, signal: losers.signal };
  const given = target.signal;
  return new Promise<Connection>((resolve, reject) => {
    let underWay = 0;
    let started = 0;
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onGivenAbort = (): void => {
      clearTimeout(timer);
      losers.abort(given?.reason);
      if (settled) return;
      settled = true;
      reject(given?.reason);
    };
    const settle = (): void => {
      settled = true;
      clearTimeout(timer);
      given?.removeEventListener("abort", onGivenAbort);
    };
    const start = (): void => {
      timer = undefined;
      started++;
      underWay++;
      let connecting: Promise<Connection>;
      try {
        connecting = connect(each);
      } catch (err) {
        // Thrown from a timer's call, it would be nobody's.
        connecting = Promise.reject(err);
      }
      connecting.then((conn) => {
        underWay--;
        if (settled) return conn.close();
        settle();
        if (underWay > 0) losers.abort();
        resolve(conn);
      }, (err) => {
        underWay--;
        if (settled || underWay > 0) return;
        settle();
        reject(err);
      });
      if (settled || started >= MAX_RACED_CONNECTS) return;
      const wait = Math.min(gap, deadline - Date.now());
      if (wait <= 0) return;
      gap = Math.min(gap * 2, maxGap);
      // A busy host runs an overdue timer before the I/O its wait let
      // complete is read: a turn of the loop goes first, so a connect the
      // kernel completed in time is not raced.
      timer = setTimeout(() => {
        timer = setTimeout(start, 0);
      }, wait);
    };
    if (given?.aborted) return onGivenAbort();
    given?.addEventListener("abort", onGivenAbort, { once: true });
    start();
  });
}
