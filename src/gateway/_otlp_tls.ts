/**
 * The certificate variables of the OpenTelemetry exporter
 * (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `..._CLIENT_CERTIFICATE`,
 * `..._CLIENT_KEY`, each under its `..._TRACES_...` form, which wins): file
 * paths, read and checked at start as the gateway's own TLS files are (a
 * `ConfigError` naming the variable), for the exporter's
 * {@linkcode Runtime.tlsFetch}.
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { ConfigError } from "../errors.ts";
import {
  CERTIFICATE,
  ENCRYPTED_KEY,
  firstPemBlock,
  PemFileError,
  PRIVATE_KEY,
  readPem,
} from "./_pem_file.ts";
import type { Runtime, TlsFetchOptions } from "../runtime/types.ts";
import { readTrusted, type TrustedRead } from "./_trusted_file_read.ts";

/** A file a variable names. */
interface NamedFile {
  path: string;
  variable: string;
}

/** The files the certificate variables name (each only when set). */
export interface OtlpTlsFiles {
  ca?: NamedFile;
  cert?: NamedFile;
  key?: NamedFile;
}

/** The variables of each, the traces' own first. */
const VARIABLES: ReadonlyArray<readonly [keyof OtlpTlsFiles, string, string]> =
  [
    [
      "ca",
      "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
      "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ],
    [
      "cert",
      "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
      "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    ],
    [
      "key",
      "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
      "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    ],
  ];

/**
 * The files the certificate variables name (empty counts as unset);
 * `undefined` when none is set.
 */
export function otlpTlsFiles(
  env: (name: string) => string | undefined,
): OtlpTlsFiles | undefined {
  const out: OtlpTlsFiles = {};
  for (const [field, traces, generic] of VARIABLES) {
    for (const variable of [traces, generic]) {
      const path = env(variable)?.trim();
      if (!path) continue;
      out[field] = { path, variable };
      break;
    }
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

/**
 * The PEM texts of `files` (paths relative to `cwd`), checked: the CA and
 * the client's certificate parse, the key parses, is not encrypted and is
 * the certificate's, and a client certificate comes with its key (and the
 * key with its certificate); the CA and the key are refused when another
 * user owns them or could replace them (as `tls.key` is).
 */
export async function readOtlpTls(
  runtime: Runtime,
  files: OtlpTlsFiles,
  resolve: (path: string) => string,
): Promise<TlsFetchOptions> {
  const wrong = (file: NamedFile, why: string, cause?: unknown) =>
    new ConfigError(
      `${file.variable}: ${file.path} ${why}`,
      {
        ...(cause === undefined ? {} : { cause }),
        details: { source: file.variable },
      },
    );
  if ((files.cert === undefined) !== (files.key === undefined)) {
    const given = (files.cert ?? files.key)!;
    throw wrong(
      given,
      files.cert === undefined
        ? "is a client key without a client certificate: set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE too"
        : "is a client certificate without its key: set OTEL_EXPORTER_OTLP_CLIENT_KEY too",
    );
  }
  // The CA decides whom the exporter trusts with the spans and its
  // headers (often the collector's API key); the client key is the
  // gateway's identity to the collector. Either, another user's or
  // replaceable by one, gives them that (a CA of theirs: a collector of
  // theirs in between): checked as read (`readTrusted`: the file read is
  // the one checked), as the gateway's own key. The client certificate is
  // public, and checked against the key.
  const read = async (file: NamedFile, trust?: string): Promise<string> => {
    const path = resolve(file.path);
    let got: TrustedRead<string>;
    try {
      got = trust === undefined
        ? await readPem(runtime, path)
        : await readTrusted(runtime, path, () => readPem(runtime, path));
    } catch (err) {
      const message = (err as Error).message;
      throw wrong(
        file,
        err instanceof PemFileError ? message : `cannot be read: ${message}`,
        err,
      );
    }
    if (got.untrusted !== undefined) {
      throw wrong(
        file,
        `cannot be used: ${got.untrusted}, and whoever owns or can replace it ${trust}: make it, and its directory, this user's or root's, writable by no one else, below directories no other user can change`,
      );
    }
    return got.value;
  };
  const certificate = (file: NamedFile, pem: string): X509Certificate => {
    try {
      return new X509Certificate(firstPemBlock(pem, CERTIFICATE) ?? pem);
    } catch (err) {
      throw wrong(
        file,
        `is not a PEM certificate: ${(err as Error).message}`,
        err,
      );
    }
  };
  const out: TlsFetchOptions = {};
  if (files.ca !== undefined) {
    out.ca = await read(
      files.ca,
      "chooses the collector the spans and headers go to",
    );
    certificate(files.ca, out.ca);
  }
  if (files.cert !== undefined && files.key !== undefined) {
    const cert = await read(files.cert);
    const key = await read(
      files.key,
      "can pass for this gateway to the collector",
    );
    const parsed = certificate(files.cert, cert);
    if (ENCRYPTED_KEY.test(key)) {
      throw wrong(
        files.key,
        "is encrypted (a passphrase), which pyproxy cannot use: write it decrypted (openssl pkey -in key.pem -out plain.pem)",
      );
    }
    let privateKey: ReturnType<typeof createPrivateKey>;
    try {
      privateKey = createPrivateKey(firstPemBlock(key, PRIVATE_KEY) ?? key);
    } catch (err) {
      throw wrong(
        files.key,
        `is not a PEM private key: ${(err as Error).message}`,
        err,
      );
    }
    if (!parsed.checkPrivateKey(privateKey)) {
      throw wrong(
        files.key,
        `is not the private key of the client certificate ${files.cert.path} (${files.cert.variable})`,
      );
    }
    out.cert = cert;
    out.key = key;
  }
  return out;
}
