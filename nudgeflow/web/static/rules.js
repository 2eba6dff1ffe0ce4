// Nudgeflow console: the live rules (issue 20.5). The live version and its history,
// each version's diff against the one before in a <pre> (GET /rules, GET /rules/history),
// a pause/resume button per rule (POST /rules/<name>/pause|resume) and each rule's sends
// by the rules version that made them (stats.sends_by_version). The calls carry the
// console's token (console.js's token(), from /#token=...) as a Bearer header.
// console.js calls renderRules with every stats message; the routes are read at most
// every RULES_EVERY_MS and right after a button.
"use strict";

const RULES_EVERY_MS = 10000;
let rulesReadAt = 0;
let rulesReading = false;
let rulesShown = { live: null, rules: [], versions: [] };

function rulesNode(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function rulesCall(method, path) {
  const t = typeof token === "function" ? token() : null; // console.js
  const headers = t ? { Authorization: `Bearer ${t}` } : {};
  const resp = await fetch(path, { method, headers });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.message || `${method} ${path}: ${resp.status}`);
  return body;
}

function rulesSay(text) {
  const p = document.getElementById("rules-error");
  if (!p) return;
  p.textContent = text || "";
  p.hidden = !text;
}

async function readRules() {
  if (rulesReading) return;
  rulesReading = true;
  rulesReadAt = Date.now();
  try {
    const [live, past] = await Promise.all([rulesCall("GET", "/rules"), rulesCall("GET", "/rules/history")]);
    rulesShown = { live, rules: live.rules || [], versions: past.versions || [] };
    rulesSay(live.error ? `version error: ${live.error}` : "");
    drawRules();
  } catch (err) {
    rulesSay(String(err.message || err));
  } finally {
    rulesReading = false;
  }
}

async function toggleRule(name, paused) {
  const verb = paused ? "resume" : "pause";
  try {
    await rulesCall("POST", `/rules/${encodeURIComponent(name)}/${verb}`);
    rulesSay("");
  } catch (err) {
    rulesSay(String(err.message || err));
  }
  setTimeout(readRules, 1500); // the workers swap within seconds (pipeline/live_rules.py)
}

let rulesSends = {};

function drawRules() {
  const live = rulesShown.live || {};
  const head = document.getElementById("rules-live");
  if (head) {
    head.textContent = live.version
      ? `live version ${live.version} · ${live.author || "?"} · ${live.time || ""}` +
        (live.comment ? ` · ${live.comment}` : "")
      : "no live version";
  }
  const table = document.getElementById("rules-table");
  if (table) {
    const versions = [...new Set(Object.values(rulesSends).flatMap((c) => Object.keys(c)))]
      .sort((a, b) => Number(a) - Number(b));
    const tr = rulesNode("tr");
    ["rule", "state", ""].concat(versions.map((v) => `sends v${v}`)).forEach((c) =>
      tr.appendChild(rulesNode("th", {}, c)));
    table.tHead.replaceChildren(tr);
    const names = [...new Set(rulesShown.rules.map((r) => r.name).concat(Object.keys(rulesSends)))];
    const paused = Object.fromEntries(rulesShown.rules.map((r) => [r.name, r.paused]));
    const rows = names.map((name) => {
      const row = rulesNode("tr", { "data-rule": name });
      row.appendChild(rulesNode("td", {}, name));
      const known = name in paused;
      row.appendChild(rulesNode("td", { class: "state" }, known ? (paused[name] ? "paused" : "running") : "not live"));
      const cell = row.appendChild(rulesNode("td"));
      if (known) {
        const button = rulesNode("button", { type: "button", "data-action": paused[name] ? "resume" : "pause" },
          paused[name] ? "resume" : "pause");
        button.addEventListener("click", () => { button.disabled = true; toggleRule(name, paused[name]); });
        cell.appendChild(button);
      }
      const counts = rulesSends[name] || {};
      versions.forEach((v) => row.appendChild(rulesNode("td", { "data-version": v }, String(counts[v] || 0))));
      return row;
    });
    table.tBodies[0].replaceChildren(...rows);
  }
  const list = document.getElementById("rules-history");
  if (list) {
    list.replaceChildren(...rulesShown.versions.map((v) => {
      const item = rulesNode("details", { "data-version": String(v.version) });
      const paused = v.paused && v.paused.length ? ` · paused: ${v.paused.join(", ")}` : "";
      item.appendChild(rulesNode("summary", {},
        `v${v.version}${v.version === live.version ? " (live)" : ""} · ${v.author} · ${v.time}` +
        (v.comment ? ` · ${v.comment}` : "") + paused));
      item.appendChild(rulesNode("pre", { class: "diff" }, v.diff || "(no change)"));
      return item;
    }));
  }
}

function renderRules(sendsByVersion) {
  const key = JSON.stringify(sendsByVersion || {});
  const changed = key !== JSON.stringify(rulesSends);
  rulesSends = sendsByVersion || {};
  if (Date.now() - rulesReadAt >= RULES_EVERY_MS) readRules();
  else if (changed) drawRules();
}
