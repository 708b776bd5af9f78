import assert from "node:assert/strict";
import { addressShareKey } from "../src/gateway/_address_share_key.ts";
import { UnreadTotal } from "../src/gateway/_grpc_unread.ts";

Deno.test("addressShareKey: IPv4 as it is, IPv4-mapped IPv6 as its IPv4, other IPv6 by its /64", () => {
  assert.equal(addressShareKey(""), "");
  assert.equal(addressShareKey("192.0.2.1"), "192.0.2.1");
  assert.equal(addressShareKey("::ffff:192.0.2.1"), "192.0.2.1");
  assert.equal(addressShareKey("::FFFF:c000:0201"), "192.0.2.1");
  assert.equal(addressShareKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(addressShareKey("2001:db8::2"), "2001:db8:0:0::/64");
  assert.equal(
    addressShareKey("2001:0DB8:0000:0000:ffff:ffff:ffff:ffff"),
    "2001:db8:0:0::/64",
  );
  assert.equal(addressShareKey("2001:db8:0:1::1"), "2001:db8:0:1::/64");
  // Link-local: one link's /64, told apart by its zone (interface).
  assert.equal(addressShareKey("fe80::1%eth0"), "fe80:0:0:0::/64%eth0");
  assert.equal(addressShareKey("fe80::2%ETH0"), "fe80:0:0:0::/64%eth0");
  assert.equal(addressShareKey("fe80::1%eth1"), "fe80:0:0:0::/64%eth1");
  assert.equal(addressShareKey("fe80::1"), "fe80:0:0:0::/64");
  // A zone on a global address changes nothing.
  assert.equal(addressShareKey("2001:db8::1%eth0"), "2001:db8:0:0::/64");
  // NAT64's well-known prefix: the IPv4 client translated.
  assert.equal(addressShareKey("64:ff9b::192.0.2.1"), "192.0.2.1");
  assert.equal(addressShareKey("64:ff9b::c000:202"), "192.0.2.2");
  assert.equal(addressShareKey("64:ff9b:1::c000:202"), "64:ff9b:1:0::/64");
  assert.equal(addressShareKey("::1"), "0:0:0:0::/64");
  assert.equal(addressShareKey("::"), "0:0:0:0::/64");
  assert.equal(addressShareKey("1:2:3:4:5:6:7:8"), "1:2:3:4::/64");
  assert.equal(addressShareKey("1:2:3:4:5:6:1.2.3.4"), "1:2:3:4::/64");
  // Not an IP address: as it is.
  for (const odd of ["1:2:3", "1::2::3", "1:2:3:4:5:6:7:8:9", "g::1", "x:y"]) {
    assert.equal(addressShareKey(odd), odd);
  }
});

/** Whether this machine lets us make a network namespace of our own. */
async function canUnshare(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("unshare", {
      args: ["-rn", "ip", "link", "set", "lo", "up"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "gRPC health watches on IPv6: the addresses of one /64 are one client's share, another /64 is another client",
  ignore: Deno.build.os !== "linux" || !(await canUnshare()),
  fn: async () => {
    const fixture = new URL("./fixtures/ipv6_watch_shares.ts", import.meta.url)
      .pathname;
    const setup = [
      "ip link set lo up",
      "ip -6 addr add 2001:db8::1/64 dev lo nodad",
      "ip -6 addr add 2001:db8::2/64 dev lo nodad",
      "ip -6 addr add 2001:db8:0:1::1/64 dev lo nodad",
      `exec "$0" run -A "$1"`,
    ].join(" && ");
    const out = await new Deno.Command("unshare", {
      args: ["-rn", "sh", "-c", setup, Deno.execPath(), fixture],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
    assert.ok(line, stdout + new TextDecoder().decode(out.stderr));
    assert.deepEqual(JSON.parse(line.slice(7)), {
      held: ["open", "open", "open", "open"],
      // 2001:db8::2 is 2001:db8::1's host: it holds the most, refused.
      sameSlash64: "8",
      // Another /64 is another client: it takes the oldest of the first.
      otherSlash64: "open",
      firstEnded: "8",
    });
  },
});

Deno.test("gRPC unread answers: the addresses of one IPv6 /64 share one count, another /64 and an IPv4 client have their own", () => {
  const total = new UnreadTotal(1000);
  const a = total.peer("2001:db8::1");
  total.add(a, 300);
  assert.equal(total.peer("2001:db8::2"), a);
  assert.equal(total.peer("2001:db8::2").bytes, 300);
  assert.equal(total.peer("2001:db8:0:1::1").bytes, 0);
  assert.equal(total.peer("::ffff:127.0.0.1").bytes, 0);
  // Over half the bound, the /64 holding it all is at its share, on any
  // of its addresses.
  total.add(total.peer("2001:db8::3"), 300);
  assert.equal(a.bytes, 600);
  assert.equal(total.heavy(total.peer("2001:db8::4")), true);
  assert.equal(total.heavy(total.peer("2001:db8:0:1::1")), false);
});
