// stepwire dashboard: histogram heat maps (histograms over steps) on a symmetric-log value axis, and the histogram
// of one picked step as bars.
/* global Plotly */
import { api, el, fmtValue, layout, PLOT_CONFIG, sectionBox, state } from "./util.js";

// The value axis: zero's bucket (a bucket of its own in stepwire's scheme) spans [-0.5, 0.5]; from there each
// power of ten is one unit, so |v| = floor sits at 0.5 and 10 * floor at 1.5 (floor: the smallest bucket edge
// off zero that any occupied bucket has).
function symlog(v, floor) {
  if (v === 0) return 0;
  const t = 0.5 + Math.max(0, Math.log10(Math.abs(v) / floor));
  return v < 0 ? -t : t;
}

const SUPERSCRIPT = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };
const power = (e) => (e === 0 ? "1" : e === 1 ? "10" : `10${String(e).replace(/./g, (c) => SUPERSCRIPT[c])}`);

/** Brick edges, z rows and ticks of a heat map answer: occupied buckets at their true place on the symlog axis,
 * empty gaps between them, "0" at zero and every power of ten labelled (every n-th when there are many). */
export function valueAxis(heat) {
  const zero = heat.lower.map((lo, i) => lo < 0 && heat.upper[i] > 0);
  const offZero = heat.lower.flatMap((lo, i) => (zero[i] ? [] : [Math.abs(lo), Math.abs(heat.upper[i])]))
    .filter((v) => v > 0);
  const floor = offZero.length ? Math.min(...offZero) : 1;
  const edges = [], z = [], labels = [], counts = [];
  const empty = heat.steps.map(() => null);
  heat.lower.forEach((lo, i) => {
    const a = zero[i] ? -0.5 : symlog(lo, floor), b = zero[i] ? 0.5 : symlog(heat.upper[i], floor);
    if (edges.length && edges[edges.length - 1] < a - 1e-9) {  // a gap: no bucket occupied there
      z.push(empty); counts.push(empty); labels.push("");
      edges.push(a);
    } else if (edges.length) edges[edges.length - 1] = Math.max(edges[edges.length - 1], a);
    if (!edges.length) edges.push(a);
    edges.push(b);
    const row = heat.z[i];
    z.push(row.map((c) => (c ? Math.log10(c + 1) : null)));
    counts.push(row);
    labels.push(zero[i] ? "0" : `[${fmtValue(lo)}, ${fmtValue(heat.upper[i])})`);
  });
  const tickvals = [], ticktext = [];
  if (zero.some(Boolean)) { tickvals.push(0); ticktext.push("0"); }
  if (edges.length) {
    const lowest = Math.floor(Math.log10(floor)), top = Math.max(...edges.map(Math.abs));
    const decades = Math.ceil(top - 0.5);
    const every = Math.max(1, Math.ceil(decades / 14));
    for (let d = 0; d <= decades; d += every) {
      const e = lowest + d + (Math.log10(floor) === lowest ? 0 : 1);
      const t = symlog(10 ** e, floor);
      for (const sign of [1, -1]) {
        const at = sign * t;
        if (at >= edges[0] - 0.25 && at <= edges[edges.length - 1] + 0.25) {
          tickvals.push(at); ticktext.push(sign < 0 ? `−${power(e)}` : power(e));
        }
      }
    }
  }
  return { edges, z, counts, labels, tickvals, ticktext };
}

/** The heat map block of histogram ``name`` of ``run``: drawn again when its stored count changed. */
export async function drawHistogram(run, name, items, force) {
  const key = `hist:${run.id}:${name}`;
  const signature = JSON.stringify([items]);
  const box = sectionBox(document.querySelector("#histograms"), `histograms of ${run.name}`, `hist-${run.id}`);
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
  const heatDiv = block.querySelector(".heatmap");
  // as many value rows as the chart has pixel rows (at least 120): the stored buckets where there is room
  const heat = await api("heatmap", { run: run.id, name, rows: Math.max(120, heatDiv.clientHeight - 70) });
  const axis = valueAxis(heat);
  await Plotly.react(heatDiv, [{
    type: "heatmap", x: heat.steps, y: axis.edges, z: axis.z, customdata: axis.counts,
    text: axis.z.map((row, i) => row.map(() => axis.labels[i])),
    hovertemplate: "step %{x}<br>%{text}<br>count %{customdata}<extra></extra>", colorscale: "Viridis",
    colorbar: { title: { text: "log10(count+1)", side: "right" }, thickness: 12 },
  }], {
    ...layout(`${name} (${heat.total} steps)`, "step", "value (symmetric log)"),
    yaxis: { title: { text: "value (symmetric log)", standoff: 4 }, tickvals: axis.tickvals, ticktext: axis.ticktext,
      automargin: true, zeroline: false },
  }, PLOT_CONFIG);
  heatDiv.dataset.steps = heat.steps.length;
  heatDiv.dataset.rows = heat.lower.length;
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
    ...layout(`${name} at step ${h.step}: ${h.count} values` + (h.nan + h.pos_inf + h.neg_inf
      ? `, ${h.nan} NaN, ${h.pos_inf + h.neg_inf} inf` : ""), "value", "count"), bargap: 0,
  }, PLOT_CONFIG);
}
