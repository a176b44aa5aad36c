// Tachimeter dashboard: vanilla JS, no build step. Pages are functions of a container;
// each returns a cleanup that stops its timers and live streams.
"use strict";

const KEY_STORAGE = "tachimeter.apiKey";
const THEME_STORAGE = "tachimeter.theme";

// ---------------------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (Math.abs(value) >= 1e6) return (value / 1e6).toFixed(2) + "M";
  if (Math.abs(value) >= 1e4) return (value / 1e3).toFixed(1) + "k";
  return value.toLocaleString(undefined, { maximumFractionDigits: digits });
}

function pct(value) {
  return value === null || value === undefined ? "–" : (value * 100).toFixed(1) + "%";
}

function shortTime(text) {
  if (!text) return "";
  const d = new Date(text);
  return d.toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

function summarize(value, limit = 140) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > limit ? text.slice(0, limit) + "…" : text;
}

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: "Bearer " + key } : {};
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const endpoint = path.split("?")[0];
  let response;
  try {
    response = await fetch(path, {
      ...options,
      headers: { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) },
    });
  } catch (error) {  // the server is unreachable: say which call, clear it once it answers
    error.endpoint = endpoint;
    throw error;
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = text;
  }
  if (!response.ok) {
    if (response.status === 401) askForKey();
    const detail = body && body.detail ? body.detail : `${response.status} ${response.statusText}`;
    const error = new ApiError(response.status, detail);
    error.endpoint = endpoint;
    throw error;
  }
  // A call that answers clears the errors its endpoint showed (a fixed query, a server
  // back up) and those of an unreachable server.
  document.querySelectorAll(".error-box").forEach((box) => {
    if (box.dataset.endpoint === endpoint || box.dataset.network === "1") box.remove();
  });
  return body;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? "?" + text : "";
}

function showError(container, error) {
  const endpoint = error.endpoint || "";
  const network = error instanceof ApiError ? "0" : "1";
  // One box per endpoint (and one for an unreachable server): a repeated failure
  // replaces its box instead of stacking another.
  container.querySelectorAll(".error-box").forEach((box) => {
    if (box.dataset.endpoint === endpoint || (network === "1" && box.dataset.network === "1")) box.remove();
  });
  const box = el("div", { class: "error-box", role: "alert" }, String(error.message || error));
  box.dataset.endpoint = endpoint;
  box.dataset.network = network;
  container.prepend(box);
  return box;
}

// ---------------------------------------------------------------------------- theme + charts

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function palette() {
  return cssVar("--series").split(",").map((c) => c.trim());
}

const charts = new Set();

// A uPlot chart in `node`: x values (unix seconds for time axes) and series of
// {label, values, kind: "line" | "bar"}. Drag across to zoom, double-click to reset,
// hover for values (the legend follows the cursor). Redrawn on theme change and resize.
// opts.marks: {alerts: [...], anomalies: [...]} drawn over the plot (see marksPlugin);
// opts.onDraw(u) runs after each draw.
function drawChart(node, x, series, opts = {}) {
  charts.add(node);
  node._spec = [x, series, opts];
  // A redraw of the same view (a refresh, live data, the theme: opts.view unchanged)
  // keeps the range the user zoomed into; double-click still resets it. Another view (a
  // new range or metric) starts unzoomed.
  let zoom = null;
  if (node._uplot) {
    const old = node._uplot;
    const xs = old.data[0];
    const same = opts.view !== undefined && opts.view === node._view;
    if (same && xs.length && (old.scales.x.min > xs[0] || old.scales.x.max < xs[xs.length - 1])) {
      zoom = [old.scales.x.min, old.scales.x.max];
    }
    old.destroy();
  }
  node._view = opts.view;
  const colors = palette();
  const grid = cssVar("--grid");
  const axis = { stroke: cssVar("--muted"), grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  const height = Math.max(160, (node.clientHeight || 300) - 56 - (opts.marks ? 52 : 0));
  const plugins = [];
  if (opts.marks) plugins.push(marksPlugin(node, opts.marks, series));
  if (opts.onDraw) plugins.push({ hooks: { draw: [opts.onDraw] } });
  node._uplot = new uPlot(
    {
      width: Math.max(240, node.clientWidth),
      height,
      // opts.xMax stretches the time axis to "now" past the last bucket's start; not a
      // zoomed range (one that ends before the last point), which stays as dragged.
      scales: {
        x: {
          time: opts.time !== false,
          range: opts.xMax ? (u, min, max) => [min, max >= x[x.length - 1] ? Math.max(max, opts.xMax) : max] : undefined,
        },
        // opts.yZero: bars of counts start at 0, so 97 against 98 does not look like none.
        y: opts.yZero ? { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] } : {},
      },
      axes: [
        opts.integerX ? { ...axis, incrs: [1, 2, 5, 10, 20, 50], values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : "")) } : axis,
        { ...axis, size: 60 },
      ],
      cursor: { drag: { x: true, y: false } },
      plugins,
      series: [
        { label: opts.xLabel || "time" },
        ...series.map((s, i) => {
          const color = colors[i % colors.length];
          const bar = s.kind === "bar";
          return {
            label: s.label,
            stroke: color,
            width: bar ? 1 : 2,
            fill: bar ? color + "88" : undefined,
            paths: bar ? uPlot.paths.bars({ size: [0.8, 48] }) : undefined,
            points: { show: !bar && x.length <= 120, size: 5 },
          };
        }),
      ],
    },
    [x, ...series.map((s) => s.values)],
    node,
  );
  if (opts.marks) node.append(marksLegend(node, opts.marks));
  if (zoom) node._uplot.setScale("x", { min: zoom[0], max: zoom[1] });
  return node._uplot;
}

