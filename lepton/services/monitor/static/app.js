// Lepton monitor dashboard. Every value that comes from the API is put into the page with
// textContent (never innerHTML), so names chosen by users are always shown as text.
"use strict";

const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2"];
const WINDOW_MS = 15 * 60 * 1000;

function byId(id) {
  return document.getElementById(id);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function fillRows(tbody, rows, columns, emptyText) {
  const fresh = document.createDocumentFragment();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const column of columns) {
      const value = column(row);
      tr.appendChild(Array.isArray(value) ? cell(value[0], value[1]) : cell(value));
    }
    fresh.appendChild(tr);
  }
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(emptyText, "empty");
    td.colSpan = columns.length;
    tr.appendChild(td);
    fresh.appendChild(tr);
  }
  tbody.replaceChildren(fresh);
}

// A number and its unit, kept on one line (a no-break space) in a narrow column.
function withUnit(number, unit) {
  return number + "\u00a0" + unit;
}

function percent(share) {
  return share === null || share === undefined ? "–" : withUnit((100 * share).toFixed(1), "%");
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 10) return withUnit(ms.toFixed(1), "ms");
  if (ms < 1000) return withUnit(Math.round(ms), "ms");
  if (ms < 120000) return withUnit((ms / 1000).toFixed(1), "s");
  return withUnit((ms / 60000).toFixed(1), "min");
}

function share(used, offered) {
  return offered > 0 ? percent(used / offered) : "–";
}

// A line chart on a canvas: named series of [time ms, value], the last WINDOW_MS shown.
// Its series are named up front: their order and colours are the same on every load,
// whichever history request happens to answer first.
class Chart {
  constructor(canvas, legend, names, format) {
    this.canvas = canvas;
    this.legend = legend;
    this.format = format || ((v) => (Math.abs(v) >= 10 ? v.toFixed(0) : v.toFixed(1)));
    this.series = new Map(names.map((name) => [name, []]));
  }

  add(name, time, value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return;
    const points = this.series.get(name);
    if (points.length && points[points.length - 1][0] >= time) return;
    points.push([time, value]);
    while (points.length && points[0][0] < time - WINDOW_MS) points.shift();
  }

  // The bitmap follows the canvas's size on the page (a phone's column is narrower than
  // the 460 px it starts with), so lines and labels are neither stretched nor blurred.
  fit(width, height) {
    const ratio = window.devicePixelRatio || 1;
    const pixels = [Math.round(width * ratio), Math.round(height * ratio)];
    if (this.canvas.width !== pixels[0]) this.canvas.width = pixels[0];
    if (this.canvas.height !== pixels[1]) this.canvas.height = pixels[1];
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return ctx;
  }

  draw(now) {
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!width || !height) return; // not laid out (hidden): nothing to see
    const ctx = this.fit(width, height);
    const left = 48;
    const bottom = height - 18;
    ctx.clearRect(0, 0, width, height);
    let top = 0;
    for (const points of this.series.values()) {
      for (const point of points) top = Math.max(top, point[1]);
    }
    top = top > 0 ? top * 1.1 : 1;
    ctx.strokeStyle = "#e3e6eb";
    ctx.fillStyle = "#6b7280";
    ctx.font = "11px system-ui, sans-serif";
    for (let i = 0; i <= 4; i += 1) {
      const y = bottom - (i / 4) * (bottom - 8);
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(width, y);
      ctx.stroke();
      ctx.fillText(this.format((i / 4) * top), 2, y + 4);
    }
    ctx.fillText("-15 min", left, height - 4);
    ctx.fillText("now", width - 24, height - 4);
    const x = (t) => left + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (width - left);
    const y = (v) => bottom - (v / top) * (bottom - 8);
    const legend = document.createDocumentFragment();
    let index = -1;
    for (const [name, points] of this.series) {
      index += 1;
      if (!points.length) continue;
      const colour = COLOURS[index % COLOURS.length];
      ctx.strokeStyle = colour;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      points.forEach((point, i) => {
        if (i === 0) ctx.moveTo(x(point[0]), y(point[1]));
        else ctx.lineTo(x(point[0]), y(point[1]));
      });
      ctx.stroke();
      const label = document.createElement("span");
      label.style.setProperty("--swatch", colour);
      label.textContent = name + " " + this.format(points[points.length - 1][1]);
      legend.appendChild(label);
    }
    this.legend.replaceChildren(legend);
  }
}

