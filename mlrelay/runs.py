"""Reading runs back from the bucket: the ledger folded into each run's state and stage times."""
from __future__ import annotations

import json
from datetime import datetime

from events.errors import InvalidEvent
from events.ledger import LedgerEvent, RunStatus, fold, parse_ledger_object_name
from functions.platform import NotFound, Storage


def ledger_events(storage: Storage, run_id: str | None = None) -> dict[str, list[LedgerEvent]]:
    """Every readable ledger record under runs/ (or one run's), grouped by run id."""
    prefix = f"runs/{run_id}/events/" if run_id else "runs/"
    grouped: dict[str, list[LedgerEvent]] = {}
    for name in storage.list(prefix):
        parsed = parse_ledger_object_name(name)
        if parsed is None:
            continue
        try:
            event = LedgerEvent.from_json(storage.read(name))
        except (NotFound, InvalidEvent):
            continue
        grouped.setdefault(event.run_id, []).append(event)
    return grouped


def run_statuses(storage: Storage, run_id: str | None = None) -> list[RunStatus]:
    """Runs, oldest first."""
    statuses = [fold(events) for events in ledger_events(storage, run_id).values()]
    return sorted(statuses, key=lambda status: status.started)


def run_request_origin(storage: Storage, run_id: str) -> dict:
    try:
        request = json.loads(storage.read(f"runs/{run_id}/request.json"))
    except (NotFound, ValueError):
        return {}
    origin = request.get("origin") if isinstance(request, dict) else None
    return origin if isinstance(origin, dict) else {}


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
