/**
 * docs/gateway.md's Kubernetes manifest ("Running on Kubernetes") is a
 * Deployment that works as written: a platform engineer copies it. Parsed as
 * the API server reads YAML (1.1: `0440` is octal), checked for what the
 * kubelet would refuse or what would leave the pod unreachable, then run: its
 * `args` and `env` start `serve` as the container would (only those
 * variables, no terminal, its volumes made temporary directories), its probes
 * are asked, a call is made with the token from its Secret, and SIGTERM stops
 * it with status 0 within `terminationGracePeriodSeconds`.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { tempDir } from "./_harness.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

const ROOT = new URL("..", import.meta.url).pathname;

// The manifest's shape, as far as these tests read it.
interface Probe {
  httpGet: { path: string; port: number; scheme?: string };
  failureThreshold?: number;
  periodSeconds?: number;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args: string[];
  workingDir: string;
  ports: { containerPort: number }[];
  env: { name: string; value: string }[];
  volumeMounts: { name: string; mountPath: string }[];
  startupProbe: Probe;
  readinessProbe: Probe;
  livenessProbe: Probe;
  lifecycle?: { preStop?: { sleep?: { seconds: number } } };
}
interface Volume {
  name: string;
  secret?: { secretName: string; defaultMode?: number };
  configMap?: { name: string };
  emptyDir?: Record<string, unknown>;
}
interface Deployment {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds: number;
        containers: Container[];
        volumes: Volume[];
      };
    };
  };
}

function manifest(): Deployment {
  const doc = Deno.readTextFileSync(`${ROOT}docs/gateway.md`);
  const section = doc.slice(doc.indexOf("\n## Running on Kubernetes\n"));
  const block = /```yaml\n([\s\S]*?)```/.exec(section);
  assert.ok(block?.[1], "no yaml block under 'Running on Kubernetes'");
  return parse(block[1], { version: "1.1" }) as Deployment;
}

/** `--name=value` or `--name value` in `args`. */
function flag(args: string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg.startsWith(`${name}=`)) return arg.slice(name.length + 1);
    if (arg === name) return args[i + 1];
  }
  return undefined;
}

// serve's default limits.shutdownGrace (ms): the drain the grace must outlast.
const SHUTDOWN_GRACE_MS = 10_000;

Deno.test("the Kubernetes manifest of docs/gateway.md is a Deployment whose probes, mounts and grace fit its serve args", () => {
  const deployment = manifest();
  assert.equal(deployment.apiVersion, "apps/v1");
  assert.equal(deployment.kind, "Deployment");
  const pod = deployment.spec.template;
  for (
    const [key, value] of Object.entries(deployment.spec.selector.matchLabels)
  ) {
    assert.equal(pod.metadata.labels[key], value, "selector matches the pod");
  }
  const [container] = pod.spec.containers;
  assert.ok(container && container.name && container.image);
  // The image's entrypoint (tini) stays PID 1: a command would replace it.
  assert.equal(container.command, undefined);
  const args = container.args;
  assert.deepEqual(args.slice(0, 1), ["run"]);
  assert.ok(args.includes("mod.ts") && args.includes("serve"));
  // serve binds 127.0.0.1 unless told: the kubelet probes the pod's address.
  const host = flag(args, "--host");
  assert.ok(host === "0.0.0.0" || host === "::", `--host is ${host}`);
  const port = Number(flag(args, "--port"));
  assert.deepEqual(container.ports.map((p) => p.containerPort), [port]);
  const tls = flag(args, "--tls-cert") !== undefined;
  for (
    const probe of [
      container.startupProbe,
      container.readinessProbe,
      container.livenessProbe,
    ]
  ) {
    assert.equal(probe.httpGet.path, "/healthz", "the token-free route");
    assert.equal(probe.httpGet.port, port);
    assert.equal(probe.httpGet.scheme ?? "HTTP", tls ? "HTTPS" : "HTTP");
  }
  // A liveness probe must outlast failedRetryAfter (60 s) plus a start.
  const liveness = container.livenessProbe;
  assert.ok(
    (liveness.failureThreshold ?? 3) * (liveness.periodSeconds ?? 10) > 60,
  );
  // The grace covers the preStop sleep, the shutdown delay and the drain.
  const preStop = container.lifecycle?.preStop?.sleep?.seconds ?? 0;
  const delay = Number(flag(args, "--shutdown-delay") ?? 0) / 1000;
  assert.ok(
    pod.spec.terminationGracePeriodSeconds >
      preStop + delay + SHUTDOWN_GRACE_MS / 1000,
  );
  // Every mount has its volume, and every file the args or env name is in
  // a mount or the image's working directory (the root is read-only).
  const volumes = new Set(pod.spec.volumes.map((v) => v.name));
  for (const mount of container.volumeMounts) {
    assert.ok(volumes.has(mount.name), `no volume ${mount.name}`);
  }
  const roots = [
    container.workingDir,
    ...container.volumeMounts.map((m) => m.mountPath),
  ];
  const paths = [
    ...args.map((a) => a.includes("=") ? a.slice(a.indexOf("=") + 1) : a),
    ...container.env.map((e) => e.value),
  ].filter((value) => value.startsWith("/"));
  assert.ok(paths.length > 0);
  for (const path of paths) {
    assert.ok(
      roots.some((root) => path.startsWith(`${root}/`)),
      `${path} is in no volume: the read-only root has no such file`,
    );
  }
  // The temp directory (the workers' sockets) must be writable.
  assert.ok(container.volumeMounts.some((m) => m.mountPath === "/tmp"));
});

