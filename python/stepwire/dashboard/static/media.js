// stepwire dashboard: the media section of each selected run (images, audio, video, HTML, Plotly figures, tables).
// One card per media name with a step slider (the latest step until one is picked); contents come from
// /api/media/blob (typed and sandboxed by the server), tables from /api/media/table.
/* global Plotly */

const chosenStep = new Map();  // card key -> the step picked with its slider (absent: follow the latest)
const WIDE = new Set(["plotly", "table", "html"]);

async function getJSON(route, params) {
  const res = await fetch(`/api/${route}?${new URLSearchParams(params)}`);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const blobUrl = (run, name, item) => `/api/media/blob?${new URLSearchParams({ run: run.id, sha: item.sha256, name })}`;
const cardKey = (run, name) => `media:${run.id}:${name}`;

/** Each run's media records grouped by name (``/api/media``), by run id. */
export async function loadMedia(runs) {
  const out = new Map();
  for (const run of runs) out.set(run.id, await getJSON("media", { run: run.id }));
  return out;
}

/** The ``data-key`` of every media card the page should keep. */
export function mediaKeys(runs, media) {
  return runs.flatMap((run) => (media.get(run.id)?.names || []).map((n) => cardKey(run, n.name)));
}

// -- full size ----------------------------------------------------------------------------------------------
const viewer = document.querySelector("#media-viewer");
viewer?.addEventListener("click", (e) => { if (e.target.tagName !== "A") viewer.close(); });  // a click closes it

function openViewer(url, caption) {
  const dialog = viewer;
  dialog.querySelector("img").src = url;
  dialog.querySelector("figcaption").textContent = caption;
  dialog.querySelector("a").href = url;
  if (!dialog.open) dialog.showModal();
}

// -- one record -----------------------------------------------------------------------------------------------
function caption(item, several) {
  const parts = [];
  if (several) parts.push(`rank ${item.rank}`);
  if (item.caption) parts.push(item.caption);
  if (item.width && item.height) parts.push(`${item.width}×${item.height}`);
  return parts.join(" · ");
}

function imageItem(url, item, text) {
  const img = el("img", { src: url, alt: item.caption || "", title: "open full size", class: "media-image" });
  if (item.width && item.width < 160) img.classList.add("pixelated");
  img.addEventListener("click", () => openViewer(url, text));
  return img;
}

function sortable(table, columns, data, types) {
  const numeric = types.map((t) => /INT|FLOAT|DOUBLE|DECIMAL|REAL/.test(t));
  let order = [...data[0]?.keys() || []];
  let by = -1, descending = false;
  const body = el("tbody");
  const fill = () => body.replaceChildren(...order.map((r) => el("tr", {},
    ...columns.map((_, c) => el("td", numeric[c] ? { class: "num" } : {}, data[c][r] === null ? "" : data[c][r])))));
  const heads = columns.map((name, c) => {
    const th = el("th", { "data-column": name, title: "sort" }, name);
    th.addEventListener("click", () => {
      descending = by === c ? !descending : false;
      by = c;
      const col = data[c];
      const cmp = (a, b) => {
        const x = col[a], y = col[b];
        if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1;  // empty cells last
        const d = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return descending ? -d : d;
      };
      order = [...order].sort((a, b) => cmp(a, b) || a - b);
      for (const h of heads) h.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      fill();
    });
    return th;
  });
  table.append(el("thead", {}, el("tr", {}, ...heads)), body);
  fill();
}

async function tableItem(run, name, item, several) {
  const t = await getJSON("media/table", { run: run.id, sha: item.sha256, name });
  const note = t.truncated ? `the first ${t.rows} of ${t.rows_total} rows` : `${t.rows_total} rows`;
  const table = el("table", { class: "media-table" });
  sortable(table, t.columns, t.data, t.types);
  return el("figure", { class: "media-item" }, el("div", { class: "table-scroll" }, table),
    el("figcaption", {}, [caption(item, several), note].filter(Boolean).join(" · ")));
}

async function plotItem(url, item, several) {
  const div = el("div", { class: "media-plot" });
  const fig = await (await fetch(url)).json();
  const box = el("figure", { class: "media-item" }, div, el("figcaption", {}, caption(item, several)));
  // drawn once in the page: Plotly needs the element attached to size it
  box.draw = () => Plotly.react(div, fig.data || [], { margin: { l: 50, r: 10, t: 40, b: 35 }, ...fig.layout,
    autosize: true, height: 360 }, { displaylogo: false, responsive: true });
  return box;
}

async function renderItem(run, name, item, several) {
  const url = blobUrl(run, name, item);
  const text = caption(item, several);
  const kind = item.kind;
  if (kind === "table") return tableItem(run, name, item, several);
  if (kind === "plotly") return plotItem(url, item, several);
  let content;
  if (kind === "image" || item.mime.startsWith("image/")) content = imageItem(url, item, text);
  else if (kind === "audio") content = el("audio", { controls: "", preload: "metadata", src: url });
  else if (kind === "video") content = el("video", { controls: "", preload: "metadata", src: url });
  else if (kind === "html") {
    // no allow-same-origin, no allow-scripts: the server's own Content-Security-Policy sandboxes it as well
    content = el("iframe", { sandbox: "", src: url, referrerpolicy: "no-referrer", class: "media-html", title: name });
  } else content = el("a", { href: url, target: "_blank", rel: "noopener" }, `${item.mime} (${item.size} bytes)`);
  return el("figure", { class: "media-item", "data-rank": item.rank }, content, el("figcaption", {}, text));
}

// -- one card per name ----------------------------------------------------------------------------------------
async function drawCard(card, run, entry, force) {
  const steps = entry.steps.map((s) => s.step);
  const key = card.dataset.key;
  const picked = chosenStep.get(key);
  const index = picked !== undefined && steps.includes(picked) ? steps.indexOf(picked) : steps.length - 1;
  const at = entry.steps[index];
  const slider = card.querySelector("input");
  slider.max = Math.max(0, steps.length - 1);
  slider.value = index;
  card.querySelector(".step-picker").hidden = steps.length < 2;
  const more = entry.steps_total > steps.length ? ` (${steps.length} of ${entry.steps_total} steps shown)` : "";
  card.querySelector("output").textContent = `step ${at.step}${more}`;
  const signature = JSON.stringify([at.step, at.items.map((i) => [i.sha256, i.caption])]);
  if (!force && card.dataset.signature === signature) return;
  const several = new Set(entry.steps.flatMap((s) => s.items.map((i) => i.rank))).size > 1;
  const items = [];
  for (const item of at.items) items.push(await renderItem(run, entry.name, item, several));
  card.querySelector(".media-items").replaceChildren(...items);
  for (const box of items) if (box.draw) await box.draw();
  card.dataset.signature = signature;
  card.dataset.step = at.step;
}

function cardFor(grid, run, entry) {
  const key = cardKey(run, entry.name);
  let card = grid.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (card) {
    card.entry = entry;
    return card;
  }
  const slider = el("input", { type: "range", min: 0, max: 0, value: 0 });
  card = el("div", { class: `media-card${WIDE.has(entry.kind) ? " wide" : ""}`, "data-key": key,
    "data-media": entry.name, "data-kind": entry.kind },
  el("h4", {}, entry.name), el("div", { class: "step-picker" }, "step", slider, el("output", {}, "")),
  el("div", { class: "media-items" }));
  card.entry = entry;
  slider.addEventListener("input", () => {
    const e = card.entry;
    chosenStep.set(key, e.steps[+slider.value].step);
    drawCard(card, run, e, false).catch((err) => { document.querySelector("#status").textContent = `error: ${err.message}`; });
  });
  grid.append(card);
  return card;
}

/** Draw (or bring up to date) the media section of every run in ``runs`` from ``loadMedia``'s answers. */
export async function drawMedia(runs, media, force) {
  const panel = document.querySelector("#media");
  const wanted = new Set(runs.filter((r) => media.get(r.id)?.names.length).map((r) => `media-${r.id}`));
  for (const box of panel.querySelectorAll(":scope > details")) if (!wanted.has(box.dataset.run)) box.remove();
  for (const run of runs) {
    const answer = media.get(run.id);
    if (!answer || !answer.names.length) continue;
    let box = [...panel.querySelectorAll(":scope > details")].find((d) => d.dataset.run === `media-${run.id}`);
    if (!box) {
      box = el("details", { open: "", class: "media-run", "data-run": `media-${run.id}` }, el("summary", {}, ""),
        el("div", { class: "media-grid" }));
      panel.append(box);
    }
    const more = answer.names_total > answer.names.length ? `, ${answer.names.length} of ${answer.names_total} names shown` : "";
    box.querySelector("summary").textContent = `media of ${run.name} (${answer.total} records${more})`;
    const grid = box.querySelector(".media-grid");
    for (const entry of answer.names) await drawCard(cardFor(grid, run, entry), run, entry, force);
  }
}
