/**
 * Test helper: a strict parser of the Prometheus text exposition format
 * (0.0.4), failing on anything a strict scraper refuses, and a lookup of
 * one sample's value.
 */
import assert from "node:assert/strict";

export interface Family {
  type: string;
  help: string;
  samples: Array<
    { name: string; labels: Record<string, string>; value: number }
  >;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const name = LABEL_NAME.exec(text.slice(i))?.[0];
    assert.ok(name, `line ${line}: label name expected in ${text}`);
    i += name.length;
    assert.equal(text.slice(i, i + 2), '="', `line ${line}: ="" expected`);
    i += 2;
    let value = "";
    for (;;) {
      const c = text[i];
      assert.ok(
        c !== undefined && c !== "\n",
        `line ${line}: open label value`,
      );
      if (c === '"') break;
      if (c === "\\") {
        const next = text[i + 1];
        const escaped = next === "\\"
          ? "\\"
          : next === '"'
          ? '"'
          : next === "n"
          ? "\n"
          : undefined;
        assert.ok(escaped !== undefined, `line ${line}: bad escape \\${next}`);
        value += escaped;
        i += 2;
      } else {
        value += c;
        i++;
      }
    }
    i++;
    assert.ok(!(name in labels), `line ${line}: label ${name} twice`);
    labels[name] = value;
    if (text[i] === ",") i++;
    else assert.equal(i, text.length, `line ${line}: , or } expected`);
  }
  return labels;
}

/** Parses the exposition text; fails on anything a strict scraper refuses. */
export function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "no final newline");
  const families = new Map<string, Family>();
  const series = new Set<string>();
  let current: string | undefined;
  const lines = text.slice(0, -1).split("\n");
  lines.forEach((line, index) => {
    const n = index + 1;
    const comment = /^# (HELP|TYPE) (\S+)(?: ([^]*))?$/.exec(line);
    if (comment) {
      const [, kind, name, rest = ""] = comment;
      assert.match(name!, /^[a-zA-Z_:][a-zA-Z0-9_:]*$/);
      let family = families.get(name!);
      if (family === undefined) {
        assert.notEqual(current, name);
        family = { type: "", help: "", samples: [] };
        families.set(name!, family);
      } else assert.equal(current, name, `line ${n}: ${name} not contiguous`);
      current = name;
      if (kind === "TYPE") {
        assert.equal(family.type, "", `line ${n}: second TYPE of ${name}`);
        assert.equal(family.samples.length, 0, `line ${n}: TYPE after samples`);
        assert.match(rest, /^(counter|gauge|histogram|summary|untyped)$/);
        family.type = rest;
      } else {
        assert.equal(family.help, "", `line ${n}: second HELP of ${name}`);
        assert.notEqual(rest, "", `line ${n}: empty HELP`);
        family.help = rest;
      }
      return;
    }
    assert.ok(!line.startsWith("#") && line !== "", `line ${n}: ${line}`);
    const name = NAME.exec(line)?.[0];
    assert.ok(name, `line ${n}: metric name expected`);
    let rest = line.slice(name.length);
    let labels: Record<string, string> = {};
    if (rest.startsWith("{")) {
      const end = rest.lastIndexOf("}");
      labels = parseLabels(rest.slice(1, end), n);
      rest = rest.slice(end + 1);
    }
    const value = /^ (\S+)$/.exec(rest)?.[1];
    assert.ok(value !== undefined, `line ${n}: value expected: ${line}`);
    const number = value === "+Inf" ? Infinity : Number(value);
    assert.ok(!Number.isNaN(number), `line ${n}: bad value ${value}`);
    const family = families.get(current ?? "");
    assert.ok(family, `line ${n}: sample outside a family`);
    const suffix = name.slice(current!.length);
    assert.ok(
      name.startsWith(current!) &&
        (suffix === "" ||
          family.type === "histogram" &&
            ["_bucket", "_sum", "_count"].includes(suffix)),
      `line ${n}: ${name} in family ${current}`,
    );
    if (family.type === "histogram") assert.notEqual(suffix, "");
    if (family.type === "counter") {
      assert.match(name, /_total$/, `line ${n}: counter ${name}`);
      assert.ok(number >= 0, `line ${n}: negative counter`);
    }
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!series.has(key), `line ${n}: duplicate series ${key}`);
    series.add(key);
    family.samples.push({ name, labels, value: number });
  });
  for (const [name, family] of families) {
    assert.notEqual(family.type, "", `${name}: no TYPE`);
    assert.notEqual(family.help, "", `${name}: no HELP`);
    if (family.type !== "histogram") continue;
    const groups = new Map<string, Family["samples"]>();
    for (const s of family.samples) {
      const { le: _le, ...rest } = s.labels;
      const key = JSON.stringify(Object.entries(rest).sort());
      groups.set(key, [...(groups.get(key) ?? []), s]);
    }
    for (const [key, samples] of groups) {
      const buckets = samples.filter((s) => s.name.endsWith("_bucket"));
      const les = buckets.map((b) =>
        Number(b.labels.le?.replace("+Inf", "Infinity"))
      );
      assert.deepEqual(les, [...les].sort((a, b) => a - b), `${key}: le order`);
      assert.equal(les.at(-1), Infinity, `${key}: no +Inf bucket`);
      buckets.forEach((b, i) => {
        if (i > 0) {
          assert.ok(b.value >= buckets[i - 1]!.value, `${key}: not cumulative`);
        }
      });
      const count = samples.find((s) => s.name.endsWith("_count"));
      assert.ok(
        samples.some((s) => s.name.endsWith("_sum")),
        `${key}: no _sum`,
      );
      assert.equal(
        count?.value,
        buckets.at(-1)!.value,
        `${key}: +Inf != _count`,
      );
    }
  }
  return families;
}

export function value(
  families: Map<string, Family>,
  family: string,
  labels: Record<string, string>,
  name = family,
): number {
  const want = JSON.stringify(Object.entries(labels).sort());
  return families.get(family)?.samples.find((s) =>
    s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want
  )?.value ?? 0;
}
