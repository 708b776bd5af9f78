/**
 * The kernel's count of OOM kills in the host's memory cgroup, read to tell
 * a worker killed by the OOM killer from one killed by another SIGKILL
 * (`kill -9`): the exit status is the same, and Kubernetes reports
 * `OOMKilled` only for a container's main process.
 *
 * @module
 */
import type { Runtime } from "./runtime/types.ts";

/** What a worker's SIGKILL exit's reason adds when the OOM killer's it was. */
export const OUT_OF_MEMORY = " (out of memory: the kernel's OOM killer)";

/**
 * Where the count may be, in order, from `/proc/self/cgroup`'s text: cgroup
 * v1's `memory.oom_control` of the memory controller's group, cgroup v2's
 * `memory.events` (its `oom_kill` counts the group's subtree), each also at
 * the mount's root (a container whose `/proc/self/cgroup` names the host's
 * path while its own group is mounted at the root).
 */
function candidates(procCgroup: string): string[] {
  const v1: string[] = [];
  const v2: string[] = [];
  for (const line of procCgroup.split("\n")) {
    const [id, controllers, ...rest] = line.split(":");
    const path = rest.join(":").replace(/\/+$/, "");
    if (id === undefined || controllers === undefined || rest.length === 0) {
      continue;
    }
    if (controllers.split(",").includes("memory")) {
      v1.push(
        `/sys/fs/cgroup/memory${path}/memory.oom_control`,
        "/sys/fs/cgroup/memory/memory.oom_control",
      );
    } else if (id === "0" && controllers === "") {
      v2.push(
        `/sys/fs/cgroup${path}/memory.events`,
        "/sys/fs/cgroup/memory.events",
      );
    }
  }
  return [...v1, ...v2];
}

/** The `oom_kill N` line's N in a cgroup file's text, if any. */
function oomKillLine(text: string): number | undefined {
  const n = /^oom_kill (\d+)$/m.exec(text)?.[1];
  return n === undefined ? undefined : Number(n);
}

/**
 * Counts the OOM kills of the host's memory cgroup (Linux; nothing
 * elsewhere) for a pool's workers. A worker that becomes ready takes the
 * count as it is ({@linkcode OomKills.note}); a worker killed by SIGKILL
 * from outside asks whether a kill was counted since that nobody claimed
 * ({@linkcode OomKills.claim}): each kill counted is claimed once, so
 * workers killed together are each told. A kill of another process of the
 * group (a model's subprocess) claimed before the next worker is ready
 * would be laid on a worker `kill -9` ended meanwhile.
 *
 * @example
 * ```ts ignore
 * const oom = new OomKills(runtime);
 * await oom.note(); // a worker is ready
 * if (await oom.claim()) reason += " (out of memory: the kernel's OOM killer)";
 * ```
 */
export class OomKills {
  #runtime: Runtime;
  /** The file holding the count (`null`: none here; unset: not looked for yet). */
  #file: string | null | undefined;
  #looking: Promise<string | null> | undefined;
  /** The count every kill up to which is accounted for. */
  #seen: number | undefined;
  /** `note`, `groupKill` and `claim` in flight: {@linkcode OomKills.settled} waits for them. */
  #busy = new Set<Promise<unknown>>();

  constructor(runtime: Runtime) {
    this.#runtime = runtime;
  }

  /**
   * Resolves once none of `note`, `groupKill` and `claim` is in flight: a
   * pool's close waits for it, so no read of the cgroup's files outlives the
   * pool. (A worker's ready `note` and the start's `groupKill` are not
   * awaited by anyone: under load one's read was still open when the close
   * ended, a leak Deno's test sanitizers reported.)
   */
  async settled(): Promise<void> {
    while (this.#busy.size > 0) await Promise.allSettled([...this.#busy]);
  }

  #track<T>(run: Promise<T>): Promise<T> {
    this.#busy.add(run);
    const done = () => this.#busy.delete(run);
    run.then(done, done);
    return run;
  }

  /** Takes the current count as accounted for (a worker became ready). */
  note(): Promise<void> {
    return this.#track(this.#note());
  }

  async #note(): Promise<void> {
    const count = await this.#count();
    // Never lowered: a count read before a kill that another worker's exit
    // claimed meanwhile would give that kill back, to be laid on the next
    // SIGKILL (a kill -9) as the OOM killer's.
    if (count !== undefined) this.#seen = Math.max(this.#seen ?? 0, count);
  }

  /**
   * Whether the OOM killer kills the host's memory cgroup as a whole
   * (cgroup v2's `memory.oom.group` is 1 beside its `memory.events`, as
   * Kubernetes 1.28+ sets on a container's group unless its kubelet has
   * `singleProcessOOMKill`): an OOM kill of a worker then ends every
   * process of the group, the host too, whatever the workers'
   * `oom_score_adj`. False where it cannot tell (cgroup v1, no file).
   */
  groupKill(): Promise<boolean> {
    return this.#track(this.#groupKill());
  }

  async #groupKill(): Promise<boolean> {
    await this.#count();
    const file = this.#file;
    if (file === null || file === undefined) return false;
    if (!file.endsWith("/memory.events")) return false;
    const group = await this.#text(
      `${file.slice(0, -"memory.events".length)}memory.oom.group`,
    );
    return group?.trim() === "1";
  }

  /** Whether a kill was counted that no worker claimed yet; claims it. */
  claim(): Promise<boolean> {
    return this.#track(this.#claim());
  }

  async #claim(): Promise<boolean> {
    const count = await this.#count();
    if (count === undefined || this.#seen === undefined) return false;
    if (count <= this.#seen) return false;
    this.#seen++;
    return true;
  }

  async #count(): Promise<number | undefined> {
    const file = this.#file ?? await (this.#looking ??= this.#find());
    this.#file = file;
    return file === null ? undefined : await this.#read(file);
  }

  async #find(): Promise<string | null> {
    const text = await this.#text("/proc/self/cgroup");
    if (text === undefined) return null;
    for (const file of candidates(text)) {
      if (await this.#read(file) !== undefined) return file;
    }
    return null;
  }

  async #read(file: string): Promise<number | undefined> {
    const text = await this.#text(file);
    return text === undefined ? undefined : oomKillLine(text);
  }

  async #text(file: string): Promise<string | undefined> {
    try {
      return new TextDecoder().decode(await this.#runtime.readFile(file));
    } catch {
      return undefined;
    }
  }
}
