"""The demo's end-of-run summary (a terminal table) and its HTML report (inline SVG plots)."""

from __future__ import annotations

import statistics
from html import escape
from typing import Any

from coordinator_plugins.demo import svg

OUTCOME_WORDS = {"succeeded": "succeeded", "failed": "failed", "nothing_applicable": "nothing applicable",
                 "budget_deferred": "deferred by the budget"}
OUTCOME_COLORS = {"succeeded": "#2ca02c", "failed": "#d62728", "nothing applicable": "#999999",
                  "deferred by the budget": "#ff7f0e"}


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def _by_level(n: dict[int, dict[str, int]]) -> str:
    return ", ".join(f"L{lv}: {d['recoveries']} ({d['succeeded']} succeeded)" for lv, d in n.items()) or "none"


def progress_lines(t: dict[str, Any], head: str) -> list[str]:
    """The live block's lines; after the run, drawn once more from the summary's own numbers."""
    o = t["outcomes"]
    return [
        f"{head}  tasks {t['submitted']} submitted, {t['completed']} completed, {t['running']} running, "
        f"{t['pending']} pending, {t['lost']} {'unfinished' if t.get('interrupted') else 'lost'}",
        f"  faults {t['faults_total']}   errors {t['occurrences']} in {t['groups']} groups "
        f"({t['open_groups']} open)",
        f"  recoveries {t['recoveries']}: {o['succeeded']} succeeded, {o['failed']} failed, "
        f"{o['nothing_applicable']} nothing applicable, {o['budget_deferred']} deferred"
        + (f"   in flight {t['in_flight']}" if t.get("in_flight") else ""),
    ]


def summary_rows(stats: dict[str, Any], t: dict[str, Any], learned: dict[str, str]) -> list[tuple[str, str]]:
    o = t["outcomes"]
    ttr = t["ttr"]
    runs = t["by_strategy"]
    faults = stats["faults"]
    rows = [
        ("tasks submitted", str(t["submitted"])),
        ("tasks completed", f"{t['completed']} ({stats['passed']} passed, {stats['failed_tests']} failed their test)"),
        ("tasks failed for good", f"{stats['errored']} (an infrastructure error no recovery fixed)"),
        ("tasks lost", str(t["lost"])) if not stats.get("interrupted") else
        ("tasks unfinished", f"{t['lost']} (the run was interrupted before they ran)"),
        ("faults injected", f"{sum(faults.values())}: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))
         if faults else "none"),
        ("errors reported", f"{t['occurrences']} occurrences in {t['groups']} error groups "
                            f"({t['open_groups']} still open)"
         + (f"; the database also holds {t['earlier_groups']} groups from earlier runs"
            if t["earlier_groups"] else "")),
        ("recoveries", f"{t['recoveries']}: " + ", ".join(f"{o[k]} {w}" for k, w in OUTCOME_WORDS.items())),
        ("recoveries by level", _by_level(t["by_level"]) + "   (the level each one ended at)"),
        ("strategy runs", f"{t['strategy_runs']}: " + (", ".join(
            f"{k} {v['runs']} ({v['succeeded']} succeeded)" for k, v in runs.items()) or "none")),
        ("strategies skipped", f"{t['not_applicable']} time{'' if t['not_applicable'] == 1 else 's'} a strategy "
                               "could not act on the error (not run)"),
        ("budget refusals", str(t["budget_refusals"])),
        ("time to recovery", f"mean {statistics.fmean(ttr):.2f} s, p95 {percentile(ttr, 0.95):.2f} s "
                             f"(over {len(ttr)} successful recoveries)" if ttr else "n/a (no successful recovery)"),
    ]
    for et, best in learned.items():
        rows.append((f"learned for {et}", best))
    if t["history_limit_reached"]:
        rows.append(("note", "a group's history keeps its last 50 recoveries; older ones are not counted"))
    return rows


def render_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _per_second(times: list[tuple[float, str]], span: float) -> dict[str, list[float]]:
    n = int(span) + 1
    out: dict[str, list[float]] = {}
    for t, et in times:
        if 0 <= t < n:
            out.setdefault(et, [0.0] * n)[int(t)] += 1
    return dict(sorted(out.items()))