// ---------------------------------------------------------------------------- chart marks

// Every chart's drawn marks, by chart id: what tests and screenshots check.
window.__tachimeterMarkers = window.__tachimeterMarkers || {};

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function alertText(a) {
  const labels = Object.entries(a.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  const until = a.end === null || a.end === undefined ? "still firing" : "until " + clock(a.end);
  return `${a.rule}${labels ? " {" + labels + "}" : ""} firing from ${clock(a.start)} ${until}` +
    (a.message ? ": " + a.message : "");
}

function anomalyShort(a) {
  return `${a.kind} in ${a.series || "the series"} ${clock(a.timestamp)} (${fmt(a.value, 1)} vs ~${fmt(a.expected, 1)})`;
}

function anomalyText(a) {
  return `${a.kind} in ${a.series || "the series"} at ${clock(a.timestamp)}: ${fmt(a.value, 2)} ` +
    `(expected ${fmt(a.expected, 2)}, score ${fmt(a.score, 1)})`;
}

// A uPlot plugin drawing, after the series: each alert's firing interval as a shaded band
// over the plot's height with the rule's name at its top, and each anomaly as a dashed
// line at its time with a ring on its value. What was drawn (inside the visible range) is
// kept in node.dataset.markers and window.__tachimeterMarkers[node.id].
function marksPlugin(node, marks, series) {
  function draw(u) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    const [xmin, xmax] = [u.scales.x.min, u.scales.x.max];
    const drawn = [];
    const bad = cssVar("--bad");
    const warn = cssVar("--warn");
    const ratio = devicePixelRatio || 1;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    for (const a of marks.alerts || []) {
      const end = a.end === null || a.end === undefined ? xmax : a.end;
      if (end < xmin || a.start > xmax) continue;
      const x0 = Math.max(left, u.valToPos(Math.max(a.start, xmin), "x", true));
      const x1 = Math.min(left + width, u.valToPos(Math.min(end, xmax), "x", true));
      const w = Math.max(3 * ratio, x1 - x0);
      ctx.fillStyle = bad + "26";
      ctx.fillRect(x0, top, w, height);
      ctx.fillStyle = bad;
      ctx.fillRect(x0, top, w, 3 * ratio);
      ctx.font = `${11 * ratio}px system-ui, sans-serif`;
      ctx.textAlign = "left";
      ctx.textBaseline = "alphabetic";
      ctx.fillText(a.rule, x0 + 3 * ratio, top + 15 * ratio);
      drawn.push({ type: "alert", rule: a.rule, start: a.start, end: a.end, x0, x1: x0 + w });
    }
    for (const a of marks.anomalies || []) {
      if (a.timestamp < xmin || a.timestamp > xmax) continue;
      const x = u.valToPos(a.timestamp, "x", true);
      ctx.strokeStyle = warn;
      ctx.lineWidth = 1.5 * ratio;
      ctx.setLineDash([4 * ratio, 3 * ratio]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.setLineDash([]);
      let y = null;
      const index = series.findIndex((s) => s.label === a.series);
      const scale = u.scales.y;
      if (a.value !== null && a.value >= scale.min && a.value <= scale.max && (index >= 0 || series.length === 1)) {
        y = u.valToPos(a.value, "y", true);
        ctx.lineWidth = 2 * ratio;
        ctx.beginPath();
        ctx.arc(x, y, 7 * ratio, 0, 2 * Math.PI);
        ctx.stroke();
      }
      drawn.push({ type: "anomaly", series: a.series, kind: a.kind, timestamp: a.timestamp, x, y });
    }
    ctx.restore();
    node.dataset.markers = String(drawn.length);
    if (node.id) window.__tachimeterMarkers[node.id] = drawn;
  }
  return { hooks: { draw: [draw] } };
}

// The marks' legend under a chart: one line per alert interval and anomaly (the full text
// in its tooltip too).
function marksLegend(node, marks) {
  node.querySelector(".marks-legend")?.remove();
  const items = [
    ...(marks.alerts || []).map((a) => el("span", { class: "mark alert", title: alertText(a) }, alertText(a))),
    ...(marks.anomalies || []).map((a) => el("span", { class: "mark anomaly", title: anomalyText(a) }, anomalyShort(a))),
  ];
  return el("div", { class: "marks-legend" },
    items.length ? items : el("span", { class: "muted" }, "No alert fired and no anomaly was detected in this range."));
}

function redrawCharts() {
  for (const node of charts) {
    if (!node.isConnected) {
      charts.delete(node);
      continue;
    }
    drawChart(node, ...node._spec);
  }
}

function toSeconds(text) {
  return Date.parse(text) / 1000;
}

function setupTheme() {
  document.getElementById("theme").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem(THEME_STORAGE, next);
    redrawCharts();
  });
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      for (const node of charts) {
        if (node.isConnected && node._uplot) {
          node._uplot.setSize({ width: Math.max(240, node.clientWidth), height: node._uplot.height });
        }
      }
    }, 150);
  });
}

// ---------------------------------------------------------------------------- API key

