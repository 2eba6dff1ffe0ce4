// Nudgeflow console: each webhook destination's circuit, as this worker sees it
// (stats.destinations from /ws/console; the numbers of the nudgeflow_circuit_breaker_state,
// nudgeflow_circuit_failure_ratio and nudgeflow_delivery_waiting metrics).
// console.js calls renderDestinations with every stats message.
"use strict";

function renderDestinations(destinations) {
  const table = document.getElementById("destinations");
  if (!table) return;
  const head = document.createElement("tr");
  ["destination", "circuit", "failure ratio", "waiting"].forEach((c) => {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  });
  table.tHead.replaceChildren(head);
  const rows = destinations.map((d) => {
    const tr = document.createElement("tr");
    tr.setAttribute("data-destination", d.destination);
    tr.setAttribute("data-state", d.state);
    const ratio = d.failure_ratio === null || d.failure_ratio === undefined
      ? "–" : (100 * d.failure_ratio).toFixed(1) + "%";
    [d.destination, d.state, ratio, String(d.waiting)].forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 1) {
        // console.css's status colours: closed green, open red, half-open plain.
        const look = { closed: "live", open: "down" }[d.state] || "";
        const badge = document.createElement("span");
        badge.className = `status circuit ${look}`;
        badge.textContent = text;
        td.appendChild(badge);
      } else {
        td.textContent = text;
      }
      tr.appendChild(td);
    });
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
  const none = document.getElementById("destinations-none");
  if (none) none.hidden = destinations.length > 0;
}