Deno.test({
  name:
    "the Kubernetes manifest of docs/gateway.md runs: serve from its args and env answers its probes and a call with its Secret's token, and stops on SIGTERM with status 0",
  ignore: !HAS_OPENSSL,
  async fn() {
    const deployment = manifest();
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0]!;
    await using dir = await tempDir("pyproxy-k8s-");
    // Each volume as a directory, filled as the kubelet would.
    const token = "k8s-manifest-token-0123456789abcdef";
    let pem = "";
    const mounted = new Map<string, string>();
    for (const mount of container.volumeMounts) {
      const volume = pod.volumes.find((v) => v.name === mount.name)!;
      const path = `${dir.path}/${mount.name}`;
      await Deno.mkdir(path);
      if (volume.secret?.secretName.endsWith("-token")) {
        await Deno.writeTextFile(`${path}/token`, `${token}\n`);
      } else if (volume.secret?.secretName.endsWith("-tls")) {
        pem = (await selfSignedCert(path, "tls")).pem;
      } else if (volume.configMap) {
        await Deno.writeTextFile(`${path}/ca.crt`, pem);
      }
      if (volume.secret?.defaultMode !== undefined) {
        for await (const entry of Deno.readDir(path)) {
          await Deno.chmod(`${path}/${entry.name}`, volume.secret.defaultMode);
        }
      }
      mounted.set(mount.mountPath, path);
    }
    const local = (value: string): string => {
      for (const [mountPath, path] of mounted) {
        if (value.includes(`${mountPath}/`)) {
          return value.replace(`${mountPath}/`, `${path}/`);
        }
      }
      return value;
    };
    // Port 0 for a free one; the rest as written, the paths mapped.
    const args = container.args.map((arg) =>
      arg === `--port=${flag(container.args, "--port")}`
        ? "--port=0"
        : local(arg)
    );
    const env: Record<string, string> = {
      // What the image gives: a PATH with deno and python3, Deno's cache.
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: Deno.env.get("HOME") ?? "/",
      TMPDIR: mounted.get("/tmp") ?? "/tmp",
    };
    const denoDir = Deno.env.get("DENO_DIR");
    if (denoDir) env.DENO_DIR = denoDir;
    for (const { name, value } of container.env) {
      // No collector here: the endpoint would only be called for spans.
      if (!name.startsWith("OTEL_")) env[name] = local(value);
    }
    const child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT, // the image's workingDir
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const stdout = child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    using client = Deno.createHttpClient({ caCerts: [pem] });
    try {
      let banner = "";
      while (!/dashboard: .*\n/.test(banner)) {
        const { value, done } = await stdout.read();
        if (done) assert.fail(`serve ended: ${banner}${await stderr}`);
        banner += value;
      }
      const port = /listening on https:\/\/[^:]+:(\d+)/.exec(banner)?.[1];
      assert.ok(port, banner);
      const base = `https://localhost:${port}`;
      for (
        const probe of [
          container.startupProbe,
          container.readinessProbe,
          container.livenessProbe,
        ]
      ) {
        const res = await fetch(`${base}${probe.httpGet.path}`, { client });
        assert.equal(res.status, 200);
        assert.equal((await res.json()).status, "ok");
      }
      const call = (headers: Record<string, string>) =>
        fetch(`${base}/v1/models/echo/execute`, {
          client,
          method: "POST",
          headers,
          body: '{"x":1}',
        });
      const open = await call({});
      assert.equal(open.status, 401);
      await open.body?.cancel();
      const called = await call({ authorization: `Bearer ${token}` });
      assert.equal(called.status, 200);
      assert.deepEqual(await called.json(), { x: 1 });
      const stopped = Date.now();
      child.kill("SIGTERM");
      const status = await child.status;
      assert.equal(status.code, 0);
      assert.ok(
        Date.now() - stopped < pod.terminationGracePeriodSeconds * 1000,
      );
      // What a log collector gets on stderr: JSON lines, but for Deno's own
      // warning box (a cache that did not record it for this directory).
      const lines = (await stderr).split("\n").filter((line) => line !== "");
      const records = lines.filter((line) => !/^[╭│╰]/.test(line));
      assert.ok(records.length > 0);
      for (const line of records) {
        assert.equal(typeof JSON.parse(line).level, "string", line);
      }
      assert.ok(!(await stderr).includes("\x1b["), "no colour codes");
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // ended
      }
      await child.status;
      await stdout.cancel().catch(() => {});
      await stderr;
    }
  },
});