function askForKey() {
  const dialog = document.getElementById("key-dialog");
  if (dialog.open) return;
  document.getElementById("key-input").value = apiKey();
  dialog.showModal();
}

function setupKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  document.getElementById("key").addEventListener("click", askForKey);
  dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "save") return;
    const value = document.getElementById("key-input").value.trim();
    if (value) localStorage.setItem(KEY_STORAGE, value);
    else localStorage.removeItem(KEY_STORAGE);
    route();
  });
}

// ---------------------------------------------------------------------------- live stream

// Server-sent events read with fetch (EventSource cannot send an Authorization header);
// reconnects with Last-Event-ID so nothing is missed across short drops.
class LiveStream {
  constructor(params, onEvent, onReset) {
    this.params = params;
    this.onEvent = onEvent;
    this.onReset = onReset || (() => {});
    this.lastId = null;
    this.controller = null;
    this.stopped = false;
    this.connect();
  }

  async connect() {
    const indicator = document.getElementById("live");
    while (!this.stopped) {
      this.controller = new AbortController();
      try {
        const headers = { Accept: "text/event-stream", ...authHeaders() };
        if (this.lastId) headers["Last-Event-ID"] = this.lastId;
        const response = await fetch("/v1/stream" + query(this.params), {
          headers,
          signal: this.controller.signal,
        });
        if (!response.ok) throw new ApiError(response.status, "stream refused");
        indicator.textContent = "live";
        indicator.classList.add("on");
        await this.read(response.body.getReader());
      } catch (error) {
        if (this.stopped) return;
        if (error.status === 401) {
          askForKey();
          return;
        }
      }
      indicator.textContent = "reconnecting";
      indicator.classList.remove("on");
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  async read(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        this.dispatch(frame);
      }
    }
  }

  dispatch(frame) {
    const fields = {};
    for (const line of frame.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      fields[name] = fields[name] ? fields[name] + "\n" + value : value;
    }
    if (fields.id) this.lastId = fields.id;
    if (fields.event === "event" && fields.data) this.onEvent(JSON.parse(fields.data));
    else if (fields.event === "reset") this.onReset(fields.data ? JSON.parse(fields.data) : {});
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    const indicator = document.getElementById("live");
    indicator.textContent = "offline";
    indicator.classList.remove("on");
  }
}

// ---------------------------------------------------------------------------- event detail

async function showEvent(id) {
  const dialog = document.getElementById("detail");
  const body = document.getElementById("detail-body");
  document.getElementById("detail-title").textContent = "Event " + id;
  body.textContent = "Loading…";
  dialog.showModal();
  try {
    body.textContent = JSON.stringify(await api("/v1/events/" + encodeURIComponent(id)), null, 2);
  } catch (error) {
    body.textContent = String(error.message);
  }
}

function eventRow(event, fresh = false) {
  return el(
    "tr",
    { class: "clickable" + (fresh ? " fresh" : ""), onclick: () => showEvent(event.id), "data-id": event.id },
    el("td", {}, shortTime(event.timestamp)),
    el("td", {}, event.event_name),
    el("td", {}, el("span", { class: "pill " + (event.category || "") }, event.category || "")),
    el("td", {}, event.user_id || ""),
    el("td", { class: "props" }, summarize(event.properties)),
  );
}

function eventTable(events, emptyText) {
  const tbody = el("tbody", {}, events.map((e) => eventRow(e)));
  const table = el(
    "table",
    {},
    el("thead", {}, el("tr", {}, ["Time", "Event", "Category", "User", "Properties"].map((h) => el("th", {}, h)))),
    tbody,
  );
  if (!events.length && emptyText) tbody.append(el("tr", { class: "empty-row" }, el("td", { colspan: 5, class: "empty" }, emptyText)));
  return { table, tbody };
}

// ---------------------------------------------------------------------------- overview

function card(label, value, delta) {
  return el(
    "div",
    { class: "panel card" },
    el("div", { class: "label" }, label),
    el("div", { class: "value" }, value),
    delta ? el("div", { class: "delta " + (delta.cls || "") }, delta.text) : null,
  );
}

function changeText(metric, lowerIsBetter = false) {
  if (!metric) return null;
  if (metric.change_percent === null || metric.change_percent === undefined) {
    return { text: "yesterday " + fmt(metric.previous_value, 2) };
  }
  const up = metric.change_percent >= 0;
  const good = lowerIsBetter ? !up : up;
  return {
    text: `${up ? "▲" : "▼"} ${Math.abs(metric.change_percent).toFixed(1)}% vs yesterday (${fmt(metric.previous_value, 2)})`,
    cls: good ? "up" : "down",
  };
}

// The first time the overview's chart has drawn: a performance mark (and its time in
// window.__tachimeterRendered) that `python -m bench dashboard` reads as "first render".
function markRendered() {
  if (window.__tachimeterRendered !== undefined) return;
  window.__tachimeterRendered = performance.now();
  performance.mark("tachimeter:rendered");
}

