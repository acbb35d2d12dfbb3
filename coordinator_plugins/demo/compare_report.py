"""What ``demo --compare`` prints and writes: the side-by-side table, the verdict line, and the
HTML report with every policy's completion curve on one axis."""

from __future__ import annotations

import statistics
from html import escape
from typing import Any

from coordinator_plugins.demo import svg
from coordinator_plugins.demo.report import percentile


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


def _n(v: int | None) -> str:
    return "n/a" if v is None else str(v)


def columns(row: dict[str, Any]) -> dict[str, str]:
    """One policy's column: what each table row shows."""
    ttr = row["ttr"]
    return {
        "tasks completed": f"{row['completed']}/{row['submitted']}",
        "tasks failed for good": str(row["failed"]),
        "tasks lost": str(row["lost"]),
        "time in system, mean": _s(row["tis_mean"]),
        "time in system, p95": _s(row["tis_p95"]),
        "makespan": _s(row["makespan"]),
        "time to recovery, mean": _s(statistics.fmean(ttr)) if ttr else "n/a",
        "time to recovery, p95": _s(percentile(ttr, 0.95)) if ttr else "n/a",
        "recoveries that held": f"{len(ttr)}/{row['recoveries']}" if row["recoveries"] is not None else "n/a",
        "strategy runs": _n(row["strategy_runs"]),
        "worker restarts": str(row["worker_restarts"]),
        "workers serving at the end": str(row["workers_alive"]),
        "faults injected": str(sum(row["faults"].values())),
    }


def render_compare_table(rows: list[dict[str, Any]]) -> str:
    cols = [columns(r) for r in rows]
    names = list(cols[0])
    width = max(len(n) for n in names)
    cw = max(10, *(len(v) for c in cols for v in c.values()), *(len(r["policy"]) for r in rows))
    lines = [f"  {'':<{width}}" + "".join(f"  {r['policy']:>{cw}}" for r in rows)]
    for n in names:
        lines.append(f"  {n:<{width}}" + "".join(f"  {c[n]:>{cw}}" for c in cols))
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is unknown or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def verdict(rows: list[dict[str, Any]]) -> str:
    """One line: the plugin against ``off``, and ``adaptive`` against ``ladder``, as ratios."""
    by = {r["policy"]: r for r in rows}
    parts = []
    off = by.get("off")
    for p in ("ladder", "score", "adaptive"):
        if off is not None and p in by:
            r = by[p]
            lost = "no more tasks lost" if r["lost"] <= off["lost"] else f"{r['lost'] - off['lost']} more tasks lost"
            parts.append(f"{p} {_x(ratio(r['tis_mean'], off['tis_mean']))} off's mean time in system ({lost})")
    if "ladder" in by and "adaptive" in by:
        a, lad = by["adaptive"], by["ladder"]
        parts.append(f"adaptive {_x(ratio(a['tis_mean'], lad['tis_mean']))} ladder's mean time in system, "
                     f"{_x(ratio(a['strategy_runs'], lad['strategy_runs']))} its strategy runs")
    if not parts:
        return "verdict: nothing to compare (name off and a policy, or ladder and adaptive)"
    return "verdict: " + "; ".join(parts)


def render_compare_html(rows: list[dict[str, Any]], args: Any) -> str:
    cols = [columns(r) for r in rows]
    head = "".join(f"<th>{escape(r['policy'])}</th>" for r in rows)
    body = "".join(f"<tr><th>{escape(n)}</th>" + "".join(f"<td>{escape(c[n])}</td>" for c in cols) + "</tr>"
                   for n in cols[0])
    span = max([1.0, *(r["makespan"] or 0.0 for r in rows)])
    curves = {r["policy"]: [(0.0, 0.0), *r["curve"]] for r in rows}
    dirs = "".join(f"<li>{escape(r['policy'])}: <code>{escape(r['dir'])}</code></li>" for r in rows)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>coordinator_plugins demo --compare</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:820px}}
th{{text-align:left;padding:2px 1em 2px 0}} td{{padding:2px 1em 2px 0;text-align:right}}
figure{{margin:1.5em 0}} figcaption{{font-weight:bold;margin-bottom:4px}} .legend{{font-size:12px}}
.key{{margin-right:1.2em;white-space:nowrap}}
.key i{{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}}</style>
</head><body><h1>One farm, one fault schedule, several policies</h1>
<p>{args.workers} workers, tasks for {args.duration:g} s at {args.task_rate:g}/s, faults
({escape(', '.join(args.faults))}) at {args.fault_rate:g}/s during the first {args.duration * 0.7:g} s, seed
{args.seed}. Each policy ran on a fresh database, one after another; <code>off</code> is the reference coordinator
without the plugin. Time in system: from a task's submission to its completion.</p>
<table><tr><th></th>{head}</tr>{body}</table>
<p>{escape(verdict(rows))}</p>
<h2>Completion curves</h2>
{svg.time_lines("Tasks completed since the first submission, per policy", span, curves, "tasks")}
<h2>Databases kept</h2><ul>{dirs}</ul>
</body></html>
"""
