// Summarizes loadgen --tsv files of one or more runs of both sides (bench/compare.sh, or two
// builds of ours: bench/builds.sh):
//   node summarize.js SECONDS ours-1.tsv[,ours-2.tsv...] restate-1.tsv[,restate-2.tsv...] [A B]
// Prints markdown: req/s (median and range over runs) with the ours/Restate ratio, latency,
// server CPU per request, the fanout drain rates, and the rows a foreign CPU load disturbed.
// A and B name the two sides in the headings (default: ours, Restate).
"use strict";
const fs = require("fs");

const [secsArg, oursArg, restateArg, A = "ours", B = "Restate"] = process.argv.slice(2);
if (!restateArg) {
  console.error("usage: node summarize.js SECONDS OURS_TSVS RESTATE_TSVS [A B] (comma-separated)");
  process.exit(2);
}
const secs = Number(secsArg);

function load(list) {
  return list.split(",").map((file) => {
    const rows = new Map();
    const drains = new Map();
    for (const line of fs.readFileSync(file, "utf8").split("\n")) {
      const f = line.split("\t");
      if (f[0] === "row") {
        rows.set(`${f[2]}\t${f[3]}`, {
          scenario: f[2], conc: f[3], rate: +f[4], p50: +f[5], p90: +f[6], p99: +f[7],
          errors: +f[8], cpu: f[9] === "n/a" ? NaN : +f[9], rss: +f[10], other: +f[12],
          tries: f[13] === undefined ? 1 : +f[13],
          // Added later: files written before have neither.
          p999: f[14] === undefined ? NaN : +f[14], max: f[15] === undefined ? NaN : +f[15],
        });
      } else if (f[0] === "drain") {
        drains.set(f[2], {
          acked: +f[3], messages: +f[4], backlog: +f[5], tail: +f[6], rate: +f[7],
          complete: f[8] === "true", tailRate: +f[9],
        });
      }
    }
    return { file, rows, drains };
  });
}

const ours = load(oursArg);
const restate = load(restateArg);
const runs = Math.min(ours.length, restate.length);

const median = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const fmt = (x, digits = 0) => (Number.isFinite(x) ? x.toFixed(digits) : "n/a");
// "median (min–max)" when there is more than one run.
const spread = (xs, digits = 0, suffix = "") => {
  const v = xs.filter((x) => Number.isFinite(x));
  if (v.length === 0) return "n/a";
  const med = fmt(median(v), digits) + suffix;
  if (v.length === 1) return med;
  return `${med} (${fmt(Math.min(...v), digits)}–${fmt(Math.max(...v), digits)})`;
};

// Ratios near 1 (two builds of ours) need two decimals to be read against a 10% bound.
const ratioSpread = (xs) => spread(xs, median(xs) < 10 ? 2 : 1, "×");

const keys = [...ours[0].rows.keys()];
const many = runs > 1;
const what = many ? `median of ${runs} runs (min–max)` : "one run";

console.log(`#### Requests/s, ${what}\n`);
console.log(`| scenario | concurrency | ${A} req/s | ${B} req/s | ${A} / ${B} |`);
console.log("|---|---|---|---|---|");
for (const k of keys) {
  const [scenario, conc] = k.split("\t");
  const o = ours.map((r) => r.rows.get(k)?.rate);
  const r = restate.map((r) => r.rows.get(k)?.rate);
  const ratios = [];
  for (let i = 0; i < runs; i++) ratios.push(o[i] / r[i]);
  console.log(`| ${scenario} | ${conc} | ${spread(o)} | ${spread(r)} | ${ratioSpread(ratios)} |`);
}