function pageOverview(container) {
  container.append(el("h1", {}, "Overview"));
  const cards = el("div", { class: "grid cards", id: "overview-cards" });
  const chartNode = el("div", { class: "chart", id: "chart-per-minute" });
  const errorsPanel = el("div", { class: "panel" }, el("h2", {}, "Recent errors"));
  container.append(
    cards,
    el("div", { class: "grid two" },
      el("div", { class: "panel" }, el("h2", {}, "Events and errors per minute (last hour)"), chartNode),
      errorsPanel),
  );
  let minutes = new Map();
  let marks = { alerts: [], anomalies: [] };
  let errorTable = null;

  function drawMinutes() {
    const keys = [...minutes.keys()].sort();
    drawChart(chartNode, keys.map(toSeconds), [
      { label: "events", kind: "bar", values: keys.map((k) => minutes.get(k).events) },
      { label: "errors", kind: "line", values: keys.map((k) => minutes.get(k).errors) },
    ], { marks, onDraw: markRendered, view: "overview" });
  }

  async function load() {
    try {
      const data = await api("/v1/overview?minutes=60");
      const today = Object.fromEntries(data.today.map((m) => [m.metric_key, m]));
      const health = data.health;
      cards.replaceChildren(
        card("Server", el("span", { class: health.status === "ok" ? "status-ok" : "status-bad" }, health.status),
          { text: `${health.pending_events} pending · ${health.stream_subscribers} live` }),
        card("Events, last hour", fmt(data.events_last_hour)),
        card("Error rate, last hour", pct(data.error_rate_last_hour)),
        card("Active missions", fmt(data.active_missions)),
        card("Events today", fmt(today.events_today && today.events_today.value), changeText(today.events_today)),
        card("Users today", fmt(today.unique_users_today && today.unique_users_today.value), changeText(today.unique_users_today)),
        card("Tokens today", fmt(today.total_tokens_today && today.total_tokens_today.value), changeText(today.total_tokens_today, true)),
        card("Cost today (USD)", today.cost_usd_today ? "$" + today.cost_usd_today.value.toFixed(2) : "–", changeText(today.cost_usd_today, true)),
      );
      minutes = new Map();
      const now = Date.parse(data.now);
      for (let i = 59; i >= 0; i--) {
        const key = new Date(Math.floor((now - i * 60000) / 60000) * 60000).toISOString().slice(0, 16) + ":00Z";
        minutes.set(key, { events: 0, errors: 0 });
      }
      for (const m of data.per_minute) minutes.set(m.minute, { events: m.events, errors: m.errors });
      marks = { alerts: data.alerts, anomalies: data.anomalies };
      drawMinutes();
      const { table } = eventTable(data.recent_errors, "No errors in the last 7 days.");
      errorTable = table;
      errorsPanel.replaceChildren(el("h2", {}, "Recent errors"), el("div", { class: "scroll" }, table));
    } catch (error) {
      showError(container, error);
    }
  }

  load();
  const stream = new LiveStream({}, (event) => {
    const key = event.timestamp.slice(0, 16) + ":00Z";
    const bucket = minutes.get(key);
    if (bucket) {
      bucket.events += 1;
      if (event.category === "error") bucket.errors += 1;
      drawMinutes();
    }
    if (event.category === "error" && errorTable) {
      const tbody = errorTable.querySelector("tbody");
      tbody.querySelector(".empty-row")?.remove();
      tbody.prepend(eventRow(event, true));
    }
  }, () => load());
  const timer = setInterval(load, 30000);
  return () => {
    stream.stop();
    clearInterval(timer);
  };
}

// ---------------------------------------------------------------------------- events

