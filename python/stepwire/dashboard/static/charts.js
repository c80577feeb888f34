// stepwire dashboard: scalar charts. One colour per run (line and translucent min–max band over ranks), or, when
// runs are grouped (by group, job type or a config key, as W&B does), one curve per group: the mean over its runs
// with their min–max band.
/* global Plotly */
import { $, api, colourOf, el, layout, PLOT_CONFIG, sectionBox, state, translucent } from "./util.js";

const POINTS = 1000;

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

function band(x, low, high, colour, name, group) {
  return [
    { x, y: low, mode: "lines", line: { width: 0, color: colour }, showlegend: false, hoverinfo: "skip",
      legendgroup: group },
    { x, y: high, mode: "lines", line: { width: 0, color: colour }, fill: "tonexty", fillcolor: translucent(colour),
      name, showlegend: false, legendgroup: group },
  ];
}

function scalarTraces(result, run, axis, weight, everyRank, several) {
  const label = several ? `${run.name} ` : "";
  const colour = colourOf(`run:${run.id}`);
  if (result.agg && !everyRank) {
    const x = xs(result.agg.x, axis);
    return [...band(x, result.agg.min, result.agg.max, colour, `${label}min–max over ranks`, run.id),
      { x, y: smooth(result.agg.mean, weight), mode: "lines", line: { color: colour }, legendgroup: run.id,
        name: `${label}mean of ${result.ranks.length} ranks` }];
  }
  return result.ranks.map((r) => {
    const suffix = result.ranks.length > 1 ? `rank ${r.rank}` : "";
    // one run's ranks take the palette; several runs' ranks take their run's colour
    const line = several || result.ranks.length === 1 ? { color: colour } : {};
    return { x: xs(r.x, axis), y: smooth(r.y, weight), mode: "lines", line, legendgroup: run.id,
      name: `${label}${suffix}` || run.name };
  });
}

/** The group a run falls in under the header's "group by" choice ("" : no grouping). */
export function groupOf(run, by) {
  if (by === "group" || by === "job_type") return run[by] ?? "(none)";
  if (by.startsWith("config:")) {
    let value = run.config;
    for (const part of by.slice(7).split(".")) value = value && typeof value === "object" ? value[part] : undefined;
    return value === undefined ? "(none)" : typeof value === "object" ? JSON.stringify(value) : String(value);
  }
  return null;
}

function runCurve(result) {  // one run's curve: its cross-rank mean, or its one rank
  if (result.agg) return { x: result.agg.x, y: result.agg.mean };
  return result.ranks.length ? { x: result.ranks[0].x, y: result.ranks[0].y } : { x: [], y: [] };
}

function groupTraces(curves, axis, weight) {  // curves: [[group, curve]]; the mean over a group's runs at each x
  const groups = new Map();
  for (const [g, c] of curves) {
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(c);
  }
  const traces = [];
  for (const [g, members] of [...groups].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const at = new Map();
    for (const c of members) {
      c.x.forEach((x, i) => {
        if (x === null || c.y[i] === null) return;
        if (!at.has(x)) at.set(x, []);
        at.get(x).push(c.y[i]);
      });
    }
    const x = [...at.keys()].sort((a, b) => a - b);
    const vals = x.map((k) => at.get(k));
    const colour = colourOf(`group:${g}`);
    const name = `${g}: mean of ${members.length} run${members.length > 1 ? "s" : ""}`;
    const shown = xs(x, axis);
    traces.push(...band(shown, vals.map((v) => Math.min(...v)), vals.map((v) => Math.max(...v)), colour,
      `${g}: min–max over runs`, `group:${g}`));
    traces.push({ x: shown, y: smooth(vals.map((v) => v.reduce((a, b) => a + b, 0) / v.length), weight),
      mode: "lines", line: { color: colour }, name, legendgroup: `group:${g}` });
  }
  return traces;
}

/** Draw (or leave as it is, when nothing changed) the chart of scalar ``name`` for ``runs``. */
export async function drawScalars(name, runs, series, force) {
  const axis = $("#x-axis").value, weight = +$("#smoothing").value, everyRank = $("#show-ranks").checked;
  const by = $("#group-by").value;
  const items = runs.map((r) => (series.get(r.id).find((s) => s.name === name) || { items: 0 }).items);
  const groups = runs.map((r) => groupOf(r, by));
  const signature = JSON.stringify([items, axis, weight, everyRank, by, groups, runs.map((r) => r.id)]);
  const key = `scalar:${name}`;
  if (!force && state.signatures.get(key) === signature) return;
  state.signatures.set(key, signature);
  const section = name.includes("/") ? name.split("/")[0] : "";
  const grid = sectionBox($("#charts"), section, "scalars");
  let div = grid.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!div) {
    div = el("div", { class: "chart", "data-metric": name, "data-key": key });
    grid.append(div);
  }
  const traces = [], curves = [];
  let total = 0;
  for (const [i, run] of runs.entries()) {
    if (!items[i]) continue;
    const result = await api("scalars", { run: run.id, name, x: axis, points: POINTS });
    total += result.total;
    if (by) curves.push([groups[i], runCurve(result)]);
    else traces.push(...scalarTraces(result, run, axis, weight, everyRank, runs.length > 1));
  }
  if (by) traces.push(...groupTraces(curves, axis, weight));
  const legend = traces.filter((t) => t.showlegend !== false).length > 1;
  const last = name.slice(name.lastIndexOf("/") + 1);
  const yTitle = /^[0-9]+$/.test(last) ? name : last;  // "lr/0" (a param group's index) says more whole
  await Plotly.react(div, traces, layout(name, axis === "step" ? "step" : "wall time", yTitle, legend), PLOT_CONFIG);
  div.dataset.total = total;
  div.dataset.groups = by ? String(new Set(curves.map(([g]) => g)).size) : "";
}
