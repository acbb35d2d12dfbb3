"use strict";
// The operator's page: overview (health, warnings, live charts, groups, leaderboard, decisions,
// fleet), the token, routing and the refresh loop; group.js draws one error group's page
// (#/group/<id>). Reads only the plugin's HTTP API.
const CONFIG = JSON.parse(document.getElementById("config").textContent);
const TOKEN_KEY = "coordinator_plugins.api_token";
const REFRESH_MS = 2000;
const TYPE_ORDER = ["worker", "network", "database", "system", "scheduling", "coordination", "timeout",
  "resource", "state", "hardware", "dependency", "configuration"];
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2",
  "#7f7f7f", "#bcbd22", "#393b79", "#637939"];
const OUTCOME = {
  succeeded: { label: "succeeded", color: "#1a7f37" },
  failed: { label: "failed", color: "#c4221a" },
  nothing_applicable: { label: "nothing applicable", color: "#9aa1a8" },
  budget_deferred: { label: "deferred by budget", color: "#e39b1b" },
};
const ATTEMPT = { success: "succeeded", failure: "failed", timeout: "timed out", error: "raised an error",
  not_applicable: "did not apply", budget_exhausted: "refused by the budget" };

const state = { window: 900, showResolved: false, showSkipped: false, timer: null, busy: false,
  lastOk: null, tokenWaiters: [] };