const RANGES = { "1h": ["-1h", "minute"], "24h": ["-24h", "hour"], "7d": ["-7d", "hour"], "30d": ["-30d", "day"] };
const MEASURES = ["count", "unique_users", "unique_sessions", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"];

// Parameters after the page's name in the hash: #/metrics?name=llm_latency&range=7d.
function hashParams() {
  const cut = location.hash.indexOf("?");
  return cut < 0 ? {} : Object.fromEntries(new URLSearchParams(location.hash.slice(cut + 1)));
}

function select(id, options, value) {
  return el("select", { id }, options.map(([v, label]) => el("option", { value: v, selected: v === value }, label)));
}

function pageEvents(container) {
  container.append(el("h1", {}, "Events"));
  const controls = el("div", { class: "controls" },
    el("label", {}, "Event", select("ev-name", [["", "(all events)"]], "")),
    el("label", {}, "Range", select("ev-range", Object.keys(RANGES).map((r) => [r, r]), "24h")),
    el("label", {}, "Measure", select("ev-measure", MEASURES.map((m) => [m, m]), "count")),
    el("label", {}, "Property (numeric measures)", el("input", { id: "ev-property", placeholder: "duration_ms" })),
    el("label", {}, "Breakdown by property", el("input", { id: "ev-breakdown", placeholder: "model" })),
    el("button", { class: "primary", id: "ev-apply", onclick: () => loadTrend() }, "Show"),
  );
  const chartNode = el("div", { class: "chart tall", id: "chart-trend" });
  const tail = eventTable([], null);
  tail.tbody.id = "tail-body";
  const tailFilter = el("input", { id: "tail-filter", placeholder: "event names, comma-separated" });
  const pause = el("button", { id: "tail-pause" }, "Pause");
  container.append(
    el("div", { class: "panel" }, el("h2", {}, "Trend"), controls, chartNode),
    el("div", { class: "panel", style: "margin-top:14px" },
      el("div", { class: "controls" }, el("h2", { style: "flex:1;margin:0" }, "Live tail"),
        tailFilter, el("button", { onclick: () => restartTail() }, "Filter"), pause),
      el("div", { class: "scroll" }, tail.table)),
  );
  let paused = false;
  let stream = null;
  let held = [];  // events that arrived while paused, shown on resume (the newest 200)
  const showLive = (event) => {
    tail.tbody.prepend(eventRow(event, true));
    while (tail.tbody.children.length > 200) tail.tbody.lastChild.remove();
  };
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      held.forEach(showLive);
      held = [];
    }
  });

  async function loadNames() {
    try {
      const names = await api("/v1/events/names?start=-30d");
      const node = document.getElementById("ev-name");
      for (const n of names) node.append(el("option", { value: n.name }, `${n.name} (${fmt(n.count)})`));
    } catch (error) {
      showError(container, error);
    }
  }

  async function loadTrend() {
    const [start, interval] = RANGES[document.getElementById("ev-range").value];
    const params = {
      event: document.getElementById("ev-name").value,
      start,
      interval,
      measure: document.getElementById("ev-measure").value,
      property: document.getElementById("ev-property").value.trim(),
      breakdown: document.getElementById("ev-breakdown").value.trim(),
    };
    try {
      const trend = await api("/v1/trends" + query(params));
      const series = trend.series.map((s) => ({
        label: s.other ? "other" : s.breakdown === null ? (trend.event || "all events") : s.breakdown,
        kind: "line",
        values: s.values,
      }));
      drawChart(chartNode, trend.buckets.map(toSeconds), series);
    } catch (error) {
      showError(container, error);
    }
  }

  async function loadRecent() {
    const names = tailFilter.value.trim();
    try {
      const page = await api("/v1/events/search" + query({ limit: 50, event: names }));
      tail.tbody.replaceChildren(...page.events.map((e) => eventRow(e)));
    } catch (error) {
      showError(container, error);
    }
  }

  function restartTail() {
    if (stream) stream.stop();
    loadRecent();
    held = [];
    stream = new LiveStream({ event: tailFilter.value.trim() }, (event) => {
      if (paused) {
        held.push(event);
        if (held.length > 200) held.shift();
        return;
      }
      showLive(event);
    }, () => loadRecent());
  }

  loadNames();
  loadTrend();
  restartTail();
  return () => stream && stream.stop();
}

// ---------------------------------------------------------------------------- metrics

function simpleTable(headers, rows, emptyText) {
  const tbody = el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c)))));
  if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: headers.length, class: "empty" }, emptyText || "Nothing yet.")));
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), tbody);
}

