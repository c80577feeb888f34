// stepwire dashboard: compare runs by configuration. A parallel-coordinates chart (the config values that differ
// between the runs, then the chosen metric's last/min/max) and a table of the runs with sortable metric columns.
/* global Plotly */
import { $, api, el, fmtValue, PLOT_CONFIG, state } from "./util.js";

const MAX_METRIC_COLUMNS = 12;
const MAX_RUNS = 500;  // the most /api/compare answers for at once
const REFETCH_MS = 10_000;
const fetched = { ids: null, at: 0, data: null };
const sortBy = { column: null, descending: false };

function varying(runs, keys) {  // the config keys whose values differ between the runs
  return keys.filter((k) => new Set(runs.map((r) => JSON.stringify(r.config[k] ?? null))).size > 1);
}

// Parallel coordinates drawn as SVG lines (one per run) over one vertical axis per dimension: no WebGL needed.
function dimension(label, values) {
  if (values.every((v) => v === null || typeof v === "number")) {
    const known = values.filter((v) => v !== null && Number.isFinite(v));
    const lo = Math.min(...known), hi = Math.max(...known);
    const at = (v) => (v === null || !Number.isFinite(v) ? null : hi > lo ? (v - lo) / (hi - lo) : 0.5);
    const ticks = known.length ? (hi > lo ? [lo, (lo + hi) / 2, hi] : [lo]) : [];
    return { label, values, y: values.map(at), ticks: ticks.map((t) => [at(t), fmtValue(t)]) };
  }
  const cats = [...new Set(values.filter((v) => v !== null).map(String))].sort();
  const at = (c) => (cats.length > 1 ? cats.indexOf(c) / (cats.length - 1) : 0.5);
  return { label, values, y: values.map((v) => (v === null ? null : at(String(v)))),
    ticks: cats.map((c) => [at(c), c]) };
}

const VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
function colourFor(v, lo, hi) {  // a metric value's colour on the Viridis scale (grey where it has none)
  if (v === null || !Number.isFinite(v)) return "#9ca3af";
  const f = hi > lo ? (v - lo) / (hi - lo) : 0.5;
  return VIRIDIS[Math.min(VIRIDIS.length - 1, Math.round(f * (VIRIDIS.length - 1)))];
}

function parallelFigure(runs, dims, metricValues) {
  const known = metricValues.filter((v) => v !== null && Number.isFinite(v));
  const lo = Math.min(...known), hi = Math.max(...known);
  const x = dims.map((_, i) => i);
  const traces = runs.map((run, r) => ({
    type: "scatter", mode: "lines+markers", x, y: dims.map((d) => d.y[r]), name: run.name,
    line: { color: colourFor(metricValues[r], lo, hi), width: 2 }, marker: { size: 5 },
    customdata: dims.map((d) => (d.values[r] === null ? "—" : typeof d.values[r] === "number"
      ? fmtValue(d.values[r]) : String(d.values[r]))),
    hovertemplate: `${run.name}<br>%{customdata}<extra></extra>`, showlegend: false,
  }));
  const shapes = x.map((i) => ({ type: "line", x0: i, x1: i, y0: 0, y1: 1, line: { color: "#6b7280", width: 1 } }));
  const annotations = dims.flatMap((d, i) => d.ticks.map(([y, text]) => ({
    x: i, y, text, showarrow: false, xanchor: "right", xshift: -4, font: { size: 10, color: "#374151" } })));
  return { traces, layout: {
    margin: { l: 60, r: 20, t: 30, b: 40 }, hovermode: "closest", shapes, annotations,
    xaxis: { tickvals: x, ticktext: dims.map((d) => d.label), range: [-0.5, dims.length - 0.7], zeroline: false,
      showgrid: false, side: "bottom", fixedrange: true },
    yaxis: { visible: false, range: [-0.06, 1.06], fixedrange: true },
  } };
}

function fillSelect(select, options, fallback) {
  const current = select.value || fallback;
  if ([...select.options].map((o) => o.value).join("\n") !== options.join("\n")) {
    select.replaceChildren(...options.map((o) => el("option", { value: o }, o)));
  }
  select.value = options.includes(current) ? current : options[0] ?? "";
}