// -- small helpers -------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
function typeColor(t) {
  const i = TYPE_ORDER.indexOf(t);
  if (i >= 0) return PALETTE[i];
  let hash = 0;
  for (const ch of String(t)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}
function shortId(id) { return String(id || "").slice(0, 8); }
function toDate(v) { return typeof v === "number" ? new Date(v * 1000) : new Date(v); }
function ago(v) {
  if (v === null || v === undefined || v === "") return "";
  const s = Math.round((Date.now() - toDate(v).getTime()) / 1000);
  if (s < 0) return "just now";
  if (s < 5) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
function when(v) { return h("span", { class: "nowrap", title: v ? toDate(v).toLocaleString() : "" }, ago(v)); }
function seconds(x) {
  if (x === null || x === undefined) return "";
  return x < 1 ? `${Math.round(x * 1000)} ms` : x < 100 ? `${x.toFixed(2)} s` : `${Math.round(x)} s`;
}
function pct(x) { return x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`; }
function pill(cls, text) { return h("span", { class: `pill ${cls}` }, text || cls); }
function groupLink(id) { return h("a", { href: `#/group/${encodeURIComponent(id)}`, class: "mono", title: id }, shortId(id)); }
function fill(tbody, rows) { tbody.replaceChildren(...rows); }
function $(id) { return document.getElementById(id); }

// -- the API, with the token ---------------------------------------------------------------
class Unauthorized extends Error {}
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

// A link may carry the token in its fragment (#token=..., or #/group/<id>&token=...), which no
// server ever sees: it is kept for this tab like a typed one and removed from the address bar
// (and from the history entry) before anything else reads the location.
function takeTokenFromFragment() {
  const m = location.hash.match(/^(#.*?)?(?:^#|&)token=([^&]*)(.*)$/);
  if (!m) return;
  let value = "";
  try { value = decodeURIComponent(m[2]).trim(); } catch (e) { value = ""; }
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  const rest = ((m[1] || "") + (m[1] ? m[3] : m[3].replace(/^&/, "#"))).replace(/^#$/, "");
  history.replaceState(history.state, "", location.pathname + location.search + rest);
}
takeTokenFromFragment();

async function api(path, method = "GET", body = undefined) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(CONFIG.api + path, { method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401) throw new Unauthorized((data && data.error) || "the API token is missing or wrong");
  if (!resp.ok) {
    const err = new Error((data && data.error) || `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

// Shows the token form; resolves once a token was entered (false when cancelled).
function askToken(reason) {
  $("token-reason").textContent = reason;
  $("token-panel").hidden = false;
  $("token-input").focus();
  return new Promise(resolve => state.tokenWaiters.push(resolve));
}
$("token-panel").addEventListener("submit", ev => {
  ev.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token-input").value = "";
  $("token-panel").hidden = true;
  state.tokenWaiters.splice(0).forEach(r => r(true));
  refresh();
});
$("token-cancel").addEventListener("click", () => {
  $("token-panel").hidden = true;
  state.tokenWaiters.splice(0).forEach(r => r(false));
});

// A POST that asks for the token when the coordinator wants one, then tries again.
async function post(path, body) {
  for (;;) {
    try {
      return await api(path, "POST", body);
    } catch (e) {
      if (!(e instanceof Unauthorized)) throw e;
      sessionStorage.removeItem(TOKEN_KEY);
      const again = await askToken(`This action needs the coordinator's API token (${e.message}).`);
      if (!again) throw new Error("cancelled: no token given");
    }
  }
}

// -- banners and header --------------------------------------------------------------------
// The header says so too: a "healthy" plugin that cannot recover anything is not healthy to an operator.
function setRecoveryPill(warnings) {
  const pillEl = $("recovery-pill");
  const worst = warnings.some(w => w.level === "error") ? "critical" : warnings.some(w => w.level === "warning") ? "degraded" : null;
  pillEl.hidden = !worst;
  if (!worst) return;
  pillEl.className = `pill ${worst}`;
  pillEl.textContent = worst === "critical" ? "recovery cannot act" : "recovery not acting on everything";
  pillEl.title = warnings.filter(w => w.level !== "info").map(w => w.text).join("\n");
}
function showBanners(list) {
  $("banners").replaceChildren(...list.map(b => h("div", { class: `banner ${b.level}`, role: "alert",
    "data-code": b.code || "" }, h("strong", {}, b.title || ({ error: "Recovery cannot act.",
    warning: "Recovery is not acting on everything.", info: "Note." })[b.level]), b.text)));
}
function setStatus(diag) {
  const st = $("status");
  st.className = `pill ${diag.status}`;
  st.textContent = diag.status;
  st.title = (diag.issues || []).join("\n") || "no issue";
}
function stampUpdated() {
  state.lastOk = Date.now();
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}
function unreachable(e) {
  $("status").className = "pill unreachable";
  $("status").textContent = "unreachable";
  const since = state.lastOk ? `; showing what was read at ${new Date(state.lastOk).toLocaleTimeString()}` : "";
  showBanners([{ level: "error", title: "Cannot read the API.", code: "unreachable", text: `${e.message}${since}.` }]);
}

// -- overview ------------------------------------------------------------------------------
function card(label, value, title) {
  return h("div", { class: "card", title: title || "" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

function renderCards(diag, tl) {
  const rec = tl.totals.recoveries;
  const finished = Object.values(rec).reduce((a, b) => a + b, 0);
  const budget = diag.budget || {};
  const em = diag.error_metrics || {};
  const span = tl.buckets * tl.step_seconds;
  const win = `last ${span < 90 ? span + " s" : Math.round(span / 60) + " min"}`;
  $("cards").replaceChildren(
    card("open error groups", String(em.open_groups ?? "–"), "groups not resolved (open, retrying or failed)"),
    card(`errors, ${win}`, String(tl.totals.errors), "occurrences reported to this coordinator in the chart window"),
    card(`recoveries succeeded, ${win}`, `${rec.succeeded} of ${finished}`,
      "finished recoveries in the chart window that ended with a verified success"),
    card(`nothing applicable, ${win}`, String(rec.nothing_applicable),
      "recoveries in which no strategy could act on the error"),
    card("recovering now", String((diag.recovery_metrics || {}).in_flight ?? 0), "recoveries in flight"),
    card("budget in use", budget.global_limit ? `${budget.used_total} / ${budget.global_limit}` : String(budget.used_total ?? 0),
      `restarts and level-3+ actions in the last ${budget.window ?? "?"} s (per component limit ${budget.limit ?? "?"})`),
    card("errors since start", String(em.total_errors ?? 0), "every occurrence this process has seen"),
  );
}

function renderCharts(tl) {
  const base = { start: tl.start, step: tl.step_seconds, n: tl.buckets };
  const types = Object.keys(tl.errors_per_second);
  const errSeries = types.map(t => ({ name: t, color: typeColor(t), values: tl.errors_per_second[t] }));
  Charts.render($("chart-errors"), { ...base, kind: "area", series: errSeries, yLabel: "errors / s",
    empty: "no error in this window", format: v => `${Charts.fmtNumber(v)}/s` });
  $("chart-errors").dataset.total = String(tl.totals.errors);
  Charts.legend($("legend-errors"), errSeries.map(s => ({ color: s.color,
    text: `${s.name} ${Math.round(s.values.reduce((a, b) => a + b, 0) * tl.step_seconds)}` })));

  const recSeries = Object.keys(OUTCOME).map(o => ({ name: OUTCOME[o].label, color: OUTCOME[o].color,
    values: tl.recoveries[o] }));
  Charts.render($("chart-recoveries"), { ...base, kind: "bars", integer: true, series: recSeries,
    yLabel: "recoveries", empty: "no recovery finished in this window" });
  $("chart-recoveries").dataset.total = String(Object.values(tl.totals.recoveries).reduce((a, b) => a + b, 0));
  Charts.legend($("legend-recoveries"), Object.keys(OUTCOME).map(o => ({ color: OUTCOME[o].color,
    text: `${OUTCOME[o].label} ${tl.totals.recoveries[o]}` })));

  const openNow = [...tl.open_groups].reverse().find(v => v !== null);
  Charts.render($("chart-open"), { ...base, kind: "line", integer: true, yLabel: "groups",
    series: [{ name: "open groups", color: "#0b62c4", values: tl.open_groups }] });
  Charts.legend($("legend-open"), [{ color: "#0b62c4", text: `open now ${openNow ?? "–"}` }]);

  const points = tl.recovery_points.map(p => ({ t: p.t, y: p.seconds, color: OUTCOME[p.outcome].color,
    label: `${new Date(p.t * 1000).toLocaleTimeString()}: ${p.error_type} group ${shortId(p.error_id)}, ` +
      `${OUTCOME[p.outcome].label}${p.strategy_id ? " by " + p.strategy_id : ""} at L${p.level} in ${seconds(p.seconds)}` }));
  Charts.render($("chart-ttr"), { ...base, kind: "dots", points, yLabel: "seconds" });
  const ok = tl.recovery_points.filter(p => p.outcome === "succeeded").map(p => p.seconds).sort((a, b) => a - b);
  Charts.legend($("legend-ttr"), [
    { color: OUTCOME.succeeded.color, text: ok.length ? `succeeded: median ${seconds(ok[Math.floor((ok.length - 1) / 2)])}, ` +
      `slowest ${seconds(ok[ok.length - 1])}` : "succeeded: none" },
    { color: OUTCOME.failed.color, text: "failed" }, { color: OUTCOME.nothing_applicable.color, text: "nothing applicable" }]);

  Charts.render($("chart-budget"), { ...base, kind: "line", integer: true, yLabel: "actions",
    limit: tl.budget_limit, series: [{ name: "in use", color: "#e39b1b", values: tl.budget_used }] });
  const used = [...tl.budget_used].reverse().find(v => v !== null);
  Charts.legend($("legend-budget"), [{ color: "#e39b1b", text: `in use now ${used ?? "–"}` +
    (tl.budget_limit ? ` of ${tl.budget_limit} overall` : " (no overall limit)") }]);

  $("timeline-note").textContent = `Charts: this coordinator since ${new Date(tl.since * 1000).toLocaleString()}, ` +
    `in ${tl.step_seconds}-second buckets.`;
}

function renderGroups(list) {
  const rows = list.errors.map(g => h("tr", { class: "clickable", "data-error-id": g.error_id,
    onclick: ev => { if (ev.target.tagName !== "A") location.hash = `#/group/${encodeURIComponent(g.error_id)}`; } },
    h("td", {}, groupLink(g.error_id)),
    h("td", { class: `sev-${g.error_severity}` }, g.error_severity),
    h("td", {}, g.error_type, h("span", { class: "muted" }, ` / ${g.category}`)),
    h("td", {}, g.component, h("span", { class: "muted" }, ` · ${g.operation}`)),
    h("td", { class: "num" }, g.aggregated_count),
    h("td", { class: "num" }, `L${g.recovery_level}`),
    h("td", {}, pill(g.resolution_status)),
    h("td", {}, when(g.last_seen)),
    h("td", { class: "msg", title: g.message }, g.message)));
  fill($("groups").tBodies[0], rows);
  $("groups-empty").hidden = rows.length > 0;
  $("groups-empty").textContent = state.showResolved ? "No error group yet." : "No open error groups.";
  $("groups-count").textContent = `(${rows.length}${list.next_cursor ? "+, newest first" : ""})`;
}

function probabilities(s) {
  const out = [];
  for (const [lv, row] of Object.entries(s.by_level || {})) {
    if (row && typeof row.choice_probability === "number") out.push([lv, row.choice_probability]);
  }
  if (typeof s.choice_probability === "number") out.push(["", s.choice_probability]);
  return out;
}

function renderLeaderboard(strat) {
  $("selection").textContent = `(selection: ${strat.selection})`;
  const boards = [];
  for (const [et, info] of Object.entries(strat.error_types || {})) {
    const ranked = info.strategies.filter(s => s.samples || s.total_runs);
    if (!ranked.length) continue;
    ranked.sort((a, b) => (b.score ?? -1) - (a.score ?? -1));
    const rows = ranked.map((s, i) => {
      const probs = probabilities(s);
      return h("tr", { "data-strategy": s.strategy_id },
        h("td", { class: "num" }, i + 1),
        h("td", {}, h("strong", {}, s.strategy_id), h("span", { class: "muted" }, ` ${s.level}`)),
        h("td", { class: "num" }, s.samples, s.total_runs > s.samples ? h("span", { class: "muted" }, ` of ${s.total_runs}`) : ""),
        h("td", {}, h("span", { class: "bar", style: `width:${Math.round((s.success_rate || 0) * 60)}px` }), pct(s.success_rate)),
        h("td", { class: "num" }, s.score === null || s.score === undefined ? "–" : s.score.toFixed(3)),
        h("td", { class: "nowrap" }, probs.length ? probs.map(([lv, p]) => `${lv ? "L" + lv + " " : ""}${pct(p)}`).join(" · ") : "–"),
        h("td", { class: "num" }, seconds(s.timeout)),
        h("td", { class: "muted" }, s.why || ""));
    });
    boards.push(h("div", { class: "board", "data-error-type": et },
      h("h3", {}, `${et} errors `, h("span", { class: "muted" }, "— " + (/level/.test(info.start_reason || "")
        ? info.start_reason : `new groups start at L${info.start_level}`))),
      h("table", { class: "data" }, h("thead", {}, h("tr", {}, ["#", "strategy", "runs", "success", "score",
        "chosen now with probability", "timeout", "why"].map(t => h("th", {}, t)))), h("tbody", {}, rows))));
  }
  $("leaderboard").replaceChildren(...boards);
  $("leaderboard-empty").hidden = boards.length > 0;
}

function renderDecisions(strat) {
  const all = (strat.recent_decisions || []).slice().reverse();
  const shown = state.showSkipped ? all : all.filter(d => d.outcome !== "not_applicable");
  fill($("decisions").tBodies[0], shown.map(d => h("tr", {},
    h("td", {}, when(d.at)), h("td", {}, groupLink(d.error_id)), h("td", { class: "num" }, `L${d.level}`),
    h("td", {}, d.strategy_id), h("td", {}, pill(d.outcome, ATTEMPT[d.outcome] || d.outcome)),
    h("td", { class: "num" }, pct(d.probability)), h("td", { class: "muted" }, d.reason))));
  const hidden = all.length - shown.length;
  $("decisions-empty").hidden = shown.length > 0 && !hidden;
  $("decisions-empty").textContent = hidden
    ? `${hidden} decision(s) hidden: strategies that did not apply to the error (tick the box to see them).`
    : "No decision yet.";
}

function renderFleet(diag) {
  const members = Array.isArray(diag.fleet) ? diag.fleet : null;
  $("fleet-section").hidden = !members;
  if (!members) return;
  const keys = [...new Set(members.flatMap(m => Object.keys(m)))];
  keys.sort((a, b) => (a === "coordinator_id" ? -1 : b === "coordinator_id" ? 1 : 0));
  $("fleet").tHead.replaceChildren(h("tr", {}, keys.map(k => h("th", {}, k.replace(/_/g, " ")))));
  fill($("fleet").tBodies[0], members.map(m => h("tr", {}, keys.map(k => h("td", {},
    /(_seen|_at|since)$/.test(k) && m[k] ? when(m[k]) : (typeof m[k] === "object" ? JSON.stringify(m[k]) : m[k] ?? ""))))));
}

async function refreshOverview() {
  const status = state.showResolved ? "all" : "open";
  const [diag, list, strat, tl] = await Promise.all([
    api("/diagnostics"), api(`/errors?status=${status}&limit=200`), api("/recovery/strategies"),
    api(`/timeline?window=${state.window}`)]);
  setStatus(diag);
  $("issues").replaceChildren(...(diag.issues || []).map(i => h("li", {}, i)));
  showBanners(tl.warnings);
  setRecoveryPill(tl.warnings);
  renderCards(diag, tl);
  renderCharts(tl);
  renderGroups(list);
  renderLeaderboard(strat);
  renderDecisions(strat);
  renderFleet(diag);
}

// -- routing and the refresh loop --------------------------------------------------------------
function currentGroup() {
  const m = location.hash.match(/^#\/group\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  const id = currentGroup();
  $("overview-view").hidden = !!id;
  $("group-view").hidden = !id;
  document.title = id ? `Error group ${shortId(id)} · Error handling` : "Error handling";
  try {
    if (CONFIG.protectReads && !token()) {
      if ($("token-panel").hidden) {  // already asking: keep the reason shown (e.g. a refused token)
        askToken("This coordinator protects its reads (protect_reads): enter its API token to see this page.");
      }
      return;
    }
    await (id ? Promise.all([refreshGroup(id), api("/diagnostics").then(setStatus)]) : refreshOverview());
    stampUpdated();
  } catch (e) {
    if (e instanceof Unauthorized) {
      sessionStorage.removeItem(TOKEN_KEY);
      askToken(`The coordinator refused the request: ${e.message}. Enter its API token.`);
    } else {
      unreachable(e);
    }
  } finally {
    state.busy = false;
  }
}

window.addEventListener("hashchange", () => { state.note = ""; window.scrollTo(0, 0); refresh(); });
$("window").addEventListener("change", ev => { state.window = Number(ev.target.value); refresh(); });
$("show-resolved").addEventListener("change", ev => { state.showResolved = ev.target.checked; refresh(); });
$("show-skipped").addEventListener("change", ev => { state.showSkipped = ev.target.checked; refresh(); });
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
$("openapi-link").href = `${CONFIG.api}/openapi.json`;
if (CONFIG.metrics) $("metrics-link").replaceChildren(" · ", h("a", { href: CONFIG.metrics }, "Prometheus metrics"));
// Started once every script of the page (group.js too) has loaded.
document.addEventListener("DOMContentLoaded", () => {
  refresh();
  state.timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
});