const charts = {
  utilisation: new Chart(byId("chart-utilisation"), byId("legend-utilisation"), ["cpu", "memory", "gpus"], percent),
  queue: new Chart(byId("chart-queue"), byId("legend-queue"), ["pending"]),
  throughput: new Chart(byId("chart-throughput"), byId("legend-throughput"), ["events/s"]),
  latency: new Chart(byId("chart-latency"), byId("legend-latency"), ["p50", "p95"], duration),
};

const RESOURCE_NAMES = { cpu_millicores: "cpu", memory_mib: "memory", gpus: "gpus", network_mbps: "network" };

// The session cookie (HttpOnly, set by /login) goes with every request to this origin; when
// the monitor no longer accepts it (its token expired), the page goes back to sign in.
function signIn() {
  window.location.assign("/login");
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { accept: "application/json" }, credentials: "same-origin" });
  if (response.status === 401) {
    signIn();
    throw new Error("signed out");
  }
  if (!response.ok) throw new Error(path + " answered " + response.status);
  return response.json();
}

// History from the time series, so a fresh page shows the last 15 minutes at once. A
// tenant's session reads only the nodes' series: the others add up every tenant's work.
async function loadHistory(tenant) {
  const nodes = [
    ["utilisation", "all/cpu_millicores", charts.utilisation, "cpu"],
    ["utilisation", "all/memory_mib", charts.utilisation, "memory"],
    ["utilisation", "all/gpus", charts.utilisation, "gpus"],
  ];
  const everyone = [
    ["queue_pending", "all", charts.queue, "pending"],
    ["events_per_s", "all", charts.throughput, "events/s"],
    ["scheduling_latency_ms", "p50", charts.latency, "p50"],
    ["scheduling_latency_ms", "p95", charts.latency, "p95"],
  ];
  const wanted = tenant === null ? nodes.concat(everyone) : nodes;
  const since = Date.now() - WINDOW_MS;
  await Promise.all(
    wanted.map(async ([metric, subject, chart, name]) => {
      const query = new URLSearchParams({ metric, subject, since: String(since) });
      const answer = await getJSON("/api/series?" + query);
      for (const point of answer.series[subject] || []) chart.add(name, point[0], point[1]);
    }),
  );
}

let previousEvents = null;

