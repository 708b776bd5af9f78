/**
 * Reads and checks the gateway's TLS files (`tls.cert`, `tls.key`) at
 * start: a missing, unreadable or invalid file, or a key that is not the
 * certificate's, is a {@linkcode ConfigError} naming the option, not a
 * runtime's TLS error at the first handshake.
 *
 * @module
 */
import { againIfGone } from "./_again_if_gone.ts";
import { createPrivateKey, X509Certificate } from "node:crypto";
import type { Logger } from "@logtape/logtape";
import { ConfigError } from "../errors.ts";
import type { Runtime } from "../runtime/types.ts";
import {
  CERTIFICATE,
  ENCRYPTED_KEY,
  firstPemBlock,
  pemBlocks,
  PRIVATE_KEY,
  readPem,
} from "./_pem_file.ts";
import { forgetReadable, openToOthers } from "./_secret_file_mode.ts";
import type { ReadableWarnings } from "./_token_files.ts";
import { readTrusted, type TrustedRead } from "./_trusted_file_read.ts";

/**
 * The PEM texts of `tls.cert` and `tls.key`, checked: the certificate
 * parses, the key parses and is the certificate's. A pair that does not
 * check is read again while the files change under the reads (up to
 * {@linkcode PAIR_READS} reads: a swap between the certificate's read and
 * the key's). A key file that others may read is served, with a warning
 * (ssh refuses such a key; a container's mounted secret often has such
 * bits, and refusing would only teach users to copy it elsewhere): with
 * `warned`, once per file and mode ({@linkcode warnReadableTlsKey}). A
 * key file another user owns or could replace is refused, checked as read
 * (`readTrusted`: the file whose text is served is the one checked).
 */
export async function readTls(
  runtime: Runtime,
  paths: { cert: string; key: string },
  configPath: string | undefined,
  logger: Logger,
  warned?: ReadableWarnings,
): Promise<{ cert: string; key: string }> {
  const where = (option: "cert" | "key"): string =>
    `(--tls-${option}, or tls.${option} in ${configPath ?? "pyproxy.json"})`;
  const read = async (option: "cert" | "key"): Promise<string> => {
    const path = paths[option];
    let got: TrustedRead<string>;
    try {
      // Not a FIFO or a device (a start or a reload would hang on it), and
      // bounded.
      const pem = () => againIfGone(() => readPem(runtime, path));
      // The key: checked as read (`readTrusted`), the certificate not.
      got = option === "key"
        ? await readTrusted(runtime, path, pem)
        : await pem();
    } catch (err) {
      throw new ConfigError(
        `tls.${option}: cannot read ${path}: ${(err as Error).message} ${
          where(option)
        }`,
        { cause: err, details: { path: `tls.${option}` } },
      );
    }
    if (got.untrusted !== undefined) {
      throw untrustedKey(path, got.untrusted, where(option));
    }
    return got.value;
  };
  let cert = await read("cert");
  let key = await read("key");
  // A swap between the two reads (the kubelet's `..data`, a renewal
  // moved in place) pairs the new certificate with the old key, or the
  // other way round: a pair that does not check is read again, as long as
  // a read finds other text (a copy by hand, one file and then the other,
  // reads the same twice and fails at once).
  let certificate: X509Certificate;
  for (let reads = 1;; reads++) {
    try {
      certificate = checkPair(paths, cert, key, where);
      break;
    } catch (err) {
      if (reads === PAIR_READS) throw err;
      const certAgain = await read("cert");
      const keyAgain = await read("key");
      if (certAgain === cert && keyAgain === key) throw err;
      cert = certAgain;
      key = keyAgain;
    }
  }
  warnOutOfDate(certificate, paths.cert, logger);
  await warnReadableTlsKey(runtime, paths.key, logger, warned);
  return { cert, key };
}

/**
 * The {@linkcode ConfigError} of a key file another user owns or could
 * replace (it, its directory, a link to it or a directory above, as a
 * token file), or of a key read from a file of theirs (`readTrusted`: one
 * swapped in for the read). Its mode alone was checked, for a warning: the
 * owner reads the key whatever its mode, and whoever can replace it (and
 * the certificate beside it) has a key of theirs served as the gateway's;
 * either way they can pass for the gateway. The certificate is not
 * checked: it is public, and one put in its place alone is not the key's
 * (the pair check refuses it) or is one of the key's own, which a client
 * checks as it would the real one.
 */
function untrustedKey(path: string, why: string, where: string): ConfigError {
  return new ConfigError(
    `tls.key: cannot use ${path}: ${why}, and another user who owns or can replace the key can pass for this gateway (read it, or have a key and certificate of theirs served): make it, and its directory, this user's or root's, writable by no one else, below directories no other user can change (a mounted Kubernetes secret is root's) ${where}`,
    { details: { path: "tls.key", reason: why } },
  );
}

/**
 * Warns of a certificate expired, or not valid yet: served all the same
 * (it is the operator's, and what a client checks), but every client that
 * checks it refuses the connections, and the log's other lines say only
 * `valid until <date>`.
 */
