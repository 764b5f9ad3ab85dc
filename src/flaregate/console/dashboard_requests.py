"""The dashboard's "Requests" view: the request-log store behind ``GET /v1/logs``, with the
same filters, refreshed whenever the hub pushes metrics over ``/ws`` (new rows arrive live),
and a detail panel for one request (timings as a bar, attempts, events, and the bodies
when ``LOG_BODIES`` keeps them).

Spliced into dashboard.HTML; every value goes in as textContent (no HTML from records).
"""

SECTION = """
  <section class="card" id="requests-view"><h2>Requests</h2>
    <form id="log-filters" class="filters">
      <input name="status" placeholder="status (502, 5xx)" size="14"><input name="model" placeholder="model" size="12">
      <input name="provider" placeholder="provider" size="12"><input name="key_id" placeholder="key id" size="12">
      <input name="cache" placeholder="cache" size="8"><input name="error_class" placeholder="error class" size="14">
      <input name="q" placeholder="text in error" size="14"><button>Filter</button>
    </form>
    <table><thead><tr><th>time</th><th>request</th><th>status</th><th>model</th><th>provider</th><th>key</th>
      <th>cache</th><th>tokens</th><th>latency</th></tr></thead>
      <tbody id="log-rows"><tr><td colspan="9" class="empty">no requests yet</td></tr></tbody></table>
    <div id="log-detail" class="detail" hidden></div>
  </section>
"""

SCRIPT = """
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
"""

STYLE = """
.filters{display:flex;gap:6px;flex-wrap:wrap;margin-bottom:8px}.filters input{background:transparent;color:inherit;border:1px solid #555;padding:3px}
tr.log-row{cursor:pointer}tr.log-row.bad td{color:#f87171}tr.log-row.warn td{color:#fbbf24}
.detail{margin-top:8px}.timing{display:flex;height:18px;gap:1px;font-size:10px}.timing span{background:#3b82f6;overflow:hidden;white-space:nowrap;padding:0 2px}
.log-body{max-height:240px;overflow:auto;white-space:pre-wrap;word-break:break-all;font-size:11px;border:1px solid #444;padding:4px}
"""


def splice(html: str) -> str:
    return (html.replace("</style>", STYLE + "</style>", 1).replace("</main>", SECTION + "</main>", 1)
            .replace("\nstart();\n</script>", SCRIPT + "\nstart();\n</script>", 1))
