// The History view: /v1/analytics for one window at a time (1 hour, 24 hours, 30 days, or
// the 1-year archive), as totals, a bar per bucket and the top models. Loaded with the first
// snapshot and when a window is picked; refreshed at most every 30 s while pushes arrive.
// Every value goes in as textContent. Uses $ from live.js (loaded first).
"use strict";
let historyToken = null, historyWindow = "24h", historyAt = 0, historyBusy = false;
function historyCell(tr, text) { const td = document.createElement("td"); td.textContent = text == null ? "–" : String(text); tr.appendChild(td); }
async function refreshHistory(token, force) {
  if (token) historyToken = token;
  if (!historyToken || historyBusy || (!force && Date.now() - historyAt < 30000)) return;
  historyBusy = true;
  try {
    const r = await fetch("/v1/analytics?window=" + historyWindow, {headers: {authorization: "Bearer " + historyToken}, cache: "no-store"});
    if (!r.ok) return;
    const w = (await r.json()).windows[historyWindow];
    historyAt = Date.now();
    const p95 = w.latency_ms && w.latency_ms.total ? w.latency_ms.total.p95 : null;
    const summary = $("history-summary");
    summary.dataset.window = historyWindow; summary.dataset.requests = String(w.requests);
    summary.textContent = w.requests + " requests · " + w.errors + " errors · p95 " + (p95 == null ? "–" : p95 + " ms")
      + " · " + ((w.tokens_in || 0) + (w.tokens_out || 0)) + " tokens · $" + (w.cost_usd || 0).toFixed(4)
      + " · buckets of " + (w.resolution_s >= 86400 ? (w.resolution_s / 86400) + " d" : (w.resolution_s / 60) + " min");
    const bars = $("history-bars"); bars.replaceChildren();
    const top = Math.max(1, ...w.series.map(s => s.requests));
    for (const s of w.series) {
      const bar = document.createElement("span");
      bar.style.height = Math.max(2, 60 * s.requests / top) + "px";
      bar.title = new Date(s.t * 1000).toLocaleString() + ": " + s.requests + " requests, " + s.errors + " errors";
      if (s.errors) bar.className = "bad";
      bars.appendChild(bar);
    }
    const body = $("history-models"); body.replaceChildren();
    const models = Object.entries(w.by_model || {}).sort((a, b) => b[1].requests - a[1].requests).slice(0, 10);
    for (const [name, m] of models) {
      const tr = document.createElement("tr");
      historyCell(tr, name); historyCell(tr, m.requests); historyCell(tr, m.errors);
      historyCell(tr, m.latency_ms && m.latency_ms.total ? m.latency_ms.total.p95 : null);
      historyCell(tr, (m.tokens_in || 0) + (m.tokens_out || 0)); historyCell(tr, "$" + (m.cost_usd || 0).toFixed(4));
      body.appendChild(tr);
    }
  } catch (e) { /* the next push retries */ } finally { historyBusy = false; }
}
for (const button of document.querySelectorAll("#history-windows button")) {
  button.onclick = () => {
    historyWindow = button.dataset.window;
    for (const b of document.querySelectorAll("#history-windows button")) b.classList.toggle("on", b === button);
    refreshHistory(null, true);
  };
}
