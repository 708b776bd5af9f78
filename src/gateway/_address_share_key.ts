/**
 * The key under which a client's address is counted where the gateway
 * shares a bound among addresses (gRPC health watches, unread gRPC
 * answers): an IPv4 address as it is, an IPv4-mapped IPv6 address
 * (`::ffff:192.0.2.1`, what a dual-stack listener sees of an IPv4 client)
 * as its IPv4 (so is one of NAT64's `64:ff9b::/96`), and any other IPv6
 * address by its /64 (`2001:db8:0:1::/64`; a link-local one with its zone,
 * `fe80:0:0:0::/64%eth0`).
 * One IPv6 host usually has a whole /64 to itself (SLAAC, privacy
 * addresses, a provider's delegation), so counting its addresses one by
 * one let a single client take a share per address: every share.
 * docs/gateway.md, "Health checking".
 *
 * @module
 */

/**
 * The share key of `address` (a socket's `remoteAddress`); `""` stays `""`
 * (unknown), and what is not an IP address is returned as it is.
 *
 * @example
 * ```ts ignore
 * addressShareKey("2001:db8::1"); // "2001:db8:0:0::/64"
 * addressShareKey("2001:db8::2"); // "2001:db8:0:0::/64"
 * addressShareKey("::ffff:192.0.2.1"); // "192.0.2.1"
 * addressShareKey("192.0.2.1"); // "192.0.2.1"
 * ```
 */
export function addressShareKey(address: string): string {
  if (!address.includes(":")) return address;
  const zone = address.indexOf("%");
  const ip = (zone === -1 ? address : address.slice(0, zone)).toLowerCase();
  const groups = hextets(ip);
  if (groups === undefined) return address;
  // ::ffff:a.b.c.d (mapped), and 64:ff9b::a.b.c.d (NAT64's well-known
  // prefix: IPv4 clients translated, SIIT-DC), count as the IPv4 client
  // each is: grouped by /64, every IPv4 client was one.
  if (
    (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 &&
      groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) ||
    (groups[0] === 0x64 && groups[1] === 0xff9b && groups[2] === 0 &&
      groups[3] === 0 && groups[4] === 0 && groups[5] === 0)
  ) {
    return `${groups[6]! >> 8}.${groups[6]! & 0xff}.${groups[7]! >> 8}.${
      groups[7]! & 0xff
    }`;
  }
  const prefix = `${groups[0]!.toString(16)}:${groups[1]!.toString(16)}:${
    groups[2]!.toString(16)
  }:${groups[3]!.toString(16)}::/64`;
  // A link-local address (fe80::/10) is one link's: its zone (the
  // interface) tells the links apart, and the whole of fe80::/64 on one.
  return zone === -1 || (groups[0]! & 0xffc0) !== 0xfe80
    ? prefix
    : `${prefix}${address.slice(zone).toLowerCase()}`;
}

/** The 8 groups of an IPv6 address, `undefined` if it is not one. */
function hextets(ip: string): number[] | undefined {
  const halves = ip.split("::");
  if (halves.length > 2) return undefined;
  const parse = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (const [i, piece] of pieces.entries()) {
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = piece.split(".");
        if (v4.length !== 4) return undefined;
        const bytes = v4.map((b) => /^\d{1,3}$/.test(b) ? Number(b) : 256);
        if (bytes.some((b) => b > 255)) return undefined;
        out.push((bytes[0]! << 8) | bytes[1]!, (bytes[2]! << 8) | bytes[3]!);
      } else if (/^[0-9a-f]{1,4}$/.test(piece)) {
        out.push(parseInt(piece, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = parse(halves[0]!);
  if (head === undefined) return undefined;
  if (halves.length === 1) return head.length === 8 ? head : undefined;
  const tail = parse(halves[1]!);
  if (tail === undefined || head.length + tail.length > 7) return undefined;
  return [
    ...head,
    ...new Array<number>(8 - head.length - tail.length).fill(0),
    ...tail,
  ];
}