def _fault_rows(links: list[dict[str, Any]]) -> str:
    rows = []
    for f in links:
        r = f["recovery"]
        if r is None:
            what = ('<td colspan="3" class="muted">no recovery of its own (its error may have joined one '
                    'already running)</td>')
        else:
            how = (f"{escape(r['strategy_id'])} at L{r['recovery_level']}" if r["outcome"] == "succeeded"
                   else f"ended at L{r['recovery_level']}")
            what = (f"<td><code>{escape(r['error_id'][:8])}</code> {escape(r['error_type'])}</td>"
                    f"<td>{escape(OUTCOME_WORDS[r['outcome']])}: {how}</td>"
                    f"<td>{float(r['execution_time']):.2f} s</td>")
        rows.append(f"<tr><td>{f['at']:.1f} s</td><td>{escape(f['kind'])}</td><td>{escape(f['detail'])}</td>"
                    f"{what}</tr>")
    return "".join(rows)


def render_html(stats: dict[str, Any], rows: list[tuple[str, str]], t: dict[str, Any],
                recoveries: list[dict[str, Any]], links: list[dict[str, Any]]) -> str:
    t0, span = stats["t0"], stats["span"]
    markers = [(f["at"], f["kind"]) for f in links]
    tasks = {
        "pending": [(s[0], float(s[1])) for s in stats["task_samples"]],
        "running": [(s[0], float(s[2])) for s in stats["task_samples"]],
    }
    errors = _per_second([(at - t0, et) for at, et in stats["error_times"]], span)
    levels: dict[str, list[tuple[float, float]]] = {w: [] for w in OUTCOME_WORDS.values()}
    for r in recoveries:
        levels[OUTCOME_WORDS[r["outcome"]]].append((r["end"] - t0, float(r["recovery_level"])))
    success = [(f"{et} / {sid}", v["succeeded"] / v["runs"] if v["runs"] else 0.0,
                f"{v['succeeded'] / v['runs']:.0%} of {v['runs']} runs")
               for (et, sid), v in t["by_type_strategy"].items()]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>coordinator_plugins demo report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:820px}}
th{{text-align:left;padding:2px 1em 2px 0;vertical-align:top;white-space:nowrap}}
td{{padding:2px 1em 2px 0;vertical-align:top}}
figure{{margin:1.5em 0}} figcaption{{font-weight:bold;margin-bottom:4px}} .muted{{color:#777}}
.legend{{font-size:12px}} .key{{margin-right:1.2em;white-space:nowrap}}
.key i{{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}}
table.faults{{border-collapse:collapse;font-size:13px}}
table.faults td,table.faults th{{border-bottom:1px solid #eee}}</style>
</head><body><h1>Fault-injected farm: what error handling did</h1>
<p>{stats['workers']} workers, {stats['duration']:g} s of tasks, seed {stats['seed']}, database
<code>{escape(stats['database'])}</code>. Every number below was read back from the plugin's database through its
HTTP API after the run went quiet. The time charts share one axis: seconds since the start; dashed lines mark the
injected faults (their initial on top: K kill, H hang, N network, D database, S scheduler, B burst, R rehang); 0 is when
the first task was submitted.</p>
<table>{table}</table>
<h2>Over time</h2>
{svg.time_lines("Tasks pending and running", span, tasks, "tasks", markers,
                colors={"pending": "#1f77b4", "running": "#2ca02c"})}
{svg.time_bars("Errors per second, by type", span, errors, "errors", markers)}
{svg.time_dots("Recoveries: the level each ended at, by outcome", span, levels, "level", 5, markers,
               OUTCOME_COLORS)}
<h2>Recovery</h2>
{svg.histogram("Time to recovery (successful recoveries)", t["ttr"], "seconds")}
{svg.hbars("Strategy success per error type", success, "share of the strategy's runs on that error type "
           "that succeeded")}
<h2>Which fault led to which recovery</h2>
<p class="muted">For each fault, the first recovery that started after it and acted on what it hit (the worker
it killed or froze, the error group its reports made, or the component it broke).</p>
<table class="faults"><tr><th>at</th><th>fault</th><th>what</th><th>error group</th><th>recovery</th><th>took</th></tr>
{_fault_rows(links)}</table>
</body></html>
"""