function pageMetrics(container) {
  container.append(el("h1", {}, "Metrics explorer"));
  const chartNode = el("div", { class: "chart tall", id: "chart-metric" });
  const controls = el("div", { class: "controls" },
    el("label", {}, "Metric", select("m-name", [["", "(choose a metric)"]], "")),
    el("label", {}, "Label filter (PromQL)", el("input", { id: "m-match", placeholder: 'route="/run"' })),
    el("label", {}, "Range", select("m-range", Object.keys(RANGES).map((r) => [r, r]), "24h")),
    el("label", {}, "Aggregation", select("m-agg", [["", "(none)"], ["sum", "sum"], ["avg", "avg"], ["max", "max"], ["min", "min"], ["rate", "rate"], ["increase", "increase"], ["percentiles", "percentiles"]], "")),
    el("label", {}, "Group by labels", el("input", { id: "m-group", placeholder: "model" })),
    el("button", { class: "primary", onclick: () => load() }, "Show"));
  const anomalyNote = el("p", { class: "muted", id: "m-anomalies" });
  container.append(el("div", { class: "panel" }, controls, chartNode, anomalyNote));

  const wanted = hashParams();
  if (wanted.range && RANGES[wanted.range]) document.getElementById("m-range").value = wanted.range;
  api("/v1/metrics/names").then((metricNames) => {
    const node = document.getElementById("m-name");
    for (const m of metricNames) node.append(el("option", { value: m.name }, `${m.name} (${m.series} series)`));
    if (metricNames.length) {
      node.value = metricNames.some((m) => m.name === wanted.name) ? wanted.name : metricNames[0].name;
      load();
    } else {
      chartNode.replaceChildren(el("div", { class: "empty" }, "No metrics stored yet."));
    }
  }).catch((error) => showError(container, error));

  async function load() {
    const name = document.getElementById("m-name").value;
    if (!name) return;
    const match = document.getElementById("m-match").value.trim();
    const params = {
      name,
      start: RANGES[document.getElementById("m-range").value][0],
      aggregation: document.getElementById("m-agg").value,
      group_by: document.getElementById("m-group").value.trim(),
    };
    try {
      const result = await api("/v1/metrics/query" + query(params) + (match ? "&match=" + encodeURIComponent(match) : ""));
      if (!result.series.length) {  // say so, rather than draw empty axes
        if (chartNode._uplot) { chartNode._uplot.destroy(); chartNode._uplot = null; }
        charts.delete(chartNode);  // nothing to redraw on a theme change
        chartNode.replaceChildren(el("div", { class: "empty" },
          `No series of ${name}${match ? " matching " + match : ""} in this range` +
          (params.aggregation ? ` with aggregation ${params.aggregation}.` : ".")));
        anomalyNote.textContent = "";
        return;
      }
      const [report, alerts] = await Promise.all([
        api("/v1/anomalies" + query({ metric: name, start: params.start }))
          .catch((error) => (error.status === 404 ? { anomalies: [] } : Promise.reject(error))),
        api("/v1/alerts/intervals" + query({ start: params.start })),
      ]);
      chartNode.querySelectorAll(".empty").forEach((node) => node.remove());
      const times = [...new Set(result.series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
      const series = result.series.slice(0, 12).map((s) => {
        const byTime = new Map(s.points);
        const label = Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(",") || s.name || name;
        return { label, kind: "line", values: times.map((t) => (byTime.has(t) ? byTime.get(t) : null)) };
      });
      // The detector runs on the metric summed over its series: its marks carry that value.
      const found = (report.anomalies || []).map((a) => ({ ...a, series: series.length === 1 ? series[0].label : "sum" }));
      drawChart(chartNode, times, series, {
        marks: { alerts, anomalies: found },
        xMax: Date.now() / 1000,
        view: JSON.stringify([params, match]),
      });
      anomalyNote.textContent = found.length
        ? `Anomalies (robust z-score over the sum): ${found.map((a) => `${a.kind} at ${clock(a.timestamp)}`).join("; ")}`
        : "No anomalies detected in this range.";
    } catch (error) {
      showError(container, error);
    }
  }
  return () => {};
}

// ---------------------------------------------------------------------------- missions

function pageMissions(container) {
  container.append(el("h1", {}, "Missions"));
  const controls = el("div", { class: "controls" },
    el("label", {}, "Range", select("mi-range", [["-24h", "24h"], ["-7d", "7d"], ["-30d", "30d"]], "-30d")),
    el("label", {}, "Backend", el("input", { id: "mi-backend", placeholder: "anthropic" })),
    el("label", {}, "Model", el("input", { id: "mi-model", placeholder: "claude-sonnet-4" })),
    el("label", {}, "Status", el("input", { id: "mi-status", placeholder: "failed" })),
    el("label", {}, "Compare by", select("mi-by", [["model", "model"], ["backend", "backend"], ["tag", "tag"]], "model")),
    el("button", { class: "primary", onclick: () => load() }, "Show"));
  const cards = el("div", { class: "grid cards" });
  const listPanel = el("div", { class: "panel" }, el("h2", {}, "Missions"));
  const toolsPanel = el("div", { class: "panel" }, el("h2", {}, "Tool usage"));
  const comparePanel = el("div", { class: "panel" }, el("h2", {}, "Comparison"));
  const patternsPanel = el("div", { class: "panel" }, el("h2", {}, "Failure-linked patterns"));
  container.append(el("div", { class: "panel" }, controls), el("div", { style: "height:14px" }), cards,
    el("div", { class: "grid two" }, listPanel, toolsPanel, comparePanel, patternsPanel));

  async function load() {
    const filters = {
      start: document.getElementById("mi-range").value,
      backend: document.getElementById("mi-backend").value.trim(),
      model: document.getElementById("mi-model").value.trim(),
      status: document.getElementById("mi-status").value.trim(),
    };
    try {
      const [metrics, missions, tools, comparison, patterns] = await Promise.all([
        api("/v1/missions/metrics" + query(filters)),
        api("/v1/missions" + query({ ...filters, limit: 100 })),
        api("/v1/missions/tools" + query(filters)),
        // Compared groups and failure patterns weigh successes against failures: every
        // filter but the status applies.
        api("/v1/missions/compare" + query({ start: filters.start, backend: filters.backend, model: filters.model, by: document.getElementById("mi-by").value })),
        api("/v1/missions/patterns" + query({ start: filters.start, backend: filters.backend, model: filters.model })),
      ]);
      // Spec 414's metrics say 0 where nothing finished: shown as no value.
      const finished = metrics.total_missions - metrics.active_missions;
      const seconds = (ms) => (finished ? fmt(ms / 1000, 1) + " s" : "–");
      cards.replaceChildren(
        card("Missions", fmt(metrics.total_missions)),
        card("Success rate", finished ? pct(metrics.success_rate) : "–"),
        card("Median duration", seconds(metrics.median_execution_time_ms)),
        card("p90 duration", seconds(metrics.p90_execution_time_ms)),
        card("Active", fmt(metrics.active_missions)),
        card("Failed", fmt(metrics.failed_missions)),
      );
      listPanel.replaceChildren(el("h2", {}, "Missions"), el("div", { class: "scroll" }, simpleTable(
        ["Created", "Status", "Backend", "Model", "Steps", "Tools", "Tokens", "Cost"],
        missions.map((m) => [shortTime(m.created_at), el("span", { class: "pill " + m.status }, m.status), m.backend || "", m.model || "",
          fmt(m.step_count), fmt(m.tool_calls), fmt(m.total_tokens), "$" + m.total_cost.toFixed(4)]),
        "No missions in this range.")));
      toolsPanel.replaceChildren(el("h2", {}, "Tool usage"), el("div", { class: "scroll" }, simpleTable(
        ["Tool", "Calls", "Failures", "p50 ms", "p90 ms"],
        (tools.tools || []).map((t) => [t.tool_name, fmt(t.invocations), fmt(t.failures), fmt(t.p50_ms, 1), fmt(t.p90_ms, 1)]),
        "No tool calls.")));
      comparePanel.replaceChildren(el("h2", {}, "Comparison by " + document.getElementById("mi-by").value), el("div", { class: "scroll" }, simpleTable(
        ["Group", "Missions", "Success", "Median s"],
        (comparison.groups || []).map((g) => [g.group, fmt(g.missions), pct(g.success_rate), fmt(g.median_duration_ms === null ? null : g.median_duration_ms / 1000, 1)]),
        "Groups need at least " + comparison.min_missions + " missions.")));
      patternsPanel.replaceChildren(el("h2", {}, "Failure-linked patterns"), el("div", { class: "scroll" }, simpleTable(
        ["Pattern", "Kind", "Missions", "Failure rate"],
        (patterns.failure_associated || []).map((p) => [p.tools.join(p.kind === "gapped" ? " → … → " : " → "), p.kind === "gapped" ? "in order, gaps allowed" : "consecutive", fmt(p.missions), pct(p.failure_rate)]),
        "No pattern stands out.")));
    } catch (error) {
      showError(container, error);
    }
  }
  load();
  return () => {};
}

// ---------------------------------------------------------------------------- funnels and retention

function pageFunnels(container) {
  container.append(el("h1", {}, "Funnels & retention"));
  const funnelPanel = el("div", { class: "panel" }, el("h2", {}, "Funnels"));
  const definePanel = el("div", { class: "panel" }, el("h2", {}, "Define a funnel (admin key)"),
    el("div", { class: "controls" },
      el("label", {}, "Name", el("input", { id: "f-name", placeholder: "onboarding" })),
      el("label", {}, "Steps (event names, in order)", el("input", { id: "f-steps", placeholder: "signup, mission_started, mission_completed", size: 40 })),
      el("button", { class: "primary", onclick: () => define() }, "Save")));
  const retentionPanel = el("div", { class: "panel" }, el("h2", {}, "Retention"),
    el("div", { class: "controls" },
      el("label", {}, "Cohort event", el("input", { id: "r-start", value: "session_started" })),
      el("label", {}, "Return event (any if empty)", el("input", { id: "r-return" })),
      el("label", {}, "Period", select("r-period", [["day", "day"], ["week", "week"], ["month", "month"]], "week")),
      el("button", { class: "primary", onclick: () => loadRetention() }, "Show")),
    el("div", { id: "retention-table" }));
  container.append(el("div", { class: "grid two" }, funnelPanel, definePanel), el("div", { style: "height:14px" }), retentionPanel);

  async function loadFunnels() {
    try {
      const stored = await api("/v1/funnels");
      const rows = [];
      const draws = [];
      for (const f of stored) {
        const report = await api(`/v1/funnels/${encodeURIComponent(f.definition.name)}/report?start=-30d`);
        const chart = el("div", { class: "chart", id: "funnel-" + f.id });
        rows.push(el("div", {}, el("h2", {}, f.definition.name), chart));
        draws.push(() => drawChart(chart, report.steps.map((_, i) => i + 1),
          [{ label: "users reaching step", kind: "bar", values: report.steps.map((st) => st.entered) }],
          { time: false, xLabel: "step", yZero: true, integerX: true }));
        rows.push(simpleTable(["Step", "Event", "Entered", "From start"], report.steps.map((st) => [st.step + 1, st.event, fmt(st.entered), pct(st.conversion_from_start)])));
      }
      funnelPanel.replaceChildren(el("h2", {}, "Funnels (last 30 days)"), ...(rows.length ? rows : [el("div", { class: "empty" }, "No funnel defined yet.")]));
      // Drawn once in the page, at the panel's width (before, every chart but the last
      // was drawn detached, 240 px wide).
      draws.forEach((draw) => draw());
    } catch (error) {
      showError(container, error);
    }
  }

  async function define() {
    const name = document.getElementById("f-name").value.trim();
    const steps = document.getElementById("f-steps").value.split(",").map((x) => x.trim()).filter(Boolean);
    try {
      await api("/v1/funnels?replace=true", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name, steps: steps.map((event) => ({ event })) }),
      });
      loadFunnels();
    } catch (error) {
      showError(container, error);
    }
  }

  async function loadRetention() {
    try {
      const matrix = await api("/v1/retention" + query({
        start_event: document.getElementById("r-start").value.trim(),
        return_event: document.getElementById("r-return").value.trim(),
        period: document.getElementById("r-period").value,
      }));
      const headers = ["Cohort", "Users", ...Array.from({ length: matrix.periods }, (_, i) => `${matrix.period} ${i}`)];
      // Percentages come as 0-100. A period that has not begun yet is blank, not 0 %.
      const now = Date.now();
      const begun = (start, k) => {
        const d = new Date(start);
        if (matrix.period === "month") d.setUTCMonth(d.getUTCMonth() + k);
        else d.setUTCDate(d.getUTCDate() + k * (matrix.period === "week" ? 7 : 1));
        return d.getTime() <= now;
      };
      const cell = (c, p, k) => (!begun(c.start, k) || p === null ? "–" : (p < 1 && p > 0 ? p.toFixed(1) : p.toFixed(0)) + "%");
      const rows = matrix.cohorts.map((c) => [shortTime(c.start), fmt(c.size), ...c.percentages.map((p, k) => cell(c, p, k))]);
      document.getElementById("retention-table").replaceChildren(el("div", { class: "scroll heat" }, simpleTable(headers, rows)));
    } catch (error) {
      showError(container, error);
    }
  }
  loadFunnels();
  loadRetention();
  return () => {};
}