function cellValue(run, column) {
  if (column.startsWith("metric:")) return run.metrics[column.slice(7)]?.[$("#compare-stat").value] ?? null;
  if (column.startsWith("config:")) return run.config[column.slice(7)] ?? null;
  return run[column] ?? null;
}

function renderTable(runs, configKeys, metrics) {
  const columns = [["name", "run"], ["group", "group"], ...configKeys.map((k) => [`config:${k}`, k]),
    ...metrics.map((m) => [`metric:${m}`, m])];
  const rows = [...runs];
  if (sortBy.column) {
    const sign = sortBy.descending ? -1 : 1;
    rows.sort((a, b) => {
      const x = cellValue(a, sortBy.column), y = cellValue(b, sortBy.column);
      if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1;  // no value: last either way
      return sign * (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y)));
    });
  }
  const head = el("tr", {}, ...columns.map(([key, label]) => {
    const th = el("th", { "data-column": key, class: key.startsWith("metric:") ? "num" : "" }, label);
    if (sortBy.column === key) th.setAttribute("aria-sort", sortBy.descending ? "descending" : "ascending");
    th.addEventListener("click", () => {
      sortBy.descending = sortBy.column === key ? !sortBy.descending : false;
      sortBy.column = key;
      renderTable(runs, configKeys, metrics);
    });
    return th;
  }));
  const body = rows.map((r) => el("tr", { "data-run": r.id }, ...columns.map(([key]) => {
    const v = cellValue(r, key);
    return el("td", { class: typeof v === "number" ? "num" : "" }, typeof v === "number" ? fmtValue(v) : v ?? "");
  })));
  $("#compare-table").replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
}

/** The comparison of the runs the table shows (two or more): drawn again when they or their data changed. */
export async function drawCompare(visible, force) {
  const panel = $("#compare-panel");
  if (visible.length < 2) {
    panel.hidden = true;
    return;
  }
  // the summaries of many runs: fetched again when the runs shown change, when asked, or every REFETCH_MS
  const ids = visible.slice(0, MAX_RUNS).map((r) => r.id).join(",");
  if (force || ids !== fetched.ids || Date.now() - fetched.at > REFETCH_MS) {
    fetched.data = await api("compare", { runs: ids });
    Object.assign(fetched, { ids, at: Date.now() });
  }
  const data = fetched.data;
  panel.hidden = false;
  const metrics = data.metrics.filter((m) => !m.startsWith("system/"));
  fillSelect($("#compare-metric"), metrics, metrics.find((m) => /loss/.test(m)));
  const metric = $("#compare-metric").value, stat = $("#compare-stat").value;
  const signature = JSON.stringify([data, metric, stat, $("#group-by").value]);
  if (!force && state.signatures.get("compare") === signature) return;
  state.signatures.set("compare", signature);
  const runs = data.runs;
  const keys = varying(runs, data.config_keys);
  const values = runs.map((r) => r.metrics[metric]?.[stat] ?? null);
  const dims = keys.map((k) => dimension(k, runs.map((r) => r.config[k] ?? null)));
  dims.push(dimension(`${metric} (${stat})`, values));
  const div = $("#compare-chart");
  const figure = parallelFigure(runs, dims, values);
  await Plotly.react(div, figure.traces, {
    ...figure.layout, title: { text: `${runs.length} runs: configuration against ${metric} (${stat}); colour: `
      + `${metric}, low dark, high bright`, font: { size: 13 }, x: 0.01, xanchor: "left", y: 0.98, yanchor: "top" },
  }, PLOT_CONFIG);
  div.dataset.dimensions = JSON.stringify(dims.map((d) => d.label));
  div.dataset.runs = runs.length;
  const shownMetrics = [metric, ...metrics.filter((m) => m !== metric)].slice(0, MAX_METRIC_COLUMNS);
  renderTable(runs, keys, shownMetrics);
}