function renderOverview(overview) {
  const now = overview.time;
  byId("card-nodes").textContent = overview.nodes.alive;
  byId("card-dead").textContent = overview.nodes.dead;
  byId("card-pending").textContent = overview.queue.pending;
  byId("card-latency").textContent = duration(overview.scheduling_latency_ms.p95);
  byId("card-failures").textContent = percent(overview.jobs.failure_rate);
  // The pipeline's figures are every tenant's: a tenant's view has none (null).
  const pipeline = overview.pipeline;
  byId("card-events").textContent = pipeline ? pipeline.events.toLocaleString() : "–";
  byId("card-dlq").textContent = pipeline ? pipeline.dead_letters : "–";
  byId("pipeline").hidden = !pipeline;
  byId("card-alerts").textContent = overview.alerts.firing;
  const cluster = overview.utilisation.all || {};
  for (const [resource, name] of Object.entries(RESOURCE_NAMES)) {
    if (resource in cluster && resource !== "network_mbps") charts.utilisation.add(name, now, cluster[resource]);
  }
  charts.queue.add("pending", now, overview.queue.pending);
  if (pipeline && previousEvents && now > previousEvents[0]) {
    const rate = (pipeline.events - previousEvents[1]) / ((now - previousEvents[0]) / 1000);
    charts.throughput.add("events/s", now, Math.max(0, rate));
  }
  previousEvents = pipeline ? [now, pipeline.events] : null;
  charts.latency.add("p50", now, overview.scheduling_latency_ms.p50);
  charts.latency.add("p95", now, overview.scheduling_latency_ms.p95);
  for (const chart of Object.values(charts)) chart.draw(now);
  fillRows(
    byId("queues"),
    overview.queue.queues,
    [
      (q) => q.tenant,
      (q) => q.priority_class,
      (q) => q.pending,
      (q) => duration(q.oldest_wait_ms),
      (q) => duration(q.wait_ms.p50),
      (q) => duration(q.wait_ms.p95),
    ],
    "no queue",
  );
  byId("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
}

function render(update) {
  renderOverview(update.overview);
  fillRows(
    byId("alerts"),
    update.alerts,
    [
      (a) => a.rule,
      (a) => a.subject,
      (a) => [a.severity, a.severity],
      (a) => (Number.isFinite(a.value) ? a.value.toPrecision(4) : a.value),
      (a) => new Date(a.since).toLocaleString(),
    ],
    "no alert firing",
  );
  fillRows(
    byId("nodes"),
    update.nodes,
    [
      (n) => [n.node_id, "id"],
      (n) => n.region,
      (n) => (n.alive ? ["alive", "alive"] : ["dead", "dead"]),
      (n) => share(n.usage.cpu_millicores, n.capacity.cpu_millicores),
      (n) => share(n.usage.memory_mib, n.capacity.memory_mib),
      (n) => n.usage.gpus + " / " + n.capacity.gpus,
      (n) => n.running_job_ids.length,
      (n) => duration(n.last_heartbeat_age_ms) + " ago",
    ],
    "no node has reported",
  );
  fillRows(
    byId("jobs"),
    update.jobs,
    [
      (j) => [j.job_id, "id"],
      // The request's own name if it gave one, else the model the job trains.
      (j) => j.name || j.model_name,
      (j) => j.tenant,
      (j) => [j.state, j.state],
      (j) => (j.priority_class === null ? "" : j.priority_class + " (" + j.priority + ")"),
      (j) => j.node_ids.join(", "),
      (j) => (j.progress_percent === null ? "" : withUnit(j.progress_percent.toFixed(0), "%")),
      (j) => j.reason,
    ],
    "no job yet",
  );
  fillRows(
    byId("datasets"),
    update.datasets,
    [
      (d) => d.tenant,
      (d) => d.dataset,
      (d) => [d.state, d.state],
      (d) => d.rows,
      (d) => d.quality.rows_rejected,
      (d) => d.quality.duplicates_removed,
      (d) => d.quality.values_imputed,
      (d) => d.reject_reason,
    ],
    "no dataset yet",
  );
  refreshSlowViews(update.overview);
}

const SVG = "http://www.w3.org/2000/svg";

function rocChart(curves) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 100 100");
  svg.setAttribute("class", "roc");
  const diagonal = document.createElementNS(SVG, "line");
  for (const [name, value] of [["x1", 0], ["y1", 100], ["x2", 100], ["y2", 0]]) diagonal.setAttribute(name, value);
  diagonal.setAttribute("stroke", "#cbd5e1");
  diagonal.setAttribute("stroke-width", "0.5");
  svg.appendChild(diagonal);
  curves.forEach((curve, index) => {
    const line = document.createElementNS(SVG, "polyline");
    const points = curve.x.map((x, i) => (100 * x).toFixed(2) + "," + (100 - 100 * curve.y[i]).toFixed(2));
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLOURS[index % COLOURS.length]);
    line.setAttribute("stroke-width", "1");
    const title = document.createElementNS(SVG, "title");
    title.textContent = curve.label === null ? "roc" : "roc " + curve.label;
    line.appendChild(title);
    svg.appendChild(line);
  });
  return svg;
}

