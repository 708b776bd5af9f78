/**
 * A small TCP proxy for fault-injection tests: listens on 127.0.0.1:0,
 * forwards every accepted connection to one target, counts the bytes in each
 * direction, and can cut a connection after N more bytes in either direction
 * (mid-frame when N is smaller than the next frame).
 *
 * `proxyRuntime()` wraps a {@linkcode Runtime} so that every TCP `connect`
 * goes through a (lazily created) proxy for its target: a pool started with
 * `{ runtime, transport: "tcp" }` then talks to its workers through proxies
 * the test controls, with no change to the core.
 *
 * @example
 * ```ts ignore
 * const proxies = proxyRuntime(defaultRuntime());
 * await using pool = await Pool.start({ runtime: proxies.runtime, transport: "tcp" });
 * proxies.forPort(serverPort)!.cut("down", 30); // the next reply is cut after 30 bytes
 * ```
 *
 * @module
 */
import { defaultRuntime } from "../src/runtime/mod.ts";
import type {
  Connection,
  ConnectTarget,
  Runtime,
} from "../src/runtime/types.ts";

/** Which way bytes flow: `up` = client → target, `down` = target → client. */
export type Direction = "up" | "down";

interface Link {
  client: Deno.Conn;
  upstream: Deno.Conn;
  bytes: Record<Direction, number>;
  cutAt: Record<Direction, number>;
  closed: boolean;
  done: Promise<void>;
  /** The first bytes from the target, until its hello frame is complete. */
  head: Uint8Array | undefined;
}

/** Options of {@linkcode TcpProxy}. */
export interface TcpProxyOptions {
  /** Target host. @default {"127.0.0.1"} */
  hostname?: string;
  /** Target port. */
  port: number;
}