console.log(`\n#### Latency and server CPU, medians${many ? ` of ${runs} runs` : ""}\n`);
console.log(
  `| scenario | concurrency | ${A} p50 ms | ${B} p50 ms | ${B} p50 / ${A} p50 | ${A} p99 ms | ${B} p99 ms | ${A} p99.9 ms | ${B} p99.9 ms | ${A} max ms | ${B} max ms | ${A} CPU ms/request | ${B} CPU ms/request |`,
);
console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
for (const k of keys) {
  const [scenario, conc] = k.split("\t");
  const m = (side, f) => median(side.map((r) => f(r.rows.get(k))));
  const cpuPerReq = (row) => (row ? (row.cpu * 1000) / (row.rate * secs) : NaN);
  const op50 = m(ours, (x) => x?.p50);
  const rp50 = m(restate, (x) => x?.p50);
  console.log(
    `| ${scenario} | ${conc} | ${fmt(op50, 2)} | ${fmt(rp50, 2)} | ${fmt(rp50 / op50, 1)}× | ` +
      `${fmt(m(ours, (x) => x?.p99), 2)} | ${fmt(m(restate, (x) => x?.p99), 2)} | ` +
      `${fmt(m(ours, (x) => x?.p999), 2)} | ${fmt(m(restate, (x) => x?.p999), 2)} | ` +
      `${fmt(m(ours, (x) => x?.max), 2)} | ${fmt(m(restate, (x) => x?.max), 2)} | ` +
      `${fmt(m(ours, cpuPerReq), 3)} | ${fmt(m(restate, cpuPerReq), 3)} |`,
  );
}

const concs = [...ours[0].drains.keys()];
if (concs.length) {
  console.log(`\n#### Fanout 10: queued messages drained, ${what}\n`);
  console.log(
    `| concurrency | ${A} msgs/s (row start → drained) | ${B} msgs/s (row start → drained) | ${A} / ${B} | ${A} backlog when load stopped | ${B} backlog when load stopped | ${B} backlog drain msgs/s |`,
  );
  console.log("|---|---|---|---|---|---|---|");
  for (const c of concs) {
    const o = ours.map((r) => r.drains.get(c)?.rate);
    const r = restate.map((r) => r.drains.get(c)?.rate);
    const ratios = [];
    for (let i = 0; i < runs; i++) ratios.push(o[i] / r[i]);
    const incomplete = [...ours, ...restate].some((x) => x.drains.get(c) && !x.drains.get(c).complete);
    console.log(
      `| ${c} | ${spread(o)} | ${spread(r)} | ${ratioSpread(ratios)} | ` +
        `${spread(ours.map((x) => x.drains.get(c)?.backlog))} | ` +
        `${spread(restate.map((x) => x.drains.get(c)?.backlog))} | ` +
        `${spread(restate.map((x) => x.drains.get(c)?.tailRate))}${incomplete ? " (a drain timed out)" : ""} |`,
    );
  }
}

const peak = (side) => Math.max(...side.flatMap((r) => [...r.rows.values()].map((x) => x.rss)));
console.log(
  `\nPeak RSS over the whole table (max over runs): ${A} ${fmt(peak(ours))} MiB, ` +
    `${B === "Restate" ? "Restate (server + SDK service)" : B} ${fmt(peak(restate))} MiB.`,
);
const errors = (side) => side.reduce((n, r) => n + [...r.rows.values()].reduce((m, x) => m + x.errors, 0), 0);
console.log(`Errors (non-2xx or transport) over all runs: ${A} ${errors(ours)}, ${B} ${errors(restate)}.`);
const disturbed = [];
const retried = [];
for (const [name, side] of [[A, ours], [B, restate]]) {
  side.forEach((run, i) => {
    for (const x of run.rows.values()) {
      if (x.other > 0.5) disturbed.push(`${name} run ${i + 1} "${x.scenario}" c${x.conc}: ${x.other} s`);
      if (x.tries > 1) retried.push(`${name} run ${i + 1} "${x.scenario}" c${x.conc}: ${x.tries} tries`);
    }
  });
}
console.log(
  retried.length ? `Rows retried because of foreign load: ${retried.join("; ")}.` : "No row was retried.",
);
console.log(
  disturbed.length
    ? `Reported rows with more than 0.5 CPU s of foreign load ("other CPU s"): ${disturbed.join("; ")}.`
    : `No reported row saw more than 0.5 CPU s of foreign load ("other CPU s").`,
);
