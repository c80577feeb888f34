// stepwire dashboard: per-rank step timing (the straggler, named by step time, with its lag behind the median),
// logging overhead, and the console lines the ranks printed.
import { $, api, el, fmtPercent, fmtSeconds, sectionBox, state } from "./util.js";

const SYSTEM_COLUMNS = [  // per-rank medians of the system series (stepwire.system) beside the step timing
  ["gpu_utilization", "GPU busy", (v) => `${v.toFixed(0)}%`],
  ["gpu_sm_clock_mhz", "SM clock", (v) => `${v.toFixed(0)} MHz`],
  ["gpu_throttled", "throttled", (v) => `${(100 * v).toFixed(0)}% of samples`],
  ["cpu_percent", "process CPU", (v) => `${v.toFixed(0)}%`],
  ["rss_mib", "RSS", (v) => `${v.toFixed(0)} MiB`],
];
const ratio = (r) => (typeof r === "number" ? `×${r.toFixed(2)}` : "");

function skewParts(run, skew) {
  const system = skew.system || {};
  const columns = SYSTEM_COLUMNS.filter(([key]) => Object.values(system).some((v) => key in v));
  const rows = skew.ranks;
  const finiteTimes = rows.map((r) => r.step_time).filter((t) => typeof t === "number").sort((a, b) => a - b);
  const median = finiteTimes.length ? finiteTimes[Math.floor((finiteTimes.length - 1) / 2)] : null;
  const slow = rows.find((r) => r.rank === skew.slowest);
  const parts = [el("p", { class: "skew-summary" },
    `slowest rank ${skew.slowest} by step time: ${fmtSeconds(slow?.step_time)} per step, `
    + `${ratio(skew.step_time_ratio)} the median; ${fmtSeconds(skew.lag)} behind the median`
    + (skew.most_behind !== undefined && skew.most_behind !== null && skew.most_behind !== skew.slowest
      ? ` (most behind: rank ${skew.most_behind}, ${fmtSeconds(skew.most_behind_lag)})` : ""))];
  if (skew.cause) parts.push(el("p", { class: "cause" }, `likely cause for rank ${skew.slowest}: ${skew.cause}`));
  parts.push(el("table", { class: "skew" },
    el("tr", {}, ...["rank", "steps", "step time", "× median", "lag behind the median", ...columns.map(([, h]) => h)]
      .map((h) => el("th", {}, h))),
    ...rows.map((r) => el("tr", { class: r.rank === skew.slowest ? "selected" : "" }, el("td", {}, r.rank),
      el("td", {}, r.steps), el("td", {}, fmtSeconds(r.step_time)),
      el("td", {}, median && typeof r.step_time === "number" ? ratio(r.step_time / median) : ""),
      el("td", {}, fmtSeconds(r.lag)),
      ...columns.map(([key, , fmt]) => el("td", {}, key in (system[r.rank] || {}) ? fmt(system[r.rank][key]) : ""))))));
  return parts;
}

/** Step timing and logging overhead of each selected run, each in a section box like the charts. */
export async function drawRanks(runs, series) {
  const signature = JSON.stringify(runs.map((r) => [r.id, r.status, series.get(r.id).map((s) => s.items)]));
  if (state.signatures.get("ranks") === signature) return;  // skew reads a whole series: only when it grew
  state.signatures.set("ranks", signature);
  const panel = $("#ranks-panel");
  panel.replaceChildren();
  for (const run of runs) {
    if (run.ranks.length > 1) {
      const skew = await api("skew", { run: run.id });
      sectionBox(panel, `skew-${run.id}`, "ranks", `step timing per rank of ${run.name} (${skew.series})`)
        .append(el("div", { class: "wide" }, ...skewParts(run, skew)));
    }
    const overhead = Object.entries(run.overhead || {});
    if (overhead.length) {
      sectionBox(panel, `overhead-${run.id}`, "ranks", `logging overhead of ${run.name}`).append(
        el("table", { class: "overhead wide" },
          el("tr", {}, ...["rank", "logging cost", "time in logging calls", "points", "dropped"].map((h) => el("th", {}, h))),
          ...overhead.map(([rank, o]) => el("tr", {}, el("td", {}, rank), el("td", {}, fmtPercent(o.logging_fraction)),
            el("td", {}, fmtSeconds(o.logging_s)), el("td", {}, o.logged), el("td", {}, o.dropped)))));
    }
  }
}

/** The last lines each selected run's ranks printed (of the picked rank, containing the search text). */
export async function drawConsole(runs, force) {
  const rank = $("#console-rank").value;
  const search = $("#console-search").value;
  const answers = [];
  for (const run of runs) {
    answers.push([run, await api("console", { run: run.id, rank: rank === "" ? null : rank, q: search || null })]);
  }
  const signature = JSON.stringify([rank, search, answers.map(([run, c]) => [run.id, c.total, c.matched])]);
  if (!force && state.signatures.get("console") === signature) return;
  state.signatures.set("console", signature);
  const ranks = [...new Set(answers.flatMap(([, c]) => c.ranks))].sort((a, b) => a - b);
  const select = $("#console-rank");
  const shown = [...select.options].slice(1).map((o) => o.value).join(",");
  if (shown !== ranks.join(",")) {
    select.replaceChildren(el("option", { value: "" }, "every rank"), ...ranks.map((r) => el("option", { value: r }, `rank ${r}`)));
    select.value = ranks.map(String).includes(rank) ? rank : "";
  }
  const parts = [];
  for (const [run, c] of answers) {
    if (!c.total) continue;
    const count = c.lines.length < c.matched ? `the last ${c.lines.length} of ${c.matched} lines` : `${c.matched} lines`;
    parts.push(el("h4", {}, `${run.name}: ${count}` + (search ? ` containing "${search}"` : "")));
    const several = c.ranks.length > 1;
    parts.push(el("pre", { class: "console" }, ...c.lines.map((l) => el("span", { class: l.stream },
      `${several ? `[${l.rank}] ` : ""}${new Date(l.wall_time * 1000).toLocaleTimeString()} ${l.step} | ${l.text}\n`))));
  }
  $("#console-panel").hidden = !answers.some(([, c]) => c.total);
  $("#console-lines").replaceChildren(...parts);
  for (const pre of document.querySelectorAll("#console-lines pre")) pre.scrollTop = pre.scrollHeight;
}