/** Forwards connections from 127.0.0.1:`port` to a target; see the module doc. */
export class TcpProxy implements AsyncDisposable {
  readonly port: number;
  /** Connections cut on purpose so far. */
  cuts = 0;
  /** Pids of the servers behind this proxy (from their hello events). */
  readonly pids: Set<number> = new Set();
  #listener: Deno.TcpListener;
  #target: TcpProxyOptions;
  #links = new Set<Link>();
  #armed: { direction: Direction; bytes: number } | undefined;
  #accepting: Promise<void>;
  #onCut: Array<() => void> = [];
  #held: Record<Direction, PromiseWithResolvers<void> | undefined> = {
    up: undefined,
    down: undefined,
  };

  /** Starts listening at once. */
  constructor(target: TcpProxyOptions) {
    this.#target = target;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = this.#listener.addr.port;
    this.#accepting = this.#accept();
  }

  /** Connections currently open through the proxy. */
  get links(): number {
    return this.#links.size;
  }

  /**
   * Cuts every open connection (and, if none is open, the next one) after
   * `bytes` more bytes flowed in `direction`: those bytes are forwarded, then
   * both sockets are closed. Resolves when a connection was cut.
   */
  cut(direction: Direction, bytes: number): Promise<void> {
    const done = new Promise<void>((resolve) => this.#onCut.push(resolve));
    if (this.#links.size === 0) this.#armed = { direction, bytes };
    for (const link of this.#links) {
      link.cutAt[direction] = link.bytes[direction] + bytes;
    }
    return done;
  }

  /**
   * Holds back every byte in `direction` (read, not forwarded) until the
   * returned function is called: a peer's messages arrive late, as from a
   * host that reads its socket late.
   */
  hold(direction: Direction): () => void {
    const gate = this.#held[direction] ?? Promise.withResolvers<void>();
    this.#held[direction] = gate;
    return () => {
      if (this.#held[direction] === gate) this.#held[direction] = undefined;
      gate.resolve();
    };
  }

  async #accept(): Promise<void> {
    for (;;) {
      let client: Deno.Conn;
      try {
        client = await this.#listener.accept();
      } catch {
        return; // listener closed
      }
      let upstream: Deno.Conn;
      try {
        upstream = await Deno.connect({
          hostname: this.#target.hostname ?? "127.0.0.1",
          port: this.#target.port,
        });
      } catch {
        client.close();
        continue;
      }
      const link: Link = {
        client,
        upstream,
        bytes: { up: 0, down: 0 },
        cutAt: { up: Infinity, down: Infinity },
        closed: false,
        done: Promise.resolve(),
        head: new Uint8Array(0),
      };
      if (this.#armed !== undefined) {
        link.cutAt[this.#armed.direction] = this.#armed.bytes;
        this.#armed = undefined;
      }
      this.#links.add(link);
      link.done = Promise.all([
        this.#pump(link, "up", client, upstream),
        this.#pump(link, "down", upstream, client),
      ]).then(() => {
        this.#close(link);
        this.#links.delete(link);
      });
    }
  }

  async #pump(
    link: Link,
    direction: Direction,
    from: Deno.Conn,
    to: Deno.Conn,
  ): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (!link.closed) {
        const n = await from.read(buf);
        if (n === null) break;
        if (direction === "down" && link.head !== undefined) {
          this.#sniff(link, buf.subarray(0, n));
        }
        while (this.#held[direction] !== undefined && !link.closed) {
          await this.#held[direction]!.promise;
        }
        const room = link.cutAt[direction] - link.bytes[direction];
        const take = Math.min(n, room);
        if (take > 0) await writeAll(to, buf.subarray(0, take));
        link.bytes[direction] += take;
        if (link.bytes[direction] >= link.cutAt[direction]) {
          this.cuts++;
          this.#close(link);
          for (const wake of this.#onCut.splice(0)) wake();
          break;
        }
      }
    } catch {
      // a socket broke: end the link
    }
    this.#close(link);
  }

  // The server's first frame is its hello event: it names the server's pid.
  #sniff(link: Link, chunk: Uint8Array): void {
    const head = new Uint8Array(link.head!.length + chunk.length);
    head.set(link.head!);
    head.set(chunk, link.head!.length);
    link.head = head;
    if (head.length < 25) return;
    const length = new DataView(head.buffer).getUint32(21);
    if (head.length < 25 + length) return;
    link.head = undefined;
    try {
      const hello = JSON.parse(
        new TextDecoder().decode(head.subarray(25, 25 + length)),
      );
      if (typeof hello.pid === "number") this.pids.add(hello.pid);
    } catch {
      // not a hello: leave the pid unknown
    }
  }

  #close(link: Link): void {
    if (link.closed) return;
    link.closed = true;
    for (const c of [link.client, link.upstream]) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    await this.#accepting;
    const links = [...this.#links];
    for (const link of links) this.#close(link);
    for (const direction of ["up", "down"] as const) {
      const gate = this.#held[direction];
      this.#held[direction] = undefined;
      gate?.resolve();
    }
    await Promise.all(links.map((l) => l.done));
  }

  /** Same as {@linkcode TcpProxy.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let pos = 0;
  while (pos < bytes.length) pos += await conn.write(bytes.subarray(pos));
}

/** A runtime whose TCP connects go through per-target {@linkcode TcpProxy}s. */
export interface ProxyRuntime extends AsyncDisposable {
  /** Pass this to `Pool.start({ runtime, transport: "tcp" })`. */
  readonly runtime: Runtime;
  /** The proxy in front of target port `port`, if a connection was made to it. */
  forPort(port: number): TcpProxy | undefined;
  /** The proxy in front of the server with this pid (known once it said hello). */
  forPid(pid: number): TcpProxy | undefined;
  /** Closes every proxy. */
  close(): Promise<void>;
}

/** Wraps `base` (default: the default runtime) so TCP connects are proxied. */
export function proxyRuntime(base: Runtime = defaultRuntime()): ProxyRuntime {
  const proxies = new Map<number, TcpProxy>();
  const runtime: Runtime = {
    ...base,
    connect(target: ConnectTarget): Promise<Connection> {
      if (target.path !== undefined) return base.connect(target);
      let proxy = proxies.get(target.port);
      if (proxy === undefined) {
        proxy = new TcpProxy({
          port: target.port,
          ...(target.hostname === undefined
            ? {}
            : { hostname: target.hostname }),
        });
        proxies.set(target.port, proxy);
      }
      return base.connect({ hostname: "127.0.0.1", port: proxy.port });
    },
  };
  const close = async (): Promise<void> => {
    await Promise.all([...proxies.values()].map((p) => p.close()));
  };
  return {
    runtime,
    forPort: (port) => proxies.get(port),
    forPid: (pid) => [...proxies.values()].find((p) => p.pids.has(pid)),
    close,
    [Symbol.asyncDispose]: close,
  };
}
