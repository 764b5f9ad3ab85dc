// The Requests view: the request-log store behind GET /v1/logs, with the same filters,
// refreshed whenever the hub pushes metrics over /ws (new rows arrive live), and a detail
// panel for one request (timings as a bar, attempts, events, and the bodies for the admin
// key). Every value goes in as textContent. Uses $ from live.js (loaded first).
"use strict";
let logToken = null, logBusy = false, logFilters = {};
function logCell(tr, text) { const td = document.createElement("td"); td.textContent = text == null ? "–" : String(text); tr.appendChild(td); }
async function logFetch(path) {
  const r = await fetch(path, {headers: {authorization: "Bearer " + logToken}, cache: "no-store"});
  if (!r.ok) throw new Error("HTTP " + r.status);
  return r.json();
}
async function refreshRequests(token) {
  if (token) logToken = token;
  if (!logToken || logBusy) return;
  logBusy = true;
  try {
    const q = new URLSearchParams({limit: "50", ...logFilters});
    const page = await logFetch("/v1/logs?" + q);
    const body = $("log-rows");
    body.replaceChildren();
    if (!page.data.length) { const tr = document.createElement("tr"); logCell(tr, "no matching requests"); tr.firstChild.colSpan = 9; tr.firstChild.className = "empty"; body.appendChild(tr); }
    for (const r of page.data) {
      const tr = document.createElement("tr");
      tr.className = "log-row" + (r.status >= 500 ? " bad" : r.status >= 400 ? " warn" : "");
      tr.dataset.id = r.request_id;
      logCell(tr, new Date(r.ts * 1000).toLocaleTimeString()); logCell(tr, r.request_id); logCell(tr, r.status);
      logCell(tr, r.model); logCell(tr, r.provider); logCell(tr, r.key_id); logCell(tr, r.cache_tier || r.cache);
      logCell(tr, (r.tokens_in || 0) + (r.tokens_out || 0)); logCell(tr, r.latency_ms == null ? null : r.latency_ms.toFixed(1) + " ms");
      tr.onclick = () => showRequest(r.request_id);
      body.appendChild(tr);
    }
  } catch (e) { /* the next push retries */ } finally { logBusy = false; }
}
async function showRequest(id) {
  const panel = $("log-detail");
  let r; try { r = await logFetch("/v1/logs/" + encodeURIComponent(id)); } catch (e) { return; }
  panel.replaceChildren(); panel.hidden = false;
  const h = document.createElement("h3"); h.textContent = r.request_id + " · " + r.status + " · " + (r.level || ""); panel.appendChild(h);
  const bar = document.createElement("div"); bar.className = "timing"; panel.appendChild(bar);
  const phases = r.phases && typeof r.phases === "object" ? r.phases : {};
  const total = Object.values(phases).reduce((a, b) => a + (+b || 0), 0) || 1;
  for (const [name, ms] of Object.entries(phases)) {
    const seg = document.createElement("span"); seg.style.flex = String(Math.max(+ms || 0, total / 200));
    seg.title = name + " " + ms + " ms"; seg.textContent = name; bar.appendChild(seg);
  }
  const list = document.createElement("ul");
  for (const a of (r.upstream_attempts || [])) { const li = document.createElement("li"); li.textContent = "attempt " + a[0] + ": " + (a[1] ? "ok" : "failed"); list.appendChild(li); }
  for (const e of (r.events || [])) { const li = document.createElement("li"); li.textContent = "event " + (e.type || e.event) + " (" + e.level + ")"; list.appendChild(li); }
  panel.appendChild(list);
  for (const [name, label] of [["request_body", "request body"], ["response_body", "response body"]]) {
    if (typeof r[name] !== "string") continue;  // LOG_BODIES off, or a private key / route
    const title = document.createElement("h4"); title.textContent = label + (r[name + "_truncated"] ? " (truncated)" : "");
    const pre = document.createElement("pre"); pre.className = "log-body"; pre.dataset.body = name; pre.textContent = r[name];
    panel.appendChild(title); panel.appendChild(pre);
  }
}
$("log-filters").onsubmit = (e) => {
  e.preventDefault();
  logFilters = Object.fromEntries([...new FormData(e.target)].filter(([, v]) => String(v).trim()));
  refreshRequests();
};
