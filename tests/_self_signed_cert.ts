/**
 * Test helper: a self-signed certificate for the gateway's TLS tests, made by
 * `openssl` for each run (Deno and Bun: node APIs only).
 */
import { execFileSync } from "node:child_process";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
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

/**
 * A certificate for localhost valid from `start` to `end` (openssl's
 * `YYYYMMDDHHMMSSZ`: an expired one, or one not valid yet), signed by a CA
 * made for it (`openssl req -x509` cannot date one in the past), in `dir`
 * as `<name>.crt` and `<name>.key` (mode 0600).
 */
export async function datedCert(
  dir: string,
  name: string,
  start: string,
  end: string,
): Promise<{ cert: string; key: string; pem: string }> {
  const at = (file: string) => join(dir, `${name}-${file}`);
  const run = (args: string[]) =>
    execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  run(["req", "-x509", ...ec, "-keyout", at("ca.key"), "-out", at("ca.crt")]
    .concat(["-days", "2", "-subj", "/CN=test CA"]));
  const key = join(dir, `${name}.key`);
  run([
    "req",
    ...ec,
    "-keyout",
    key,
    "-out",
    at("csr"),
    "-subj",
    "/CN=localhost",
  ]);
  await writeFile(at("index"), "");
  await writeFile(at("serial"), "01\n");
  await mkdir(at("certs"));
  await writeFile(
    at("ca.cnf"),
    [
      "[ca]",
      "default_ca = d",
      "[d]",
      `database = ${at("index")}`,
      `serial = ${at("serial")}`,
      `new_certs_dir = ${at("certs")}`,
      "default_md = sha256",
      "policy = p",
      "[p]",
      "commonName = supplied",
      "[ext]",
      "subjectAltName = DNS:localhost,IP:127.0.0.1",
      "basicConstraints = critical,CA:FALSE",
      "",
    ].join("\n"),
  );
  const cert = join(dir, `${name}.crt`);
  run([
    "ca",
    "-batch",
    "-notext",
    "-config",
    at("ca.cnf"),
    "-cert",
    at("ca.crt"),
    "-keyfile",
    at("ca.key"),
    "-in",
    at("csr"),
    "-out",
    cert,
    "-startdate",
    start,
    "-enddate",
    end,
    "-extensions",
    "ext",
  ]);
  await chmod(key, 0o600);
  return { cert, key, pem: await readFile(cert, "utf8") };
}
