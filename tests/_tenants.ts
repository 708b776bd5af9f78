/**
 * The tokens and the model that the tenant-channel tests share: an
 * operator's token, two tenants' (A and B, with their token ids), and a
 * model that publishes to the calling tenant's channel.
 */
import { tokenId } from "../src/gateway/security.ts";

export const OPERATOR = "9f1c6ad2e07b4b3c8e5d1a6f2b7c9e04";
export const TENANT_A = "4a8e2c7f1b9d3e6a0c5f8b2d7e1a4c9f";
export const TENANT_B = "c3e7a1f9b5d2e8c4a6f0b3d9e7c1a5f2";
/** Tenant A's token id (its channels' prefix). */
export const A: string = tokenId(TENANT_A);
/** Tenant B's token id. */
export const B: string = tokenId(TENANT_B);

/** The `authorization` header of `token`. */
export const bearer = (token: string): { authorization: string } => ({
  authorization: `Bearer ${token}`,
});

/** Publishes to the calling tenant's channel `<caller>.<topic>`. */
export const TENANT_PUBLISHER: Record<string, string> = {
  "tenant_pub.py": `from pyproxy import host


class TenantPub:
    def execute(self, msg):
        return host.publish("%s.%s" % (host.caller(), msg["topic"]), msg["data"])
`,
};
