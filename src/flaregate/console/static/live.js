// The live view: tiles, charts drawn on <canvas> and the events list, fed by the /ws hub;
// the admin key from the URL fragment (#token=KEY, never sent to the server) or the form,
// kept in sessionStorage and offered as the WebSocket subprotocol bearer.KEY.
"use strict";
const $ = (id) => document.getElementById(id);
const WINDOW_S = 300;                 // charts keep the last five minutes ...
const MIN_SPAN_S = 30;                // ... and zoom in while there is less history
const series = { rps: [], p50: [], p95: [], errors: [], cache: [] };
const charts = {
  "chart-rps": { lines: [["rps", "#3fb950"]], unit: "" },
  "chart-latency": { lines: [["p50", "#58a6ff"], ["p95", "#f6821f"]], unit: "" },
  "chart-errors": { lines: [["errors", "#f85149"]], unit: "%", max: 100 },
  "chart-cache": { lines: [["cache", "#d29922"]], unit: "%", max: 100 },
};
let eventsShown = 0, socket = null, retry = 1000;

function takeToken() {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token") || new URLSearchParams(location.search).get("token");
  if (fromUrl) { sessionStorage.setItem("flaregate-admin", fromUrl); history.replaceState(null, "", location.pathname); }
  return sessionStorage.getItem("flaregate-admin");
}

const fmt = {
  ms: (v) => v == null ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(v < 10 ? 2 : 1) + " ms",
  pct: (v) => v == null ? "–" : (v * 100).toFixed(v < 0.1 ? 2 : 1) + " %",
  num: (v) => v == null ? "–" : v >= 1e6 ? (v / 1e6).toFixed(2) + "M" : v >= 1e4 ? (v / 1e3).toFixed(1) + "k" : String(v),
  rate: (v) => v == null ? "–" : v.toFixed(v < 10 ? 2 : 1),
  bytes: (v) => v == null ? "–" : (v / 1048576).toFixed(1) + " MiB",
  dur: (s) => s == null ? "–" : s < 120 ? Math.round(s) + " s" : s < 7200 ? Math.round(s / 60) + " min" : (s / 3600).toFixed(1) + " h",
  usd: (v) => v == null ? "–" : "$" + v.toFixed(v < 1 ? 4 : 2),
};

function setStatus(text, cls) { const el = $("status"); el.textContent = text; el.className = "pill " + (cls || ""); }

function push(name, t, v) {
  const s = series[name];
  if (v == null || !isFinite(v)) return;
  if (s.length && s[s.length - 1].t >= t) s.pop();
  s.push({ t, v });
  while (s.length && s[0].t < t - WINDOW_S) s.shift();
}

function update(m, seed) {
  const t = m.ts, live = m.live || {};
  $("rps").textContent = fmt.rate(m.rps_10s);
  $("rps-1m").textContent = fmt.rate(m.rps_1m);
  $("p50").textContent = fmt.ms(m.latency_ms && m.latency_ms.p50);
  $("p95").textContent = fmt.ms(m.latency_ms && m.latency_ms.p95);
  $("overhead-p95").textContent = fmt.ms(m.overhead_ms && m.overhead_ms.p95);
  $("error-rate").textContent = fmt.pct(live.error_rate);
  $("cache-hit-rate").textContent = fmt.pct(live.cache_hit_rate);
  const totals = m.totals || {};
  $("requests-total").textContent = fmt.num(totals.requests);
  $("errors-total").textContent = fmt.num(totals.errors);
  $("rate-limited-total").textContent = fmt.num(totals.rate_limited);
  $("tokens").textContent = fmt.num((totals.tokens_in || 0) + (totals.tokens_out || 0));
  $("cost").textContent = fmt.usd(totals.cost_usd);
  $("shed-total").textContent = fmt.num(totals.shed || 0);
  const h = m.health || {};
  const score = $("health-score");
  score.textContent = h.score == null ? "–" : h.score;
  score.style.color = h.status === "healthy" ? "var(--green)" : h.status === "degraded" ? "var(--yellow)" : "var(--red)";
  $("health-status").textContent = h.status ? h.status + " · " + fmt.pct(h.failure_rate) + " failures" : "–";
  $("uptime").textContent = fmt.dur(m.uptime_s);
  $("subscribers").textContent = m.subscribers == null ? "–" : m.subscribers;
  const memory = m.process && (m.process.rss_bytes || m.process.wasm_memory_bytes);
  $("memory").textContent = memory ? fmt.bytes(memory) : "n/a";
  $("updated").textContent = "updated " + new Date(t * 1000).toLocaleTimeString();
  if (!seed) {
    push("rps", t, m.rps_10s);
    push("p50", t, m.latency_ms && m.latency_ms.p50);
    push("p95", t, m.latency_ms && m.latency_ms.p95);
    push("errors", t, live.error_rate == null ? 0 : live.error_rate * 100);
    if (live.cache_hit_rate != null) push("cache", t, live.cache_hit_rate * 100);
  }
  providers(m.providers || {});
  draw();
}

