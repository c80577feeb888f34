// stepwire dashboard: runs table, run comparison, scalar charts, histogram heat maps, rank skew, console, media;
// polls the JSON API while live. Each panel lives in its own module; this one holds the runs table and the loop.
import { drawScalars } from "./charts.js";
import { drawCompare } from "./compare.js";
import { drawHistogram } from "./hist.js";
import { drawMedia, loadMedia, mediaKeys } from "./media.js";
import { drawConsole, drawRanks } from "./ranks.js";
import { $, api, el, fmtDuration, fmtTime, state } from "./util.js";

const REFRESH_MS = 2000;

function flatConfig(config, prefix = "", out = []) {
  for (const [k, v] of Object.entries(config || {})) {
    if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) flatConfig(v, `${prefix}${k}.`, out);
    else out.push([`${prefix}${k}`, v]);
  }
  return out;
}

function configCell(config) {  // key=value tokens that wrap between tokens, never inside one
  const pairs = flatConfig(config);
  return el("td", { class: "config", title: JSON.stringify(config) },
    ...pairs.map(([k, v]) => el("span", { class: "token" }, `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)));
}

const visibleRuns = () => {
  const needle = $("#filter").value.trim().toLowerCase();
  return state.runs.filter((run) => !needle || [run.project, run.name, run.id, run.status, run.tags.join(" "),
    run.group || "", run.job_type || "", JSON.stringify(run.config)].join(" ").toLowerCase().includes(needle));
};

// -- runs table ---------------------------------------------------------------------------------------------
function renderRuns() {
  const visible = visibleRuns();
  const shown = new Set(visible.map((r) => r.id));
  let changed = false;
  for (const id of [...state.selected]) {  // a run filtered out is unselected: it is not charted either
    if (!shown.has(id)) { state.selected.delete(id); changed = true; }
  }
  const body = $("#runs-table tbody");
  body.replaceChildren();
  for (const run of visible) {
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
      el("td", {}, fmtDuration(run.duration)), el("td", {}, [run.group, ...run.tags].filter(Boolean).join(", ")),
      el("td", {}, run.ranks.length), configCell(run.config)));
  }
  return changed;
}

function fillGroupBy() {
  const keys = [...new Set(state.runs.flatMap((r) => flatConfig(r.config).map(([k]) => k)))].sort();
  const options = ["", "group", "job_type", ...keys.map((k) => `config:${k}`)];
  const select = $("#group-by");
  if ([...select.options].map((o) => o.value).join("\n") === options.join("\n")) return;
  const current = select.value;
  select.replaceChildren(...options.map((o) => el("option", { value: o },
    o === "" ? "no grouping" : o.startsWith("config:") ? `config ${o.slice(7)}` : o)));
  select.value = options.includes(current) ? current : "";
}

async function loadRuns() {
  state.runs = await api("runs");
  if (state.selected.size === 0 && state.runs.length) {
    const wanted = new URLSearchParams(location.hash.slice(1)).get("run");
    state.selected.add(state.runs.some((r) => r.id === wanted) ? wanted : state.runs[0].id);
  }
  fillGroupBy();
  renderRuns();
}

// the system section (stepwire.system) after the training's own, GPU utilisation and memory first in it
const FIRST_SYSTEM = ["system/gpu/utilization", "system/gpu/memory_used_mib"];
function chartOrder(a, b) {
  const sa = a.startsWith("system/"), sb = b.startsWith("system/");
  if (sa !== sb) return sa ? 1 : -1;
  const rank = (n) => (FIRST_SYSTEM.includes(n) ? FIRST_SYSTEM.indexOf(n) : FIRST_SYSTEM.length);
  return rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0);
}

// -- refresh loop -------------------------------------------------------------------------------------------
// One refresh at a time: two drawing the same chart at once (a poll and a click) can leave it half drawn.
let queue = Promise.resolve();
function refreshDetails(force = false) {
  const next = queue.then(() => drawDetails(force));
  queue = next.catch(() => {});
  return next;
}

async function drawDetails(force) {
  const runs = state.runs.filter((r) => state.selected.has(r.id));
  await drawCompare(visibleRuns(), force);
  const series = new Map();
  for (const run of runs) series.set(run.id, await api("series", { run: run.id }));
  const scalarNames = [...new Set(runs.flatMap((r) => series.get(r.id).filter((s) => s.kind === "scalar").map((s) => s.name)))];
  const keep = new Set(scalarNames.map((n) => `scalar:${n}`));
  for (const run of runs) {
    for (const s of series.get(run.id)) if (s.kind === "histogram") keep.add(`hist:${run.id}:${s.name}`);
  }
  const media = await loadMedia(runs);
  for (const key of mediaKeys(runs, media)) keep.add(key);
  // the page's own blocks only (Plotly.js marks elements of its own with data-key too)
  for (const node of document.querySelectorAll(".grid > [data-key], .media-grid > [data-key]")) {
    if (!keep.has(node.dataset.key)) node.remove();
  }
  for (const box of document.querySelectorAll("#charts details, #histograms details, #media details")) {
    if (!box.querySelector("[data-key]")) box.remove();
  }
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

const report = (err) => { $("#status").textContent = `error: ${err.message}`; };
$("#filter").addEventListener("input", () => {
  if (renderRuns()) state.signatures.clear();
  refreshDetails().catch(report);
});
for (const id of ["#console-rank", "#console-search"]) {
  $(id).addEventListener("input", () => {
    drawConsole(state.runs.filter((r) => state.selected.has(r.id)), true).catch(report);
  });
}
for (const id of ["#x-axis", "#smoothing", "#show-ranks", "#group-by", "#compare-metric", "#compare-stat"]) {
  $(id).addEventListener("input", () => {
    $("#smoothing-value").textContent = $("#smoothing").value;
    refreshDetails(true).catch(report);
  });
}
busy = true;
tick(true).finally(() => { busy = false; document.body.dataset.ready = "1"; });
setInterval(poll, REFRESH_MS);