// ---------------------------------------------------------------------------- alerts

function pageAlerts(container) {
  container.append(el("h1", {}, "Alerts"));
  const chartNode = el("div", { class: "chart", id: "chart-alerts" });
  const current = el("div", { class: "panel" }, el("h2", {}, "Current"));
  const history = el("div", { class: "panel" }, el("h2", {}, "History"));
  container.append(
    el("div", { class: "panel", style: "margin-bottom:14px" },
      el("h2", {}, "Errors per hour (last 7 days), alert firing intervals and anomalies"), chartNode),
    el("div", { class: "grid two" }, current, history));

  async function loadTimeline() {
    const [report, alerts] = await Promise.all([
      api("/v1/anomalies" + query({ event: "error_occurred", interval: "hour", start: "-7d" })),
      api("/v1/alerts/intervals" + query({ start: "-7d" })),
    ]);
    const points = report.points || [];
    const anomalies = (report.anomalies || []).map((a) => ({ ...a, series: "errors" }));
    drawChart(chartNode, points.map((p) => p.t), [
      { label: "errors", kind: "bar", values: points.map((p) => p.value) },
      { label: "expected", kind: "line", values: points.map((p) => p.expected) },
    ], { marks: { alerts, anomalies }, xMax: Date.now() / 1000, view: "alerts" });
  }

  async function load() {
    try {
      const [states, events] = await Promise.all([
        api("/v1/alerts"), api("/v1/alerts/history?limit=200"), loadTimeline()]);
      current.replaceChildren(el("h2", {}, "Current"), simpleTable(["Rule", "State", "Labels", "Value", "Since"],
        states.map((a) => [a.rule, el("span", { class: "pill " + a.state }, a.state), summarize(a.labels, 60), fmt(a.value, 3), shortTime(a.fired_at || a.active_at)]),
        "No alert is pending or firing."));
      history.replaceChildren(el("h2", {}, "History"), el("div", { class: "scroll" }, simpleTable(["At", "Rule", "Change", "Value", "Message"],
        events.map((e) => [shortTime(e.at), e.rule, `${e.from_state} → ${e.to_state}`, fmt(e.value, 3), e.message || ""]),
        "No alert has changed state. Rules are evaluated by the alert manager (docs/alerts.md).")));
    } catch (error) {
      showError(container, error);
    }
  }
  load();
  const timer = setInterval(load, 15000);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------------------- API explorer

function pageApi(container) {
  container.append(el("h1", {}, "API"),
    el("p", { class: "muted" }, "Every endpoint of this server, from ", el("a", { href: "/openapi.json" }, "/openapi.json"),
      ". Open one to read its parameters and try it; calls carry this page's API key."));
  const list = el("div", { class: "panel" });
  container.append(list);
  api("/openapi.json").then((spec) => {
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item)) {
        list.append(apiOperation(path, method.toUpperCase(), op));
      }
    }
  }).catch((error) => showError(container, error));
  return () => {};
}

