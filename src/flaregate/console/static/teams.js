// The Teams view: spend per team and per key against their budgets, from the spend report
// (/v1/analytics?group_by=team and ?group_by=key, whose answers carry the budgets beside the
// spend): the last 24 hours against day budgets, the last 30 days against month budgets.
// Loaded with the first snapshot, refreshed at most every 30 s while pushes arrive. Every
// value goes in as textContent; bars are sized through the CSSOM (no style attribute, so the
// page's CSP holds). Uses $ and fmt from live.js (loaded first).
"use strict";
let teamsToken = null, teamsAt = 0, teamsBusy = false;
const TEAMS_NEAR = 0.8;  // BUDGET_ALERT_AT's default: the bar turns yellow where the webhook fires
const TEAMS_KEYS_SHOWN = 100;
const teamsUsd = (v) => "$" + (v || 0).toFixed((v || 0) >= 1 ? 2 : 4);
const teamsTokens = (v) => fmt.num(v || 0);
async function teamsReport(dimension) {
  const r = await fetch("/v1/analytics?group_by=" + dimension, {headers: {authorization: "Bearer " + teamsToken}, cache: "no-store"});
  if (!r.ok) throw new Error("HTTP " + r.status);
  return r.json();
}
function teamsGroup(report, window, name) {
  const w = (report.windows || {})[window];
  return (w && w.groups && w.groups[name]) || {};
}
function teamsCell(tr, text) { const td = document.createElement("td"); td.textContent = text == null ? "–" : String(text); tr.appendChild(td); return td; }
function teamsMeter(tr, field, spent, limit, show) {
  const td = teamsCell(tr, show(spent) + (limit == null ? "" : " of " + show(limit)));
  td.dataset.field = field;
  if (limit == null) return;
  const share = limit > 0 ? (spent || 0) / limit : 1;  // a budget of 0 allows nothing: it is spent
  const bar = document.createElement("span"), fill = document.createElement("b");
  bar.className = "bar budget" + (share >= 1 ? " over" : share >= TEAMS_NEAR ? " near" : "");
  fill.style.width = Math.min(100, share * 100).toFixed(1) + "%";
  bar.appendChild(fill); td.append(" "); td.appendChild(bar);
  td.dataset.share = share.toFixed(4);
}
function teamsEmpty(body, text, span) {
  const tr = document.createElement("tr"), td = teamsCell(tr, text);
  td.colSpan = span; td.className = "empty"; body.appendChild(tr);
}
async function refreshTeams(token, force) {
  if (token) teamsToken = token;
  if (!teamsToken || teamsBusy || (!force && Date.now() - teamsAt < 30000)) return;
  teamsBusy = true;
  try {
    const [teams, keys] = await Promise.all([teamsReport("team"), teamsReport("key")]);
    teamsAt = Date.now();
    const teamBudgets = teams.budgets || {}, keyBudgets = keys.budgets || {};
    $("teams-note").textContent = teams.budgets === undefined || teams.budgets === null
      ? "budgets unavailable: spend only" : "last 24 h against day budgets, last 30 d against month budgets";
    const spent30 = (report, name) => teamsGroup(report, "30d", name).cost_usd || 0;
    const members = {};
    for (const k of Object.values(keyBudgets)) if (k.team_id) members[k.team_id] = (members[k.team_id] || 0) + 1;
    const teamIds = [...new Set([...Object.keys(teamBudgets), ...Object.keys(((teams.windows || {})["30d"] || {}).groups || {})])]
      .sort((a, b) => spent30(teams, b) - spent30(teams, a) || a.localeCompare(b));
    const body = $("team-rows"); body.replaceChildren();
    if (!teamIds.length) teamsEmpty(body, "no teams yet", 6);
    for (const id of teamIds) {
      const b = teamBudgets[id] || {}, day = teamsGroup(teams, "24h", id), month = teamsGroup(teams, "30d", id);
      const tr = document.createElement("tr"); tr.className = "team-row"; tr.dataset.team = id;
      teamsCell(tr, b.name ? id + " · " + b.name : id);
      teamsCell(tr, members[id] || 0).dataset.field = "keys";
      teamsMeter(tr, "usd_day", day.cost_usd, b.budget_usd_day, teamsUsd);
      teamsMeter(tr, "usd_month", month.cost_usd, b.budget_usd_month, teamsUsd);
      teamsMeter(tr, "tokens_day", day.tokens, b.budget_tokens_day, teamsTokens);
      teamsMeter(tr, "tokens_month", month.tokens, b.budget_tokens_month, teamsTokens);
      body.appendChild(tr);
    }
    const keyIds = [...new Set([...Object.keys(keyBudgets), ...Object.keys(((keys.windows || {})["30d"] || {}).groups || {})])]
      .filter((id) => spent30(keys, id) > 0 || (keyBudgets[id] && (keyBudgets[id].team_id || keyBudgets[id].budget_usd_month != null)))
      .sort((a, b) => spent30(keys, b) - spent30(keys, a) || a.localeCompare(b)).slice(0, TEAMS_KEYS_SHOWN);
    const keyBody = $("team-key-rows"); keyBody.replaceChildren();
    if (!keyIds.length) teamsEmpty(keyBody, "no key spend yet", 5);
    for (const id of keyIds) {
      const b = keyBudgets[id] || {};
      const tr = document.createElement("tr"); tr.className = "team-key-row"; tr.dataset.key = id;
      teamsCell(tr, id); teamsCell(tr, b.name || null); teamsCell(tr, b.team_id || null).dataset.field = "team";
      teamsMeter(tr, "usd_day", teamsGroup(keys, "24h", id).cost_usd, null, teamsUsd);
      teamsMeter(tr, "usd_month", teamsGroup(keys, "30d", id).cost_usd, b.budget_usd_month, teamsUsd);
      keyBody.appendChild(tr);
    }
  } catch (e) { /* the next push retries */ } finally { teamsBusy = false; }
}
