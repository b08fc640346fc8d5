// The local console's page: one uPlot chart per panel of /api/panels, refreshed every few seconds.
// Each panel element carries data-series and data-points (non-empty samples drawn): what a test reads.
"use strict";

const COLORS = ["#2e86de", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#d35400", "#2c3e50", "#f1c40f", "#7f8c8d"];
const REFRESH_MS = 5000;
const state = { panels: [], charts: {}, seconds: 900 };

function fmt(unit, v) {
  if (v == null || !isFinite(v)) return "–";
  switch (unit) {
    case "percentunit": return (v * 100).toFixed(Math.abs(v) < 0.1 ? 2 : 1) + "%";
    case "s": return v < 1 ? (v * 1000).toFixed(v < 0.01 ? 2 : 1) + " ms" : v.toFixed(2) + " s";
    case "reqps": return (Math.abs(v) < 10 ? v.toFixed(2) : v.toFixed(0)) + "/s";
    default: return Math.abs(v) < 10 ? String(+v.toFixed(2)) : v.toFixed(0);
  }
}

async function getJSON(url) {
  const reply = await fetch(url);
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || "HTTP " + reply.status);
  return body;
}

function span(text, className, title) {
  const el = document.createElement(className === "name" ? "b" : "span");
  el.textContent = text;
  if (className && className !== "name") el.className = className;
  if (title) el.title = title;
  return el;
}

// What the spec asks for, per model (text nodes only: names come from the user's mesh.yaml).
function renderModels(models) {
  const box = document.getElementById("models");
  box.replaceChildren(...models.map((m) => {
    const el = document.createElement("div");
    el.className = "model";
    el.dataset.model = m.model;
    const split = Object.entries(m.weights).map(([v, w]) => `v${v} ${w}%`).join(" · ");
    el.append(span(m.model, "name"), `${split} `, span(`(stable v${m.stable})`, "", "where a rollback lands"));
    for (const c of m.canary) el.append(" ", span(`canary v${c.version} at step ${c.weight}%`, "step"));
    if (m.mirror && m.mirror.percentage > 0) el.append(` · mirror ${m.mirror.percentage}% to v${m.mirror.version}`);
    return el;
  }));
}

// query_range answers one value list per series; uPlot wants one shared x axis.
function align(series) {
  const xs = [...new Set(series.flatMap((s) => s.values.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map((s) => {
    const column = new Array(xs.length).fill(null);
    for (const [t, v] of s.values) column[index.get(t)] = v;
    return column;
  });
  return [xs, ...ys];
}

function yRange(unit, min, max) {
  const low = Math.min(0, min ?? 0);
  let high = max ?? 0;
  if (!(high > low)) high = unit === "percentunit" ? 1 : low + 1;
  return [low, high * 1.1];
}

function makeChart(panel, el, names) {
  const unit = panel.unit;
  const opts = {
    width: Math.max(el.clientWidth - 24, 300),
    height: 230,
    // y from 0, and a flat line (no errors, nothing queued) sits at the bottom of a sensible scale
    scales: { x: { time: true }, y: { range: (u, min, max) => yRange(unit, min, max) } },
    series: [{}, ...names.map((name, i) => ({
      label: name, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
      value: (u, v) => fmt(unit, v),
    }))],
    axes: [{}, { size: 70, values: (u, vals) => vals.map((v) => fmt(unit, v)) }],
    legend: { live: true },
  };
  return new uPlot(opts, [[], ...names.map(() => [])], el.querySelector(".chart"));
}

async function fetchPanel(panel) {
  try {
    return await getJSON(`/api/panel/${panel.id}?seconds=${state.seconds}`);
  } catch (err) {
    return { error: err.message };
  }
}

// Every chart shares one time axis: from the first sample of real data on the page (an idle counter's
// `or vector(0)` does not count) to now, so the panels line up.
function firstData(bodies) {
  const starts = bodies.flatMap((b) => (b.series || [])
    .filter((s) => s.labelled && s.values.length)
    .map((s) => s.values[0][0]));
  return starts.length ? Math.min(...starts) : null;
}

function drawPanel(panel, body, xMin) {
  const el = document.getElementById(panel.id);
  const note = el.querySelector(".note");
  if (body.error) {
    el.dataset.state = "error";
    note.className = "note error";
    note.textContent = body.error;
    return;
  }
  const names = body.series.map((s) => s.name);
  const points = body.series.reduce((n, s) => n + s.values.filter((p) => p[1] != null).length, 0);
  el.dataset.series = String(body.series.length);
  el.dataset.points = String(points);
  el.dataset.state = "ok";
  note.className = "note" + (body.series.length ? "" : " empty");
  note.textContent = body.series.length ? "" : "no data yet: send some traffic";
  let chart = state.charts[panel.id];
  if (chart && chart.series.slice(1).map((s) => s.label).join("\n") !== names.join("\n")) {
    chart.destroy();
    chart = null;
  }
  if (!body.series.length) {
    if (chart) chart.destroy();
    delete state.charts[panel.id];
    return;
  }
  if (!chart) chart = state.charts[panel.id] = makeChart(panel, el, names);
  const data = align(body.series);
  chart.batch(() => {
    chart.setData(data, false);
    chart.setScale("x", { min: Math.max(body.start, xMin ?? body.start), max: body.end });
  });
}

function layout(panels) {
  const main = document.getElementById("panels");
  main.replaceChildren(...panels.map((p) => {
    const el = document.createElement("section");
    el.className = "panel";
    el.id = p.id;
    el.dataset.points = "0";
    el.dataset.series = "0";
    el.dataset.state = "loading";
    el.innerHTML = `<h2></h2><div class="source"></div><div class="note empty">loading…</div><div class="chart"></div>`;
    el.querySelector("h2").textContent = p.title;
    el.querySelector(".source").textContent = `Grafana: ${p.dashboard}`;
    return el;
  }));
}

async function refreshAll() {
  const status = document.getElementById("status");
  try {
    const meta = await getJSON("/api/panels");
    if (meta.panels.map((p) => p.id + p.title).join() !== state.panels.map((p) => p.id + p.title).join()) {
      for (const chart of Object.values(state.charts)) chart.destroy();
      state.charts = {};
      state.panels = meta.panels;
      layout(meta.panels);
    }
    renderModels(meta.models);
    status.dataset.state = meta.prometheus ? "ok" : "error";
    status.textContent = meta.prometheus ? `live from ${meta.prometheus}` : "the local Prometheus is not running";
    if (meta.spec_error) { status.dataset.state = "error"; status.textContent = `spec change ignored: ${meta.spec_error}`; }
  } catch (err) {
    status.dataset.state = "error";
    status.textContent = err.message;
    return;
  }
  const bodies = await Promise.all(state.panels.map(fetchPanel));
  const xMin = firstData(bodies);
  state.panels.forEach((panel, i) => drawPanel(panel, bodies[i], xMin));
  document.body.dataset.refreshed = String(Date.now());
}

document.getElementById("window").addEventListener("change", (e) => {
  state.seconds = Number(e.target.value);
  refreshAll();
});
window.addEventListener("resize", () => {
  for (const [id, chart] of Object.entries(state.charts)) {
    chart.setSize({ width: Math.max(document.getElementById(id).clientWidth - 24, 300), height: 230 });
  }
});
refreshAll();
setInterval(refreshAll, REFRESH_MS);