function warnOutOfDate(
  certificate: X509Certificate,
  path: string,
  logger: Logger,
): void {
  const now = Date.now();
  if (Date.parse(certificate.validTo) < now) {
    logger.warn(
      "TLS certificate {path} expired on {date}: clients that check it refuse the connections (it is served all the same)",
      { path, date: certificate.validTo },
    );
  } else if (Date.parse(certificate.validFrom) > now) {
    logger.warn(
      "TLS certificate {path} is not valid before {date}: clients that check it refuse the connections until then (it is served all the same; this machine's clock behind?)",
      { path, date: certificate.validFrom },
    );
  }
}

/**
 * Warns of a TLS key file that others may read (its real path, through
 * the links: a Kubernetes secret is a link). With `warned`, once per file
 * and mode, as the token files' warning (`warnReadableTokenFiles`): the
 * TLS files' poll checks the key's mode at each poll, since a chmod alone
 * changes no text it compares, and warns again only of another file (the
 * kubelet's rotation makes a new one) or another mode.
 */
export async function warnReadableTlsKey(
  runtime: Runtime,
  path: string,
  logger: Logger,
  warned?: ReadableWarnings,
): Promise<void> {
  if (runtime.owner === undefined) return;
  const real = await runtime.realPath(path);
  const owner = await runtime.owner(real);
  if (owner == null || !openToOthers(owner, runtime.uid?.())) {
    forgetReadable(warned, "tls.key", real);
    return;
  }
  const mode = (owner.mode & 0o777).toString(8);
  const key = `${mode} ${real}`;
  if (warned?.get("tls.key") === key) return;
  warned?.set("tls.key", key);
  logger.warn(
    "TLS key {path} may be read by other users (mode {mode}): chmod 600 it (a Kubernetes secret: defaultMode 0400, and the pod's fsGroup for a non-root user)",
    { path, mode },
  );
}

/**
 * Reads of the pair {@linkcode readTls} makes at most while the files
 * change under it (a swap between its reads of the certificate and the
 * key).
 */
const PAIR_READS = 3;

/**
 * The certificate of a pair that can be served; else throws its
 * {@linkcode ConfigError}: the certificate does not parse, the key does
 * not, is encrypted, or is not the certificate's.
 */
function checkPair(
  paths: { cert: string; key: string },
  cert: string,
  key: string,
  where: (option: "cert" | "key") => string,
): X509Certificate {
  let certificate: X509Certificate;
  try {
    // The first certificate's block: a file with the key first (both in
    // one file, as HAProxy's) is served by both runtimes, but Deno's
    // `node:crypto` parses only a text's first block.
    certificate = new X509Certificate(firstPemBlock(cert, CERTIFICATE) ?? cert);
  } catch (err) {
    throw new ConfigError(
      `tls.cert: ${paths.cert} is not a PEM certificate: ${
        (err as Error).message
      } ${where("cert")}`,
      { cause: err, details: { path: "tls.cert" } },
    );
  }
  // A key with a passphrase: createPrivateKey's own error says only
  // "interrupted or cancelled" (it asked for none), and neither runtime's
  // TLS takes one.
  if (ENCRYPTED_KEY.test(key)) {
    throw new ConfigError(
      `tls.key: ${paths.key} is encrypted (a passphrase), which pyproxy cannot use: write it decrypted to a file only the gateway's user may read (openssl pkey -in ${paths.key} -out key.pem; chmod 600 key.pem) ${
        where("key")
      }`,
      { details: { path: "tls.key" } },
    );
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(firstPemBlock(key, PRIVATE_KEY) ?? key);
  } catch (err) {
    throw new ConfigError(
      `tls.key: ${paths.key} is not a PEM private key: ${
        (err as Error).message
      } ${where("key")}`,
      { cause: err, details: { path: "tls.key" } },
    );
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    // A chain file (leaf, then intermediates) put in another order.
    const other = chainIndex(cert, privateKey);
    throw new ConfigError(
      other === undefined
        ? `tls.key: ${paths.key} is not the private key of the certificate ${paths.cert} ${
          where("key")
        }`
        : `tls.key: ${paths.key} is the private key of certificate ${
          other + 1
        } of ${paths.cert}, not of the first: the server's certificate comes first in the file, then its intermediates ${
          where("key")
        }`,
      { details: { path: "tls.key" } },
    );
  }
  return certificate;
}

/** The index of the certificate of `pem` (a chain) that `key` is the key of. */
function chainIndex(
  pem: string,
  key: ReturnType<typeof createPrivateKey>,
): number | undefined {
  const blocks = [...pemBlocks(pem, CERTIFICATE)];
  for (let i = 1; i < blocks.length; i++) {
    try {
      if (new X509Certificate(blocks[i]!).checkPrivateKey(key)) return i;
    } catch {
      // Not a certificate: the runtime's TLS would say so.
    }
  }
  return undefined;
}