function apiOperation(path, method, op) {
  const params = op.parameters || [];
  const inputs = {};
  const form = el("form", { onsubmit: (e) => { e.preventDefault(); send(); } });
  for (const p of params) {
    const input = el("input", { name: p.name, placeholder: p.schema && p.schema.default !== undefined ? String(p.schema.default) : "" });
    inputs[p.name] = [p, input];
    form.append(el("label", { title: p.description || "" }, `${p.name} (${p.in})${p.required ? " *" : ""}`), input);
  }
  let body = null;
  if (op.requestBody) {
    body = el("textarea", { rows: 5, placeholder: "request body (JSON)" });
    form.append(el("label", {}, "body"), body);
  }
  const output = el("pre", {});
  form.append(el("span", {}), el("button", { class: "primary", type: "submit" }, "Send"));

  async function send() {
    let url = path;
    const search = {};
    const headers = {};
    for (const [name, [p, input]] of Object.entries(inputs)) {
      const value = input.value.trim();
      if (!value) continue;
      if (p.in === "path") url = url.replace(`{${name}}`, encodeURIComponent(value));
      else if (p.in === "query") search[name] = value;
      else if (p.in === "header") headers[name] = value;
    }
    const options = { method, headers };
    if (body && body.value.trim()) {
      options.body = body.value;
      headers["Content-Type"] = "application/json";
    }
    try {
      const response = await fetch(url + query(search), { ...options, headers: { ...authHeaders(), ...headers } });
      const text = await response.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
      output.textContent = `${response.status} ${response.statusText}\n\n${shown.slice(0, 20000)}`;
    } catch (error) {
      output.textContent = String(error);
    }
  }

  return el("details", { class: "op" },
    el("summary", {}, el("span", { class: "method" }, method), el("code", {}, path), " ", el("span", { class: "muted" }, op.summary || "")),
    op.description ? el("p", { class: "muted" }, op.description) : null,
    form, output);
}

// ---------------------------------------------------------------------------- router

const PAGES = {
  overview: pageOverview,
  events: pageEvents,
  metrics: pageMetrics,
  missions: pageMissions,
  funnels: pageFunnels,
  alerts: pageAlerts,
  api: pageApi,
};

let cleanup = null;

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  const name = (location.hash.replace(/^#\/?/, "") || "overview").split("?")[0];
  const page = PAGES[name] || pageOverview;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  const container = document.getElementById("page");
  container.replaceChildren();
  container.dataset.page = name;
  cleanup = page(container);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  setupTheme();
  setupKeyDialog();
  route();
});
