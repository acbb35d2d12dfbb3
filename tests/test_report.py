"""Issue 16, point 6: the demo report's plots (integer ticks on integer axes, one time axis from
0 for every time plot, whole bar labels, visible 0% bars) and its fault -> recovery table."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from coordinator_plugins.demo import svg
from coordinator_plugins.demo.collect import Results, attribute, tally
from coordinator_plugins.demo.report import render_html, summary_rows


def tick_labels(chart: str, axis: str) -> list[str]:
    anchor = "end" if axis == "y" else "middle"
    return re.findall(rf'<text x="[\d.]+" y="[\d.]+" font-size="10" text-anchor="{anchor}">([^<]+)</text>', chart)


def x_axis(chart: str) -> list[str]:
    return tick_labels(chart, "x")


def test_ticks_are_round_and_integer_axes_get_integers() -> None:
    assert svg.ticks(5, integer=True) == [0, 2, 4, 6]
    assert svg.ticks(3.75, integer=True) == [0, 1, 2, 3, 4]
    assert svg.ticks(0, integer=True) == [0, 1]
    assert svg.ticks(2.3, integer=False, count=6) == [0, 0.5, 1, 1.5, 2, 2.5]
    for top in (1, 2, 3, 7, 13, 53, 99, 1234):
        assert all(float(t).is_integer() for t in svg.ticks(top, integer=True)), top
        assert svg.ticks(top, integer=True)[-1] >= top
    levels = svg.time_dots("levels", 31.4, {"recovered": [(3.2, 1), (10.0, 4)]}, "level", 5)
    assert tick_labels(levels, "y") == ["0", "1", "2", "3", "4", "5"]


def test_every_time_chart_shares_one_axis_from_zero() -> None:
    span = 27.3
    charts = [
        svg.time_lines("tasks", span, {"pending": [(0.4, 3), (12.0, 53)], "running": [(0.4, 2)]}, "tasks",
                       [(3.22, "kill")]),
        svg.time_bars("errors", span, {"network": [0, 2, 1] + [0] * 20}, "errors", [(3.22, "kill")]),
        svg.time_dots("recoveries", span, {"recovered": [(3.22, 2)]}, "level", 5),
    ]
    axes = [x_axis(c) for c in charts]
    assert axes[0][0] == "0" and float(axes[0][-1]) >= span
    assert axes[0] == axes[1] == axes[2]
    assert all(float(v).is_integer() for v in axes[0])
    assert tick_labels(charts[0], "y") == ["0", "20", "40", "60"]
    assert "fault K: kill" in charts[0] and "3.2 s: fault kill" in charts[0]


def test_bar_labels_are_whole_and_a_zero_bar_is_visible() -> None:
    label = "scheduling / coordinator_restart_component"
    chart = svg.hbars("success", [(label, 0.0, "0% of 3 runs"), ("network / retry", 1.0, "100% of 2 runs")],
                      "share")
    assert f">{label}</text>" in chart
    zero_row = chart[chart.index(label):chart.index("0% of 3 runs")]
    assert 'fill="none" stroke="#ccc"' in zero_row  # the bar's frame is drawn even when it is empty
    assert ">0% of 3 runs</text>" in chart


def _at(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def test_report_links_each_fault_to_the_recovery_that_followed_it() -> None:
    t0 = 1_000_000.0
    recoveries = [
        {"at": _at(t0 + 5.0), "execution_time": 1.5, "error_id": "a" * 32, "component": "worker",
         "error_type": "worker", "recovery_level": 2, "success": True, "strategy_id": "worker", "outcome": "succeeded",
         "targets": {"workers": ["worker-2"], "tasks": []},
         "attempts": [{"strategy_id": "worker", "level": 2, "outcome": "success"}]},
        {"at": _at(t0 + 9.0), "execution_time": 0.1, "error_id": "b" * 32, "component": "scheduler",
         "error_type": "scheduling", "recovery_level": 5, "success": True, "strategy_id": "coordinator",
         "outcome": "succeeded", "targets": {"workers": [], "tasks": []},
         "attempts": [{"strategy_id": "retry", "level": 1, "outcome": "not_applicable"},
                      {"strategy_id": "coordinator", "level": 5, "outcome": "success"}]},
    ]
    faults = [{"t": t0 + 3.0, "kind": "kill", "detail": "SIGKILL worker worker-2", "target": {"worker": "worker-2"}},
              {"t": t0 + 8.8, "kind": "scheduler", "detail": "scheduler loop stopped",
               "target": {"component": "scheduler"}},
              {"t": t0 + 9.5, "kind": "network", "detail": "network error", "target": {"error_id": "c" * 32}}]
    res = Results(groups=[{"error_id": "a" * 32, "resolution_status": "resolved"},
                          {"error_id": "b" * 32, "resolution_status": "resolved"}],
                  earlier_groups=0, occurrences=4, recoveries=recoveries, metrics={}, strategies={},
                  history_limit_reached=False)
    links = attribute(faults, res, t0)
    assert [link["recovery"]["error_id"][:1] if link["recovery"] else None for link in links] == ["a", "b", None]
    t = tally(res) | {"submitted": 10, "completed": 10, "lost": 0}
    assert t["by_level"] == {2: {"recoveries": 1, "succeeded": 1}, 5: {"recoveries": 1, "succeeded": 1}}
    assert t["strategy_runs"] == 2 and t["not_applicable"] == 1
    stats = {"t0": t0, "span": 12.0, "task_samples": [(0.0, 1, 2), (6.0, 5, 2)], "error_times": [(t0 + 3.5, "worker")],
             "workers": 2, "duration": 10.0, "seed": 1, "database": "x", "faults": {"kill": 1, "scheduler": 1,
                                                                                     "network": 1},
             "passed": 9, "failed_tests": 1, "errored": 0}
    rows = summary_rows(stats, t, {})
    html = render_html(stats, rows, t, [{**r, "end": datetime.fromisoformat(r["at"]).timestamp()}
                                        for r in recoveries], links)
    assert "<td>3.0 s</td><td>kill</td>" in html and "succeeded: worker at L2" in html
    assert "succeeded: coordinator at L5" in html and "no recovery of its own" in html
    assert html.count("<svg") == 5