function seedHistory(history) {
  // Per-second counts of the last two minutes: 10-second sliding rates, as the live tiles use.
  for (let i = 0; i < history.length; i++) {
    const end = history[i].t, win = history.filter((p) => p.t > end - 10 && p.t <= end);
    const sum = (k) => win.reduce((a, p) => a + p[k], 0);
    const req = sum("requests"), looks = sum("cache_hits") + sum("cache_misses");
    push("rps", end, req / 10);
    if (req) push("errors", end, 100 * sum("errors") / req);
    if (looks) push("cache", end, 100 * sum("cache_hits") / looks);
  }
}

function providers(list) {
  const names = Object.keys(list).sort();
  const body = $("providers");
  if (!names.length) return;
  body.innerHTML = "";
  for (const name of names) {
    const p = list[name], tr = document.createElement("tr");
    const color = p.status === "healthy" ? "var(--green)" : p.status === "degraded" ? "var(--yellow)" : "var(--red)";
    const cells = [name, null, p.status || "–", fmt.num(p.requests), fmt.num(p.errors),
                   p.availability == null ? "–" : fmt.pct(p.availability), fmt.ms(p.p95_ms)];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 1) {
        const bar = document.createElement("span"), fill = document.createElement("b");
        bar.className = "bar"; fill.style.width = (p.health || 0) + "%"; fill.style.background = color;
        bar.appendChild(fill); td.appendChild(bar); td.append(" " + (p.health == null ? "–" : p.health));
      } else { td.textContent = text; }
      if (i === 2) td.style.color = color;
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
}

