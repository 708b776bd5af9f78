/**
 * Whether a secret's file (a token file, a TLS key) is open to other
 * users, for the warning that says so.
 *
 * @module
 */

/**
 * True when `owner.mode` lets users other than the process's read the
 * file: its "other" bits always; its group bits only when the process
 * needs them not. A file of another user (a mounted Kubernetes secret is
 * root's, group-readable by the pod's `fsGroup`, whatever its
 * `defaultMode`; Debian's `/etc/ssl/private` keys are `root:ssl-cert`
 * 0640), read by a process that is neither that user nor root, is read
 * through its group: chmod 600 would lock the process out. A process whose
 * user id is unknown is warned as its own file's.
 */
export function openToOthers(
  owner: { uid: number; mode: number },
  uid: number | undefined,
): boolean {
  if ((owner.mode & 0o007) !== 0) return true;
  if ((owner.mode & 0o070) === 0) return false;
  return uid === undefined || uid === 0 || uid === owner.uid;
}

/**
 * Forgets the warning about `option`'s file when it was about `real` (now
 * private: warned about again if it becomes readable), and only then: a
 * check of a configuration a reload has replaced since (another file) must
 * not forget the warning about the new one.
 *
 * @example
 * ```ts ignore
 * forgetReadable(warned, "tokenFile", "/run/secrets/token");
 * ```
 */
export function forgetReadable(
  warned: Map<string, string> | undefined,
  option: string,
  real: string,
): void {
  const was = warned?.get(option);
  if (was !== undefined && was.slice(was.indexOf(" ") + 1) === real) {
    warned!.delete(option);
  }
}
