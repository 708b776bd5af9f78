/**
 * Test helper: a self-signed certificate for the gateway's TLS tests, made by
 * `openssl` for each run (Deno and Bun: node APIs only).
 */
import { execFileSync } from "node:child_process";
import { chmod, readFile } from "node:fs/promises";
import { join } from "node:path";

/** Whether `openssl` runs here (the TLS tests are skipped without it). */
export const HAS_OPENSSL: boolean = (() => {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

/**
 * A self-signed certificate for localhost and 127.0.0.1 in `dir` as
 * `<name>.crt` (or `certFile`), its key `<name>.key` (mode 0600), and the
 * certificate's PEM text (what a client trusts).
 */
export async function selfSignedCert(
  dir: string,
  name = "tls",
  certFile = `${name}.crt`,
): Promise<{ cert: string; key: string; pem: string }> {
  const cert = join(dir, certFile);
  const key = join(dir, `${name}.key`);
  execFileSync("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "2",
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
    // Not a CA: rustls (Deno's client) refuses a CA as the server's.
    "-addext",
    "basicConstraints=critical,CA:FALSE",
  ], { stdio: ["ignore", "ignore", "pipe"] });
  await chmod(key, 0o600);
  return { cert, key, pem: await readFile(cert, "utf8") };
}