// The primary metric of each evaluation of a model name, oldest to newest.
function metricTrend(history, metric) {
  const values = history.map((point) => point.metrics[metric]).filter((v) => Number.isFinite(v));
  if (!metric || values.length < 2) return null;
  const low = Math.min(...values);
  const high = Math.max(...values);
  const span = high - low || 1;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 100 24");
  svg.setAttribute("class", "trend");
  const line = document.createElementNS(SVG, "polyline");
  const points = values.map((v, i) => ((100 * i) / (values.length - 1)).toFixed(2) + "," + (22 - (20 * (v - low)) / span).toFixed(2));
  line.setAttribute("points", points.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", COLOURS[0]);
  line.setAttribute("stroke-width", "1");
  const title = document.createElementNS(SVG, "title");
  title.textContent = metric + " over " + values.length + " evaluations: " + values.map((v) => v.toFixed(3)).join(", ");
  line.appendChild(title);
  svg.appendChild(line);
  return svg;
}

function renderModels(board) {
  const container = byId("models");
  const fresh = document.createDocumentFragment();
  for (const group of board) {
    const box = document.createElement("div");
    box.className = "model";
    const info = document.createElement("div");
    const heading = document.createElement("h3");
    heading.textContent = group.tenant + " / " + group.model_name + (group.primary_metric ? " — by " + group.primary_metric : "");
    info.appendChild(heading);
    const scroll = document.createElement("div");
    scroll.className = "scroll";
    const table = document.createElement("table");
    const tbody = document.createElement("tbody");
    fillRows(
      tbody,
      group.models,
      [
        (m) => (m.champion ? ["champion", "succeeded"] : ""),
        (m) => [m.model_id, "id"],
        (m) => m.algorithm,
        (m) => (group.primary_metric && m.metrics[group.primary_metric] !== null ? m.metrics[group.primary_metric].toFixed(4) : ""),
        (m) => (m.evaluated_at ? new Date(m.evaluated_at).toLocaleString() : ""),
      ],
      "not evaluated yet",
    );
    table.appendChild(tbody);
    scroll.appendChild(table);
    info.appendChild(scroll);
    const trend = metricTrend(group.history, group.primary_metric);
    if (trend) info.appendChild(trend);
    const promotions = document.createElement("p");
    promotions.className = "muted";
    promotions.textContent = group.promotions
      .slice(-5)
      .map((p) => p.verdict + " " + p.model_id)
      .join(" · ");
    info.appendChild(promotions);
    box.appendChild(info);
    const best = group.models.find((m) => m.roc.length);
    if (best) box.appendChild(rocChart(best.roc));
    fresh.appendChild(box);
  }
  if (board.length === 0) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "no model yet";
    fresh.appendChild(empty);
  }
  container.replaceChildren(fresh);
}

function renderPipeline(pipeline) {
  fillRows(
    byId("lag"),
    pipeline.lag,
    [(l) => [l.group, "id"], (l) => [l.topic, "id"], (l) => l.messages, (l) => (l.seconds === null ? "–" : l.seconds.toFixed(1))],
    "not measured yet",
  );
  const topics = Object.keys(pipeline.events_by_topic);
  for (const topic of Object.keys(pipeline.dead_letters)) if (!topics.includes(topic)) topics.push(topic);
  fillRows(
    byId("topics"),
    topics.sort().map((topic) => [topic, pipeline.dead_letters[topic] || 0, pipeline.events_by_topic[topic] || 0]),
    [(t) => [t[0], "id"], (t) => [t[1], t[1] > 0 ? "error" : ""], (t) => t[2]],
    "no topic read yet",
  );
}

// Models and the pipeline change slowly: fetched when their counts move, or every 5 s.
let slowKey = null;
let slowAt = 0;

function refreshSlowViews(overview) {
  const key = [overview.models.count, overview.models.evaluated, overview.models.champions].join("/");
  if (key === slowKey && overview.time - slowAt < 5000) return;
  slowKey = key;
  slowAt = overview.time;
  getJSON("/api/models").then((answer) => renderModels(answer.leaderboard)).catch(showError);
  if (overview.pipeline) getJSON("/api/pipeline").then(renderPipeline).catch(showError);
}

function showError(error) {
  const status = byId("connection");
  status.textContent = "error: " + error.message;
  status.className = "status down";
}

function connect() {
  const status = byId("connection");
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => {
    status.textContent = "live";
    status.className = "status live";
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself (the server asks for 2 s), but not after a refusal
    // (the stream ends when its token expires): then ask why, and sign in again if so.
    status.textContent = "reconnecting…";
    status.className = "status down";
    if (source.readyState === EventSource.CLOSED) {
      getJSON("/api/whoami")
        .then(() => setTimeout(connect, 2000))
        .catch(showError);
    }
  });
  source.addEventListener("update", (message) => render(JSON.parse(message.data)));
}

getJSON("/api/whoami")
  .then((session) => {
    byId("principal").textContent = session.principal;
    loadHistory(session.tenant).catch(showError).finally(connect);
  })
  .catch(showError);
