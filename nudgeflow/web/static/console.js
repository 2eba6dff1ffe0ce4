// Nudgeflow console: one WebSocket (/ws/console) feeds everything on the page.
// Plain DOM and SVG, no framework, no build step. The admin token, if the worker
// has one, is taken from the page address: /#token=... (never sent to other hosts).
"use strict";

const FEED_MAX = 200;
const SVG_NS = "http://www.w3.org/2000/svg";

function token() {
  const hash = new URLSearchParams(location.hash.slice(1));
  return hash.get("token") || new URLSearchParams(location.search).get("token");
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
const num = (x) => (x === null || x === undefined ? "–" : String(x));

// -- live feed ----------------------------------------------------------------

function feedRow(item) {
  const li = el("li", { "data-kind": item.kind, "data-rule": item.rule, "data-user": item.user_id });
  li.appendChild(el("span", { class: "time" }, (item.at || "").replace("T", " ").slice(0, 23)));
  if (item.kind === "trigger") {
    li.appendChild(el("span", { class: "badge trigger" }, item.send ? "trigger" : "exposure"));
    li.appendChild(el("span", {}, `${item.rule} → ${item.user_id} (${item.variant})${item.late ? " late" : ""}`));
  } else {
    li.appendChild(el("span", { class: `badge ${item.outcome}` }, item.outcome));
    const why = item.reason ? ` · ${item.reason}` : "";
    li.appendChild(el("span", {}, `${item.rule} · ${item.user_id}${why}`));
  }
  return li;
}

function addFeed(item) {
  const feed = document.getElementById("feed");
  feed.insertBefore(feedRow(item), feed.firstChild);
  while (feed.children.length > FEED_MAX) feed.removeChild(feed.lastChild);
}

// -- counters -----------------------------------------------------------------

function renderCounters(decisions) {
  const table = document.getElementById("counters");
  const outcomes = [...new Set(Object.values(decisions).flatMap((c) => Object.keys(c)))].sort();
  const head = el("tr");
  head.appendChild(el("th", {}, "rule"));
  outcomes.forEach((o) => head.appendChild(el("th", {}, o)));
  table.tHead.replaceChildren(head);
  const rows = Object.entries(decisions).map(([rule, counts]) => {
    const tr = el("tr", { "data-rule": rule });
    tr.appendChild(el("td", {}, rule));
    outcomes.forEach((o) => tr.appendChild(el("td", {}, num(counts[o] || 0))));
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
}

// -- experiments: table + SVG chart of conversion rate with 95% CI -------------

function ciChart(variants) {
  const width = 520, rowH = 28, left = 110, right = 20, top = 10, bottom = 26;
  const height = top + bottom + rowH * variants.length;
  const highs = variants.map((v) => v.ci_high ?? 0).concat([0.01]);
  const max = Math.min(1, Math.max(...highs) * 1.15);
  const x = (r) => left + (r / max) * (width - left - right);
  const chart = svg("svg", { class: "ci-chart", width, height, viewBox: `0 0 ${width} ${height}`,
                             role: "img", "aria-label": "conversion rate with 95% confidence interval" });
  for (let i = 0; i <= 4; i++) {
    const r = (max * i) / 4, gx = x(r);
    chart.appendChild(svg("line", { class: "grid", x1: gx, x2: gx, y1: top, y2: height - bottom }));
    chart.appendChild(svg("text", { x: gx, y: height - 8, "text-anchor": "middle" }, pct(r)));
  }
  chart.appendChild(svg("line", { class: "axis", x1: left, x2: width - right, y1: height - bottom, y2: height - bottom }));
  variants.forEach((v, i) => {
    const cy = top + rowH * i + rowH / 2;
    const g = svg("g", { class: v.is_control ? "variant control" : "variant", "data-variant": v.variant });
    g.appendChild(svg("text", { x: left - 8, y: cy + 4, "text-anchor": "end" }, v.variant));
    if (v.conversion_rate !== null) {
      g.appendChild(svg("line", { class: "ci", x1: x(v.ci_low), x2: x(v.ci_high), y1: cy, y2: cy }));
      g.appendChild(svg("circle", { class: "rate", cx: x(v.conversion_rate), cy, r: 5 }));
      g.appendChild(svg("text", { x: x(v.ci_high) + 6, y: cy + 4 }, pct(v.conversion_rate)));
    } else {
      g.appendChild(svg("text", { x: left + 4, y: cy + 4, class: "muted" }, "no exposures yet"));
    }
    chart.appendChild(g);
  });
  return chart;
}

function experimentBlock(exp) {
  const box = el("div", { class: "experiment", "data-rule": exp.rule });
  box.appendChild(el("h3", {}, `${exp.rule} · ${exp.experiment} (${exp.allocation})`));
  const table = el("table");
  const cols = ["variant", "exposures", "sent", "delivered", "opened", "clicked", "converted", "rate", "95% CI", "uplift", "p"];
  const head = el("tr");
  cols.forEach((c) => head.appendChild(el("th", {}, c)));
  table.appendChild(el("thead")).appendChild(head);
  const body = table.appendChild(el("tbody"));
  exp.variants.forEach((v) => {
    const tr = el("tr", { "data-variant": v.variant });
    const cells = [v.variant + (v.is_control ? " (control)" : ""), v.exposures, v.sent, v.delivered, v.opened,
                   v.clicked, v.converted, pct(v.conversion_rate),
                   v.ci_low === null ? "–" : `${pct(v.ci_low)} – ${pct(v.ci_high)}`,
                   v.uplift_abs === null ? "–" : (v.uplift_abs >= 0 ? "+" : "") + pct(v.uplift_abs),
                   v.p_value === null ? "–" : v.p_value.toFixed(3)];
    cells.forEach((c) => tr.appendChild(el("td", {}, num(c))));
    body.appendChild(tr);
  });
  box.appendChild(table);
  box.appendChild(ciChart(exp.variants));
  return box;
}

let shownExperiments = "";

function renderExperiments(experiments) {
  const root = document.getElementById("experiments");
  const key = JSON.stringify(experiments);
  if (!experiments.length || key === shownExperiments) return; // redraw only on change
  shownExperiments = key;
  root.replaceChildren(...experiments.map(experimentBlock));
}

// -- funnels: per rule, a row per step (GET /rules/<name> has the same numbers) --

const sumOf = (byReason) => Object.values(byReason).reduce((a, b) => a + b, 0);
const reasons = (byReason) =>
  Object.entries(byReason).map(([why, n]) => `${why} ${n}`).join(", ");

function funnelBar(step, widest) {
  // Entered (pale) and sent (accent) as widths of the rule's widest step.
  const width = 120, height = 12;
  const bar = svg("svg", { class: "funnel-bar", width, height, viewBox: `0 0 ${width} ${height}`,
                           role: "img", "aria-label": `sent ${step.sent} of ${step.entered} entered` });
  const w = (n) => (widest ? (n / widest) * width : 0);
  bar.appendChild(svg("rect", { class: "entered", x: 0, y: 0, width: w(step.entered), height }));
  bar.appendChild(svg("rect", { class: "sent", x: 0, y: 2, width: w(step.sent), height: height - 4 }));
  return bar;
}

function funnelBlock(f) {
  const box = el("div", { class: "funnel", "data-rule": f.rule });
  box.appendChild(el("h3", {}, f.rule + (f.journey ? " · journey" : "")));
  const a = f.attribution; // what the rule's sends earned (engine/attribution.py)
  if (a) box.appendChild(el("p", { class: "attribution" },
    `converted ${num(a.converted)} · revenue ${num(a.revenue)} (${a.event} within ${num(a.within_s / 3600)} h of its last send)`));
  const table = el("table");
  const head = el("tr");
  ["step", "kind", "entered", "sent", "suppressed", "exited", "converted", "revenue", ""].forEach(
    (c) => head.appendChild(el("th", {}, c)));
  table.appendChild(el("thead")).appendChild(head);
  const body = table.appendChild(el("tbody"));
  const widest = Math.max(0, ...f.steps.map((s) => Math.max(s.entered, s.sent)));
  f.steps.forEach((s) => {
    const tr = el("tr", { "data-step": String(s.step), "data-kind": s.kind });
    [String(s.step), s.kind, s.entered, s.sent].forEach((c) => tr.appendChild(el("td", {}, num(c))));
    for (const [cls, byReason] of [["suppressed", s.suppressed], ["exited", s.exited]]) {
      const td = el("td", { class: cls, title: reasons(byReason) }, String(sumOf(byReason)));
      if (sumOf(byReason)) td.appendChild(el("span", { class: "reasons" }, ` (${reasons(byReason)})`));
      tr.appendChild(td);
    }
    tr.appendChild(el("td", { class: "converted" }, num(s.converted)));
    tr.appendChild(el("td", { class: "revenue" }, num(s.revenue ?? 0)));
    tr.appendChild(el("td", {})).appendChild(funnelBar(s, widest));
    body.appendChild(tr);
  });
  box.appendChild(table);
  return box;
}

let shownFunnels = "";

function renderFunnels(funnels) {
  const key = JSON.stringify(funnels);
  if (!funnels || !funnels.length || key === shownFunnels) return; // redraw only on change
  shownFunnels = key;
  document.getElementById("funnels").replaceChildren(...funnels.map(funnelBlock));
}

// -- stats + connection ---------------------------------------------------------

function renderStats(stats) {
  const pending = stats.timers_pending;
  document.getElementById("timers-pending").textContent = pending === null ? "–" : String(pending);
  const total = Object.values(stats.triggers).reduce((a, b) => a + b, 0);
  document.getElementById("triggers-total").textContent = String(total);
  document.getElementById("dlq-events").textContent = String(stats.dead_letters["events.dlq"]);
  document.getElementById("dlq-triggers").textContent = String(stats.dead_letters["triggers.dlq"]);
  document.getElementById("caught-up").textContent = stats.caught_up ? "" : "catching up with the audit topics…";
  renderCounters(stats.decisions);
  renderFunnels(stats.funnels);
  renderDestinations(stats.destinations || []); // destinations.js
  renderRules(stats.sends_by_version || {}); // rules.js
  renderExperiments(stats.experiments);
}

function setStatus(text, cls) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = `status ${cls}`;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const t = token();
  const query = t ? `?access_token=${encodeURIComponent(t)}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/console${query}`);
  ws.onopen = () => setStatus("live", "live");
  ws.onclose = () => {
    setStatus("disconnected, retrying…", "down");
    setTimeout(connect, 2000);
  };
  ws.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    if (data.type === "snapshot") {
      document.getElementById("feed").replaceChildren();
      data.feed.forEach(addFeed);
      renderStats(data.stats);
    } else if (data.type === "feed") {
      addFeed(data.item);
    } else if (data.type === "stats") {
      renderStats(data.stats);
    }
  };
}

connect();
