// stepwire dashboard: what every panel module shares (the JSON API, DOM building, number formats, run colours).

export const state = {
  runs: [], selected: new Set(), signatures: new Map(), histStep: new Map(), colours: new Map(),
};
export const $ = (sel) => document.querySelector(sel);

export async function api(route, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) query.append(k, v);
  const res = await fetch(`/api/${route}?${query}`);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

export function el(tag, attrs = {}, ...children) {
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
export const finite = (v) => typeof v === "number" && Number.isFinite(v);
const notNumber = (v, empty) => (v === null || v === undefined ? empty : String(v));
export const fmtTime = (t) => (finite(t) && t ? new Date(t * 1000).toLocaleString() : "");
export const fmtDuration = (s) => (!finite(s) ? notNumber(s, "") : s < 60 ? `${s.toFixed(0)} s`
  : s < 3600 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);
export const fmtValue = (v) => (!finite(v) ? notNumber(v, "?")
  : Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : +v.toPrecision(3));
export const fmtSeconds = (s) => (!finite(s) ? notNumber(s, "") : Math.abs(s) < 1e-3 ? `${(s * 1e6).toFixed(0)} µs`
  : Math.abs(s) < 1 ? `${(s * 1e3).toFixed(2)} ms` : `${s.toFixed(3)} s`);
export const fmtPercent = (f) => (finite(f) ? `${(100 * f).toFixed(2)}%` : notNumber(f, ""));
export const cssId = (s) => s.replace(/[^A-Za-z0-9_-]/g, "_");

// One colour per run (or group) for as long as the page is open: the line, its band and its legend entry.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
export function colourOf(key) {
  if (!state.colours.has(key)) state.colours.set(key, PALETTE[state.colours.size % PALETTE.length]);
  return state.colours.get(key);
}
export function translucent(hex, alpha = 0.18) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},${alpha})`;
}

// Plotly layout pieces every chart uses: a small title, axis titles (objects: plain strings are ignored by the
// Plotly.js served), a compact legend above the plot area.
export function layout(title, xTitle, yTitle, legend = false) {
  return {
    title: { text: title, font: { size: 13 }, x: 0.01, xanchor: "left", y: 0.98, yanchor: "top" },
    margin: { l: 60, r: 10, t: legend ? 52 : 30, b: 45 }, showlegend: legend,
    legend: { orientation: "h", x: 0, xanchor: "left", y: 1.0, yanchor: "bottom", font: { size: 10 },
      itemwidth: 30, tracegroupgap: 0 },
    xaxis: { title: { text: xTitle, standoff: 4 }, automargin: true },
    yaxis: { title: { text: yTitle, standoff: 4 }, automargin: true },
  };
}
export const PLOT_CONFIG = { displaylogo: false, responsive: true };

export function sectionBox(parent, section, idPrefix, label) {
  const id = `${idPrefix}-${cssId(section || "_")}`;
  let box = parent.querySelector(`#${id}`);
  if (!box) {
    box = el("details", { id, open: "" }, el("summary", {}, label || section || "(no section)"),
      el("div", { class: "grid" }));
    parent.append(box);
  }
  return box.querySelector(".grid");
}
