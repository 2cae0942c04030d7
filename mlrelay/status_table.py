"""The table `mlrelay status` prints: one line per run, its stages indented under it."""
from __future__ import annotations

from datetime import datetime

from events.ledger import RunStatus


def _clock(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%H:%M:%S.%f")[:-3]


def format_status_table(statuses: list[RunStatus]) -> str:
    """A plain table: one line per run, then its stages indented under it."""
    if not statuses:
        return "no runs yet"
    lines = []
    for status in statuses:
        lines.append(f"{status.run_id}  {status.state.value:<13} started {status.started:%Y-%m-%d %H:%M:%S}Z"
                     + (f"  reason: {status.reason}" if status.reason else ""))
        for stage, timing in status.stages.items():
            took = "" if timing.seconds is None else f"{timing.seconds:8.2f} s"
            lines.append(f"    {stage:<11} {_clock(timing.start)} → {_clock(timing.end):<12} {took}")
        for anomaly in status.anomalies:
            lines.append(f"    ! {anomaly}")
    return "\n".join(lines)
