// stepwire dashboard: runs table, scalar charts, histogram heat maps, rank skew, console; polls the JSON API while live.
/* global Plotly */
import { drawMedia, loadMedia, mediaKeys } from "./media.js";

const REFRESH_MS = 2000;
const POINTS = 1000;
const state = { runs: [], selected: new Set(), signatures: new Map(), histStep: new Map() };
const $ = (sel) => document.querySelector(sel);

async function api(route, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) query.append(k, v);
  const res = await fetch(`/api/${route}?${query}`);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// JSON has no NaN or infinity: the server sends those as the strings "NaN", "Infinity", "-Infinity" (and as null
// in chart data), so every number shown goes through one of these.
const finite = (v) => typeof v === "number" && Number.isFinite(v);
const notNumber = (v, empty) => (v === null || v === undefined ? empty : String(v));
const fmtTime = (t) => (finite(t) && t ? new Date(t * 1000).toLocaleString() : "");
const fmtDuration = (s) => (!finite(s) ? notNumber(s, "") : s < 60 ? `${s.toFixed(0)} s`
  : s < 3600 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);
const fmtValue = (v) => (!finite(v) ? notNumber(v, "?")
  : Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : +v.toPrecision(3));
const fmtSeconds = (s) => (!finite(s) ? notNumber(s, "") : Math.abs(s) < 1e-3 ? `${(s * 1e6).toFixed(0)} µs`
  : Math.abs(s) < 1 ? `${(s * 1e3).toFixed(2)} ms` : `${s.toFixed(3)} s`);
const fmtPercent = (f) => (finite(f) ? `${(100 * f).toFixed(2)}%` : notNumber(f, ""));
const cssId = (s) => s.replace(/[^A-Za-z0-9_-]/g, "_");

// -- runs table ---------------------------------------------------------------------------------------------
function renderRuns() {
  const needle = $("#filter").value.trim().toLowerCase();
  const body = $("#runs-table tbody");
  body.replaceChildren();
  for (const run of state.runs) {
    const config = JSON.stringify(run.config);
    const text = [run.project, run.name, run.id, run.status, run.tags.join(" "), config].join(" ").toLowerCase();
    if (needle && !text.includes(needle)) continue;
    const box = el("input", { type: "checkbox" });
    box.checked = state.selected.has(run.id);
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(run.id); else state.selected.delete(run.id);
      state.signatures.clear();
      renderRuns();
      refreshDetails();
    });
    body.append(el("tr", { "data-run": run.id, class: state.selected.has(run.id) ? "selected" : "" },
      el("td", {}, box), el("td", {}, run.project), el("td", { title: run.id }, run.name),
      el("td", { class: `status-${run.status}` }, run.status), el("td", {}, fmtTime(run.created)),
      el("td", {}, fmtDuration(run.duration)), el("td", {}, run.tags.join(", ")),
      el("td", {}, run.ranks.length), el("td", { class: "config" }, config === "{}" ? "" : config)));
  }
}

async function loadRuns() {
  state.runs = await api("runs");
  if (state.selected.size === 0 && state.runs.length) {
    const wanted = new URLSearchParams(location.hash.slice(1)).get("run");
    state.selected.add(state.runs.some((r) => r.id === wanted) ? wanted : state.runs[0].id);
  }
  renderRuns();
}

// -- scalar charts ------------------------------------------------------------------------------------------
function smooth(ys, weight) {  // TensorBoard's debiased exponential moving average
  if (!weight) return ys;
  let last = 0, n = 0;
  return ys.map((y) => {
    if (y === null) return null;
    last = last * weight + (1 - weight) * y;
    n += 1;
    return last / (1 - weight ** n);
  });
}

function xs(values, axis) {
  return axis === "wall_time" ? values.map((t) => (t === null ? null : new Date(t * 1000))) : values;
}

