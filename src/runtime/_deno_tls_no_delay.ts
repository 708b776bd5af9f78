/**
 * `TCP_NODELAY` for `Deno.serve`'s TLS listeners (Linux).
 *
 * Deno 2.9 sets `TCP_NODELAY` on the connections its plain TCP listeners
 * accept, not on those of its TLS listeners, and has no option for it. Over
 * TLS a response goes out as several records (the head, then the body; over
 * HTTP/2 a HEADERS and a DATA frame): with Nagle's algorithm on, the second
 * waits for the client's ACK of the first, which a Linux client delays 40 ms.
 * Every HTTPS response of more than ~350 bytes took 44 ms on loopback (HTTP/1.1
 * and HTTP/2 alike), against 0.3 ms with the option; Bun sets it itself.
 *
 * Linux gives an accepted socket the listening socket's `TCP_NODELAY`, so it
 * is set once on the listener, through Deno's FFI and libc (`--allow-ffi`,
 * which `-A` grants): the listener is found among this process's fds as a
 * listening inet socket bound to the port (`SO_ACCEPTCONN`, `getsockname`:
 * ~27 ms for 65536 fds, once per listener), with no need for `/proc`
 * (which Deno reads only with `-A`).
 *
 * @module
 */

const SOL_SOCKET = 1;
const SO_ACCEPTCONN = 30;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const AF_INET = 2;
const AF_INET6 = 10;
/** The fds scanned: a listener opened past it keeps Nagle (and a warning). */
const MAX_FD = 65536;
const LIBC_NAMES = ["libc.so.6", "libc.so"];

const SYMBOLS = {
  getsockopt: {
    parameters: ["i32", "i32", "i32", "buffer", "buffer"],
    result: "i32",
  },
  setsockopt: {
    parameters: ["i32", "i32", "i32", "buffer", "u32"],
    result: "i32",
  },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
} as const;

/**
 * Sets `TCP_NODELAY` on this process's listening sockets bound to `port`.
 * Returns why it could not (not Linux, no FFI permission, no libc, no such
 * listener), or `undefined` when it was set on at least one.
 *
 * @example
 * ```ts ignore
 * const problem = setTlsListenerNoDelay(8443);
 * if (problem !== undefined) console.warn(problem);
 * ```
 */
export function setTlsListenerNoDelay(port: number): string | undefined {
  if (Deno.build.os !== "linux") return "only done on Linux";
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return "no FFI permission: --allow-ffi";
  }
  let libc: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
  let why = "";
  for (const name of LIBC_NAMES) {
    try {
      libc = Deno.dlopen(name, SYMBOLS);
      break;
    } catch (err) {
      why = (err as Error).message;
    }
  }
  if (libc === undefined) return `cannot load libc (${why})`;
  try {
    const { getsockopt, setsockopt, getsockname } = libc.symbols;
    const value = new Int32Array(1);
    const length = new Uint32Array(1);
    const addr = new Uint8Array(128);
    const one = new Int32Array([1]);
    let found = 0;
    let set = 0;
    for (let fd = 0; fd < MAX_FD; fd++) {
      length[0] = 4;
      if (
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, value, length) !== 0 ||
        value[0] !== 1
      ) continue;
      length[0] = addr.byteLength;
      if (getsockname(fd, addr, length) !== 0) continue;
      // sockaddr_in(6): the family in host order, the port in network order.
      const family = addr[0]! | addr[1]! << 8;
      if (family !== AF_INET && family !== AF_INET6) continue;
      if ((addr[2]! << 8 | addr[3]!) !== port) continue;
      found++;
      if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4) === 0) set++;
    }
    if (found === 0) return `no listening socket of this process on ${port}`;
    return set > 0 ? undefined : "setsockopt failed";
  } finally {
    libc.close();
  }
}
