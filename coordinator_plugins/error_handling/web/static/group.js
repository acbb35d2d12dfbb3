"use strict";
// One error group's page (#/group/<id>): its facts, its occurrences over time, every recovery
// with the targets it acted on and each strategy run with its decision, and the resolve and
// reset buttons. Uses the helpers and the API client of dashboard.js.
function fact(label, ...value) { return h("div", {}, h("dt", {}, label), h("dd", {}, ...value)); }

function renderRecovery(r, index) {
  const outcome = r.success ? "succeeded" : ((r.attempts || []).length &&
    r.attempts[r.attempts.length - 1].outcome === "budget_exhausted") ? "budget_deferred"
    : (r.attempts || []).every(a => a.outcome === "not_applicable") ? "nothing_applicable" : "failed";
  const t = r.targets || {};
  const targets = [];
  if ((t.workers || []).length) targets.push(`workers ${t.workers.join(", ")}`);
  if ((t.tasks || []).length) targets.push(`tasks ${t.tasks.join(", ")}`);
  const skipped = (r.attempts || []).filter(a => a.outcome === "not_applicable");
  const rows = (r.attempts || []).filter(a => a.outcome !== "not_applicable").map(a => h("tr", { "data-outcome": a.outcome },
    h("td", { class: "num" }, `L${a.level}`), h("td", {}, h("strong", {}, a.strategy_id)),
    h("td", {}, pill(a.outcome, ATTEMPT[a.outcome] || a.outcome)),
    h("td", { class: "num" }, pct(a.probability)), h("td", {}, a.reason || ""),
    h("td", { class: "num" }, seconds(a.execution_time)),
    h("td", { class: "num" }, (a.affected_tasks || []).length ? `${(a.recovered_tasks || []).length} of ${a.affected_tasks.length}` : ""),
    h("td", { class: "mono small" }, a.error || (a.details && Object.keys(a.details).length ? JSON.stringify(a.details) : ""))));
  return h("div", { class: "recovery", "data-outcome": outcome },
    h("div", { class: "head" }, h("strong", {}, `Recovery ${index}`), when(r.at), pill(outcome, OUTCOME[outcome].label),
      r.success ? h("span", {}, `by ${r.strategy_id} at L${r.recovery_level}`) : h("span", {}, `ended at L${r.recovery_level}`),
      h("span", { class: "muted" }, `took ${seconds(r.execution_time)}`),
      r.start_reason ? h("span", { class: "muted" }, `started: ${r.start_reason}`) : null),
    h("div", { class: "targets" }, targets.length ? `Acted on ${targets.join("; ")}.` :
      "Acted on no particular worker or task (the group's component as a whole)."),
    rows.length ? h("table", { class: "data" }, h("thead", {}, h("tr", {}, ["level", "strategy", "outcome",
      "chosen with probability", "reason", "took", "tasks recovered", "error / details"].map(x => h("th", {}, x)))),
      h("tbody", {}, rows)) : h("p", { class: "empty targets" }, "No strategy ran."),
    skipped.length ? h("div", { class: "targets muted" }, "Did not apply: " +
      skipped.map(a => `${a.strategy_id} (L${a.level})`).join(", ") + ".") : null);
}

async function refreshGroup(id) {
  let g, occ;
  try {
    [g, occ] = await Promise.all([api(`/errors/${encodeURIComponent(id)}`),
      api(`/errors/${encodeURIComponent(id)}/occurrences?buckets=60`)]);
  } catch (e) {
    if (e.status === 404) {
      $("group-body").replaceChildren(h("p", { class: "empty" }, `No error group has the id ${id}.`));
      return;
    }
    throw e;
  }
  showBanners([]);
  const resolved = g.resolution_status === "resolved";
  const note = h("span", { class: "note", id: "action-note" }, state.note || "");
  const resolveBtn = h("button", { id: "resolve", disabled: resolved, title: "POST /errors/{id}/resolve",
    onclick: () => act(id, `/errors/${encodeURIComponent(id)}/resolve`, { resolution: "manual", details: { via: "dashboard" } },
      r => r.already_resolved ? "It was already resolved." : "Resolved by hand.") }, resolved ? "Resolved" : "Resolve");
  const resetBtn = h("button", { id: "reset", class: "secondary", title: "POST /recovery/reset",
    onclick: () => act(id, "/recovery/reset", { error_id: id },
      r => r.reset ? "Recovery level reset: its next recovery starts at L1." : "Nothing to reset.") }, "Reset recovery level");
  const history = (g.recovery_history || []).map((r, i) => renderRecovery(r, i + 1)).reverse();
  const chart = h("div", { class: "plot", id: "chart-occurrences" });
  $("group-body").replaceChildren(
    h("div", { class: "group-head" },
      h("div", { class: "chips" }, pill(g.resolution_status), h("span", { class: `chip sev-${g.error_severity}` }, g.error_severity),
        h("span", { class: "chip" }, `${g.error_type} / ${g.category}`), h("span", { class: "chip" }, `${g.component} · ${g.operation}`),
        h("span", { class: "chip mono", title: "the full error id" }, g.error_id)),
      h("h1", {}, g.message)),
    h("div", { class: "actions" }, resolveBtn, resetBtn, note),
    h("dl", { class: "facts" },
      fact("occurrences", String(g.aggregated_count)), fact("first seen", when(g.first_seen)), fact("last seen", when(g.last_seen)),
      fact("recovery level now", `L${g.current_recovery_level}`), fact("recoveries", String((g.recovery_history || []).length)),
      fact("regressions", String(g.regression_count ?? 0)),
      resolved ? fact("resolved", when(g.resolution_time), g.resolution_strategy ? ` by ${g.resolution_strategy}` : "") : null,
      g.worker_id ? fact("worker (first)", g.worker_id) : null, g.task_id ? fact("task (first)", g.task_id) : null,
      g.hardware_id ? fact("hardware", g.hardware_id) : null, g.exception_type ? fact("exception", g.exception_type) : null),
    h("figure", { class: "chart wide" }, h("figcaption", {}, `Occurrences over time (${occ.total} stored, ` +
      `${occ.step_seconds >= 60 ? Math.round(occ.step_seconds / 60) + "-minute" : occ.step_seconds + "-second"} buckets)`), chart),
    h("h2", {}, `Recovery attempts (${history.length}, newest first)`),
    ...(history.length ? history : [h("p", { class: "empty" }, "No recovery has run for this group yet.")]));
  Charts.render(chart, { kind: "bars", integer: true, start: Date.parse(occ.start) / 1000, step: occ.step_seconds,
    n: occ.counts.length, yLabel: "occurrences", series: [{ name: "occurrences", color: typeColor(g.error_type), values: occ.counts }] });
  chart.dataset.total = String(occ.total);
}

async function act(id, path, body, describe) {
  for (const b of document.querySelectorAll(".actions button")) b.disabled = true;
  try {
    state.note = describe(await post(path, body));
  } catch (e) {
    state.note = `Failed: ${e.message}`;
  }
  await refresh();
}