function scalarTraces(result, run, axis, weight, everyRank) {
  const traces = [];
  const label = state.selected.size > 1 ? `${run.name} ` : "";
  if (result.agg && !everyRank) {
    const x = xs(result.agg.x, axis);
    traces.push({ x, y: result.agg.min, mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip" });
    traces.push({ x, y: result.agg.max, mode: "lines", line: { width: 0 }, fill: "tonexty",
      fillcolor: "rgba(37,99,235,0.18)", name: `${label}min–max over ranks` });
    traces.push({ x, y: smooth(result.agg.mean, weight), mode: "lines", name: `${label}mean of ${result.ranks.length} ranks` });
    return traces;
  }
  for (const r of result.ranks) {
    const suffix = result.ranks.length > 1 ? `rank ${r.rank}` : "";
    traces.push({ x: xs(r.x, axis), y: smooth(r.y, weight), mode: "lines", name: `${label}${suffix}` || run.name });
  }
  return traces;
}

function chartBox(container, cls, name, key) {
  let div = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!div) {
    div = el("div", { class: cls, "data-metric": name, "data-key": key });
    container.append(div);
  }
  return div;
}

function sectionBox(parent, section, idPrefix) {
  const id = `${idPrefix}-${cssId(section || "_")}`;
  let box = parent.querySelector(`#${id}`);
  if (!box) {
    box = el("details", { id, open: "" }, el("summary", {}, section || "(no section)"), el("div", { class: "grid" }));
    parent.append(box);
  }
  return box.querySelector(".grid");
}

// the system section (stepwire.system) after the training's own, GPU utilisation and memory first in it
const FIRST_SYSTEM = ["system/gpu/utilization", "system/gpu/memory_used_mib"];
function chartOrder(a, b) {
  const sa = a.startsWith("system/"), sb = b.startsWith("system/");
  if (sa !== sb) return sa ? 1 : -1;
  const rank = (n) => (FIRST_SYSTEM.includes(n) ? FIRST_SYSTEM.indexOf(n) : FIRST_SYSTEM.length);
  return rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0);
}

async function drawScalars(name, runs, series, force) {
  const axis = $("#x-axis").value, weight = +$("#smoothing").value, everyRank = $("#show-ranks").checked;
  const items = runs.map((r) => (series.get(r.id).find((s) => s.name === name) || { items: 0 }).items);
  const signature = JSON.stringify([items, axis, weight, everyRank, runs.map((r) => r.id)]);
  const key = `scalar:${name}`;
  if (!force && state.signatures.get(key) === signature) return;
  state.signatures.set(key, signature);
  const section = name.includes("/") ? name.split("/")[0] : "";
  const div = chartBox(sectionBox($("#charts"), section, "scalars"), "chart", name, key);
  const traces = [];
  let total = 0;
  for (const [i, run] of runs.entries()) {
    if (!items[i]) continue;
    const result = await api("scalars", { run: run.id, name, x: axis, points: POINTS });
    total += result.total;
    traces.push(...scalarTraces(result, run, axis, weight, everyRank));
  }
  await Plotly.react(div, traces, {
    title: { text: name, font: { size: 13 } }, margin: { l: 50, r: 10, t: 30, b: 35 }, showlegend: traces.length > 1,
    legend: { orientation: "h" }, xaxis: { title: axis === "step" ? "step" : "" },
  }, { displaylogo: false, responsive: true });
  div.dataset.total = total;
}