function addEvent(e) {
  const list = $("events");
  if (!eventsShown) list.innerHTML = "";
  eventsShown++;
  const li = document.createElement("li"), time = document.createElement("time");
  time.textContent = new Date(e.ts * 1000).toLocaleTimeString();
  li.className = "sev-" + (e.severity || "info");
  li.appendChild(time);
  li.append(e.event + (e.count > 1 ? " ×" + e.count : "") + ": " + (e.message || ""));
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

function span(now) {
  let first = now;
  for (const s of Object.values(series)) if (s.length) first = Math.min(first, s[0].t);
  return Math.min(WINDOW_S, Math.max(MIN_SPAN_S, Math.ceil((now - first + 2) / 10) * 10));
}

function draw() {
  const now = Date.now() / 1000, shown = span(now);
  const step = shown <= 60 ? 10 : shown <= 150 ? 30 : 60;
  for (const [id, spec] of Object.entries(charts)) {
    const canvas = $(id), ctx = canvas.getContext("2d"), dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w * dpr || canvas.height !== h * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 44, right = 8, top = 8, bottom = 20, pw = w - left - right, ph = h - top - bottom;
    let max = spec.max || 0;
    if (!spec.max) for (const [name] of spec.lines) for (const p of series[name]) max = Math.max(max, p.v);
    max = spec.max || niceMax(max);
    ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#8b98a5"; ctx.strokeStyle = "#263241"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
      const label = (max * i) / 4;
      ctx.textAlign = "right"; ctx.fillText(label >= 100 ? label.toFixed(0) : label.toFixed(label >= 10 ? 1 : 2), left - 6, y + 4);
    }
    ctx.textAlign = "center";
    for (let s = 0; s <= shown; s += step) {
      const x = left + pw - (pw * s) / shown;
      ctx.textAlign = s === 0 ? "right" : "center";
      ctx.fillText(s === 0 ? "now" : s % 60 ? "-" + s + "s" : "-" + s / 60 + "m", x, h - 5);
    }
    const x = (t) => left + pw - (pw * (now - t)) / shown;
    const y = (v) => top + ph - (ph * Math.min(v, max)) / max;
    for (const [name, color] of spec.lines) {
      const pts = series[name].filter((p) => p.t >= now - shown);
      if (!pts.length) continue;
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
      ctx.stroke();
      if (spec.lines.length === 1) {
        ctx.lineTo(x(pts[pts.length - 1].t), top + ph); ctx.lineTo(x(pts[0].t), top + ph); ctx.closePath();
        ctx.globalAlpha = 0.12; ctx.fillStyle = color; ctx.fill(); ctx.globalAlpha = 1;
      }
      const last = pts[pts.length - 1];
      ctx.fillStyle = color; ctx.beginPath(); ctx.arc(x(last.t), y(last.v), 3, 0, 2 * Math.PI); ctx.fill();
    }
  }
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v))), n = v / p;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * p;
}

function connect(token) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const tokenChars = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(token);
  const url = scheme + "//" + location.host + "/ws" + (tokenChars ? "" : "?token=" + encodeURIComponent(token));
  setStatus("connecting…");
  socket = tokenChars ? new WebSocket(url, ["flaregate.v1", "bearer." + token]) : new WebSocket(url);
  socket.onopen = () => { retry = 1000; setStatus("live", "live"); };
  socket.onmessage = (msg) => {
    let m; try { m = JSON.parse(msg.data); } catch (e) { return; }
    if (m.type === "snapshot") {
      if (m.history) seedHistory(m.history);
      (m.recent_events || []).slice().reverse().forEach(addEvent);
      update(m.metrics, true);
    } else if (m.type === "metrics") update(m.metrics, false);
    else if (m.type === "event") addEvent(m);
    // requests.js, history.js, teams.js
    if (m.type === "snapshot" || m.type === "metrics") { refreshRequests(token); refreshHistory(token); refreshTeams(token); }
  };
  socket.onclose = (e) => {
    setStatus(e.code === 1006 && retry === 1000 ? "disconnected (check the admin key)" : "disconnected", "down");
    setTimeout(() => connect(token), retry);
    retry = Math.min(retry * 2, 30000);
  };
}

function start() {
  const token = takeToken();
  if (!token) {
    setStatus("admin key needed", "down");
    const form = $("login");
    form.style.display = "flex";
    form.onsubmit = (e) => {
      e.preventDefault();
      const value = $("token-input").value.trim();
      if (value) { sessionStorage.setItem("flaregate-admin", value); form.style.display = "none"; connect(value); }
    };
    return;
  }
  connect(token);
}

// The adaptive in-flight limit lives in each process (isolate), not in the hub: /health
// reports the one of the process (isolate) that answers.
async function loadShedding() {
  try {
    const state = (await (await fetch("/health")).json()).load_shedding;
    $("shed-limit").textContent = state ? String(state.limit) : "off";
    $("shed-in-flight").textContent = state ? String(state.in_flight) : "–";
  } catch (e) { /* the next poll retries */ }
}

window.addEventListener("resize", draw);
setInterval(draw, 1000);   // keep the time axis moving between messages
setInterval(loadShedding, 5000);
loadShedding();
// After every script of the page has run (requests.js and history.js define what messages refresh).
document.addEventListener("DOMContentLoaded", start);
