"""The demo's end-of-run summary (terminal table) and HTML report (inline SVG plots)."""

from __future__ import annotations

import statistics
import time
from html import escape
from typing import Any

from coordinator_plugins.demo import svg


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def summary_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    rec = stats["recoveries"]
    ok = [r for r in rec if r["held"]]  # a success counts once it held through the verify window
    recurred = sum(1 for r in rec if r["success"] and r["held"] is False)
    pending = sum(1 for r in rec if r["success"] and r["held"] is None)
    ttr = [r["execution_time"] for r in ok]
    rows = [
        ("tasks submitted", str(stats["submitted"])),
        ("tasks completed", f"{stats['completed']} ({stats['passed']} passed, {stats['failed_tests']} failed tests)"),
        ("tasks ended in infrastructure error", str(stats["errored"])),
        ("tasks lost", str(stats["lost"])),
        ("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(stats["faults"].items())) or "none"),
        ("errors reported", str(stats["errors"])),
        ("error groups", f"{stats['groups']} ({stats['open_groups']} still open)"),
        ("recoveries", f"{len(rec)} ({len(ok)} succeeded and held; {recurred} recurred within the verify window"
                       + (f", {pending} not yet verified" if pending else "") + ")"),
        ("recoveries by level", ", ".join(f"L{k}: {v}" for k, v in sorted(stats["by_level"].items())) or "none"),
        ("strategy runs", ", ".join(f"{k} {v['runs']} ({v['ok']} ok)" for k, v in sorted(stats["by_strategy"].items()))
         or "none"),
        ("budget refusals", str(stats["budget_refused"])),
        ("time to recovery",
         f"mean {statistics.fmean(ttr):.2f} s, p95 {percentile(ttr, 0.95):.2f} s" if ttr else "n/a"),
    ]
    for et, best in sorted(stats["learned"].items()):
        rows.append((f"learned for {et}", best))
    return rows


def render_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def render_html(stats: dict[str, Any], rows: list[tuple[str, str]]) -> str:
    t0 = stats["started"]
    per_sec: dict[int, int] = {}
    for t in stats["error_times"]:
        per_sec[int(t - t0)] = per_sec.get(int(t - t0), 0) + 1
    horizon = int(max([*stats["error_times"], time.time()]) - t0) + 1
    errors_series = {"errors / s": [(float(s), float(per_sec.get(s, 0))) for s in range(horizon)]}
    levels: dict[str, list[tuple[float, float]]] = {"recovered": [], "not recovered": []}
    for r in stats["recoveries"]:
        levels["recovered" if r["held"] else "not recovered"].append((r["at"] - t0, float(r["recovery_level"])))
    ttr = [r["execution_time"] for r in stats["recoveries"] if r["held"]]
    success: dict[str, float] = {}
    for (et, sid), v in sorted(stats["by_type_strategy"].items()):
        success[f"{et}/{sid}"] = v["ok"] / v["runs"] if v["runs"] else 0.0
    faults = "".join(f"<li>{t - t0:6.1f} s: {escape(k)}: {escape(d)}</li>" for t, k, d in stats["fault_log"][-200:])
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>coordinator_plugins demo report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}} th{{text-align:left;padding-right:1em}}
figure{{display:inline-block;margin:1em}} figcaption{{font-weight:bold}} ul{{font:12px monospace}}</style></head>
<body><h1>Fault-injected farm: what error handling did</h1>
<p>{stats['workers']} workers, {stats['duration']:.0f} s, seed {stats['seed']}, database {escape(stats['database'])}</p>
<table>{table}</table>
<h2>Plots</h2>
{svg.line_chart("Errors over time", errors_series, "seconds since start", "errors per second")}
{svg.scatter("Recovery levels over time", levels, "seconds since start", "level that ended the recovery", 5)}
{svg.histogram("Time to recovery", ttr, "seconds")}
{svg.bars("Strategy success per error type", success, "error type / strategy", "success rate", 1.0)}
<h2>Faults injected</h2><ul>{faults}</ul>
</body></html>
"""