// -- histograms ---------------------------------------------------------------------------------------------
async function drawHistogram(run, name, items, force) {
  const key = `hist:${run.id}:${name}`;
  const signature = JSON.stringify([items]);
  const box = sectionBox($("#histograms"), `histograms of ${run.name}`, `hist-${run.id}`);
  let block = box.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!block) {
    block = el("div", { "data-key": key, class: "histogram-block" },
      el("div", { class: "heatmap", "data-metric": name }),
      el("div", {}, el("div", { class: "bars", "data-metric": name }),
        el("div", { class: "step-picker" }, "step", el("input", { type: "range", min: 0, max: 0, value: 0 }),
          el("output", {}, ""))));
    box.append(block);
    block.querySelector("input").addEventListener("input", (e) => {
      const steps = JSON.parse(block.dataset.steps || "[]");
      state.histStep.set(key, steps[+e.target.value]);
      drawBars(block, run, name, steps[+e.target.value]);
    });
  }
  if (!force && state.signatures.get(key) === signature) return;
  state.signatures.set(key, signature);
  const heat = await api("heatmap", { run: run.id, name });
  const rows = heat.lower.map((lo, i) => `[${fmtValue(lo)}, ${fmtValue(heat.upper[i])})`);
  const every = Math.max(1, Math.ceil(rows.length / 12));
  const heatDiv = block.querySelector(".heatmap");
  await Plotly.react(heatDiv, [{
    type: "heatmap", x: heat.steps, y: rows.map((_, i) => i), z: heat.z.map((row) => row.map((c) => (c ? Math.log10(c + 1) : null))),
    customdata: heat.z, text: heat.z.map((row, i) => row.map(() => rows[i])),
    hovertemplate: "step %{x}<br>%{text}<br>count %{customdata}<extra></extra>", colorscale: "Viridis",
    colorbar: { title: { text: "log10(count+1)", side: "right" } },
  }], {
    title: { text: `${name} (${heat.total} steps)`, font: { size: 13 } }, margin: { l: 125, r: 10, t: 30, b: 35 },
    xaxis: { title: "step" },
    yaxis: { tickvals: rows.map((_, i) => i).filter((i) => i % every === 0), ticktext: rows.filter((_, i) => i % every === 0) },
  }, { displaylogo: false, responsive: true });
  heatDiv.dataset.steps = heat.steps.length;
  const all = (await api("histogram", { run: run.id, name })).steps;
  block.dataset.steps = JSON.stringify(all);
  const slider = block.querySelector("input");
  slider.max = Math.max(0, all.length - 1);
  const chosen = state.histStep.has(key) ? state.histStep.get(key) : all[all.length - 1];
  slider.value = Math.max(0, all.indexOf(chosen));
  await drawBars(block, run, name, chosen);
}

async function drawBars(block, run, name, step) {
  const h = await api("histogram", { run: run.id, name, step, bins: 32 });
  block.querySelector("output").textContent = h.step;
  const edges = h.bin_edges;  // equal-width display bins over [min, max], from the exact buckets
  const width = edges[1] - edges[0];
  await Plotly.react(block.querySelector(".bars"), [{
    type: "bar", x: h.bin_counts.map((_, i) => edges[i] + width / 2), y: h.bin_counts, width,
    hovertemplate: "%{x}<br>count %{y}<extra></extra>",
  }], {
    title: { text: `${name} at step ${h.step}: ${h.count} values` + (h.nan + h.pos_inf + h.neg_inf
      ? `, ${h.nan} NaN, ${h.pos_inf + h.neg_inf} inf` : ""), font: { size: 13 } },
    margin: { l: 50, r: 10, t: 30, b: 35 }, bargap: 0,
  }, { displaylogo: false, responsive: true });
}

// -- ranks and overhead -------------------------------------------------------------------------------------
const SYSTEM_COLUMNS = [  // per-rank medians of the system series (stepwire.system) beside the step timing
  ["gpu_utilization", "GPU busy", (v) => `${v.toFixed(0)}%`],
  ["gpu_sm_clock_mhz", "SM clock", (v) => `${v.toFixed(0)} MHz`],
  ["gpu_throttled", "throttled", (v) => `${(100 * v).toFixed(0)}% of samples`],
  ["cpu_percent", "process CPU", (v) => `${v.toFixed(0)}%`],
  ["rss_mib", "RSS", (v) => `${v.toFixed(0)} MiB`],
];
async function drawRanks(runs, series) {
  const signature = JSON.stringify(runs.map((r) => [r.id, r.status, series.get(r.id).map((s) => s.items)]));
  if (state.signatures.get("ranks") === signature) return;  // skew reads a whole series: only when it grew
  state.signatures.set("ranks", signature);
  const panel = $("#ranks-panel");
  const parts = [];
  for (const run of runs) {
    const overhead = Object.entries(run.overhead || {});
    if (overhead.length) {
      parts.push(el("h3", {}, `logging overhead of ${run.name}`), el("table", { class: "overhead" },
        el("tr", {}, ...["rank", "logging cost", "time in logging calls", "points", "dropped"].map((h) => el("th", {}, h))),
        ...overhead.map(([rank, o]) => el("tr", {}, el("td", {}, rank), el("td", {}, fmtPercent(o.logging_fraction)),
          el("td", {}, fmtSeconds(o.logging_s)), el("td", {}, o.logged), el("td", {}, o.dropped)))));
    }
    if (run.ranks.length > 1) {
      const skew = await api("skew", { run: run.id });
      const system = skew.system || {};
      const columns = SYSTEM_COLUMNS.filter(([key]) => Object.values(system).some((v) => key in v));
      parts.push(el("h3", {}, `step timing per rank of ${run.name} (${skew.series}): slowest rank ${skew.slowest}, `
        + `${fmtSeconds(skew.lag)} behind the median`));
      if (skew.cause) parts.push(el("p", { class: "cause" }, `likely cause for rank ${skew.slowest}: ${skew.cause}`));
      parts.push(el("table", { class: "skew" },
        el("tr", {}, ...["rank", "steps", "step time", "lag behind the median", ...columns.map(([, h]) => h)]
          .map((h) => el("th", {}, h))),
        ...skew.ranks.map((r) => el("tr", { class: r.rank === skew.slowest ? "selected" : "" }, el("td", {}, r.rank),
          el("td", {}, r.steps), el("td", {}, fmtSeconds(r.step_time)), el("td", {}, fmtSeconds(r.lag)),
          ...columns.map(([key, , fmt]) => el("td", {}, key in (system[r.rank] || {}) ? fmt(system[r.rank][key]) : ""))))));
    }
  }
  panel.replaceChildren(...parts);
}

