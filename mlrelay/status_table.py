"""The table `mlrelay status` prints: one line per run, its stages indented under it."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from events.ledger import LedgerEvent, RunStatus, fold
from functions.run_store import RunStore


@dataclass(frozen=True)
class RunSummary:
    """A run's status with the two figures a list of runs is read for: how good, and what was decided."""

    status: RunStatus
    eval_rmse: float | None = None
    decision: str | None = None


def run_summaries(runs: RunStore) -> list[RunSummary]:
    """Every run, oldest first, from one listing of the ledger (the figures are in its records)."""
    summaries = [summarize(events) for events in runs.ledger().values()]
    return sorted(summaries, key=lambda summary: summary.status.started)


def summarize(events: Iterable[LedgerEvent]) -> RunSummary:
    ordered = sorted(events, key=lambda event: event.time)
    status = fold(ordered)
    return RunSummary(status, _eval_rmse(ordered), decision(status, ordered))


def _eval_rmse(events: list[LedgerEvent]) -> float | None:
    """The candidate's eval RMSE, as the deploy stage recorded the trainer's metrics."""
    found = None
    for event in events:
        metrics = event.details.get("metrics")
        if isinstance(metrics, dict) and isinstance(metrics.get("eval_rmse"), (int, float)):
            found = float(metrics["eval_rmse"])
    return found


def decision(status: RunStatus, events: list[LedgerEvent]) -> str | None:
    """The last decision the chain took about the run, in a word or three."""
    found = None
    for event in events:
        details = event.details
        check = details.get("data_check")
        if isinstance(check, dict) and not check.get("passed", True):
            found = "data refused"
        gate = details.get("gate")
        if isinstance(gate, dict):
            found = "gate blessed" if gate.get("blessed") else "gate rejected"
        if details.get("rollout") and found == "gate blessed":
            found = "canary" if details["rollout"] == "canary" else f"{details['rollout']} model"
        bake = details.get("bake")
        if isinstance(bake, dict):
            found = "promoted" if bake.get("promote") else "rolled back"
    if status.state.value == "rejected" and found in (None, "gate blessed"):
        found = "refused"
    return found


def _clock(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%H:%M:%S.%f")[:-3]


def format_status_table(rows: list[RunSummary] | list[RunStatus]) -> str:
    """A plain table: one line per run (state, start, RMSE, decision), then its stages indented under it."""
    if not rows:
        return "no runs yet"
    lines = []
    for row in rows:
        summary = row if isinstance(row, RunSummary) else RunSummary(row)
        status = summary.status
        rmse = "-" if summary.eval_rmse is None else f"{summary.eval_rmse:.4f}"
        lines.append(f"{status.run_id}  {status.state.value:<13} started {status.started:%Y-%m-%d %H:%M:%S}Z"
                     f"  RMSE {rmse:<7} {summary.decision or '-'}"
                     + (f"  reason: {' '.join(status.reason.split())}" if status.reason else ""))
        for stage, timing in status.stages.items():
            took = "" if timing.seconds is None else f"{timing.seconds:8.2f} s"
            lines.append(f"    {stage:<11} {_clock(timing.start)} → {_clock(timing.end):<12} {took}")
        for anomaly in status.anomalies:
            lines.append(f"    ! {anomaly}")
    return "\n".join(lines)
