// stepwire dashboard: compare runs by configuration. A parallel-coordinates chart (the config values that differ
// between the runs, then the chosen metric's last/min/max) and a table of the runs with sortable metric columns.
/* global Plotly */
import { $, api, el, fmtValue, PLOT_CONFIG, state } from "./util.js";

const MAX_METRIC_COLUMNS = 12;
const sortBy = { column: null, descending: false };

function varying(runs, keys) {  // the config keys whose values differ between the runs
  return keys.filter((k) => new Set(runs.map((r) => JSON.stringify(r.config[k] ?? null))).size > 1);
}

function dimension(label, values) {
  if (values.every((v) => v === null || typeof v === "number")) {
    return { label, values: values.map((v) => (v === null ? NaN : v)) };
  }
  const cats = [...new Set(values.map((v) => String(v)))].sort();
  return { label, values: values.map((v) => cats.indexOf(String(v))), tickvals: cats.map((_, i) => i), ticktext: cats,
    range: [-0.5, cats.length - 0.5] };
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
  const data = await api("compare", { runs: visible.map((r) => r.id).join(",") });
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
  dims.push({ label: `${metric} (${stat})`, values: values.map((v) => (v === null ? NaN : v)) });
  const div = $("#compare-chart");
  await Plotly.react(div, [{
    type: "parcoords", dimensions: dims, labelfont: { size: 11 }, tickfont: { size: 10 },
    line: { color: values.map((v) => (v === null ? NaN : v)), colorscale: "Viridis", showscale: true,
      colorbar: { title: { text: metric, side: "right" }, thickness: 12 } },
  }], { margin: { l: 60, r: 80, t: 40, b: 20 }, title: { text: `${runs.length} runs: config against ${metric} (${stat})`,
    font: { size: 13 }, x: 0.01, xanchor: "left", y: 0.98, yanchor: "top" } }, PLOT_CONFIG);
  div.dataset.runs = runs.length;
  const shownMetrics = [metric, ...metrics.filter((m) => m !== metric)].slice(0, MAX_METRIC_COLUMNS);
  renderTable(runs, keys, shownMetrics);
}