// -- console ------------------------------------------------------------------------------------------------
async function drawConsole(runs, force) {
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
    const pre = el("pre", { class: "console" }, ...c.lines.map((l) => el("span", { class: l.stream },
      `${several ? `[${l.rank}] ` : ""}${new Date(l.wall_time * 1000).toLocaleTimeString()} ${l.step} | ${l.text}\n`)));
    parts.push(pre);
  }
  $("#console-panel").hidden = !answers.some(([, c]) => c.total);
  $("#console-lines").replaceChildren(...parts);
  for (const pre of document.querySelectorAll("#console-lines pre")) pre.scrollTop = pre.scrollHeight;
}

// -- refresh loop -------------------------------------------------------------------------------------------
async function refreshDetails(force = false) {
  const runs = state.runs.filter((r) => state.selected.has(r.id));
  const series = new Map();
  for (const run of runs) series.set(run.id, await api("series", { run: run.id }));
  const scalarNames = [...new Set(runs.flatMap((r) => series.get(r.id).filter((s) => s.kind === "scalar").map((s) => s.name)))];
  const keep = new Set(scalarNames.map((n) => `scalar:${n}`));
  for (const run of runs) {
    for (const s of series.get(run.id)) if (s.kind === "histogram") keep.add(`hist:${run.id}:${s.name}`);
  }
  const media = await loadMedia(runs);
  for (const key of mediaKeys(runs, media)) keep.add(key);
  for (const node of document.querySelectorAll("#details [data-key]")) if (!keep.has(node.dataset.key)) node.remove();
  for (const box of document.querySelectorAll("#details details")) if (!box.querySelector("[data-key]")) box.remove();
  for (const name of scalarNames.sort(chartOrder)) await drawScalars(name, runs, series, force);
  for (const run of runs) {
    for (const s of series.get(run.id)) if (s.kind === "histogram") await drawHistogram(run, s.name, s.items, force);
  }
  await drawMedia(runs, media, force);
  await drawRanks(runs, series);
  await drawConsole(runs, force);
}

async function tick(force = false) {
  try {
    await loadRuns();
    await refreshDetails(force);
    $("#status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("#status").textContent = `error: ${err.message}`;
  }
}

let busy = false;
async function poll() {
  if (busy || !$("#live").checked) return;
  busy = true;
  try { await tick(); } finally { busy = false; }
}

$("#filter").addEventListener("input", renderRuns);
for (const id of ["#console-rank", "#console-search"]) {
  $(id).addEventListener("input", () => {
    drawConsole(state.runs.filter((r) => state.selected.has(r.id)), true).catch((err) => {
      $("#status").textContent = `error: ${err.message}`;
    });
  });
}
for (const id of ["#x-axis", "#smoothing", "#show-ranks"]) {
  $(id).addEventListener("input", () => {
    $("#smoothing-value").textContent = $("#smoothing").value;
    refreshDetails(true);
  });
}
busy = true;
tick(true).finally(() => { busy = false; document.body.dataset.ready = "1"; });
setInterval(poll, REFRESH_MS);
