"""What a run report shows, read from the bucket through the run store, before anything is drawn.

Reading is kept apart from drawing so that the console's run list and the report agree on what a
run's state, origin, RMSE and decision are, and so that a test can look at the figures without
parsing HTML. Every file a run may lack (an old run has no training_report.json; a run rejected on
arrival has no request.json; one that failed before training has no metrics) reads as None, and
the report says so where the plot would be.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from events.ledger import LedgerEvent, RunState, RunStatus, fold
from events.run_id import is_run_id
from events.timestamps import parse_rfc3339
from functions.platform import NotFound
from functions.run_store import RunStore, training_report_name
from mlrelay.run_view import NoSuchRun

# The trainer's per-run report (learning curves, slices, a sample of predictions).
TRAINING_REPORT_FORMAT = "mlrelay.training-report/v1"
MAX_TRAINING_REPORT_BYTES = 8 << 20


@dataclass(frozen=True)
class RunFacts:
    """One run as the report tells it."""

    bucket: str
    status: RunStatus
    records: tuple[LedgerEvent, ...]  # the ledger, oldest first
    request: Mapping[str, Any] | None
    origin: Mapping[str, Any]
    metrics: Mapping[str, Any]
    comparison: Mapping[str, Any] | None
    training_report: Mapping[str, Any] | None
    releases: tuple[Mapping[str, Any], ...]  # the traffic changes this run's model took part in
    previous: RunStatus | None  # the run that served when this one was checked
    previous_counts: Mapping[str, Any] | None
    notes: tuple[str, ...] = field(default=())  # files present but unreadable

    @property
    def run_id(self) -> str:
        return self.status.run_id

    @property
    def counts(self) -> Mapping[str, Any] | None:
        return counts_of(self.records)

    @property
    def decision(self) -> str | None:
        return decision_of(self.records, self.status)

    @property
    def rmse(self) -> float | None:
        return rmse_of(self.metrics)

    def record(self, state: str) -> LedgerEvent | None:
        """The first record of a state."""
        return next((event for event in self.records if event.state == state), None)


def read_facts(runs: RunStore, run_id: str) -> RunFacts:
    """Everything the report draws for `run_id`; NoSuchRun when the bucket has no such run."""
    if not isinstance(run_id, str) or not is_run_id(run_id):
        raise NoSuchRun(f"no run {str(run_id)[:80]!r}: not a run id")
    records = sorted(runs.ledger(run_id).get(run_id, []), key=lambda event: event.time)
    if not records:
        raise NoSuchRun(f"no run {run_id} in gs://{runs.bucket}")
    status = fold(records)
    notes: list[str] = []
    request = _read_document(lambda: runs.request_document(run_id), "request.json", notes)
    origin = (request or {}).get("origin") or _origin_from_ledger(records)
    comparison = _read_document(lambda: runs.read_comparison(run_id), "comparison.json", notes)
    training_report = _read_training_report(runs, run_id, notes)
    previous = previous_serving_run(runs, status, records)
    previous_counts = None
    if previous is not None:
        previous_counts = counts_of(sorted(runs.ledger(previous.run_id).get(previous.run_id, []),
                                           key=lambda event: event.time))
    return RunFacts(bucket=runs.bucket, status=status, records=tuple(records), request=request,
                    origin=origin if isinstance(origin, dict) else {}, metrics=runs.read_metrics(run_id),
                    comparison=comparison, training_report=training_report,
                    releases=tuple(releases_of(runs.releases(), run_id)), previous=previous,
                    previous_counts=previous_counts, notes=tuple(notes))


def _read_document(read: Callable[[], Any], what: str, notes: list[str]) -> Mapping[str, Any] | None:
    """A JSON object the run may lack (None); one that is there but unreadable is noted and skipped."""
    try:
        document = read()
    except NotFound:
        return None
    except ValueError as exc:
        notes.append(f"{what} is unreadable: {exc}")
        return None
    if not isinstance(document, dict):
        notes.append(f"{what} is not a JSON object")
        return None
    return document


def _read_training_report(runs: RunStore, run_id: str, notes: list[str]) -> Mapping[str, Any] | None:
    try:
        document = json.loads(runs.storage.read(training_report_name(run_id), max_bytes=MAX_TRAINING_REPORT_BYTES))
    except NotFound:
        return None
    except ValueError as exc:
        notes.append(f"training_report.json is unreadable: {exc}")
        return None
    if not isinstance(document, dict) or document.get("format") != TRAINING_REPORT_FORMAT:
        got = document.get("format") if isinstance(document, dict) else type(document).__name__
        notes.append(f"training_report.json is not {TRAINING_REPORT_FORMAT} (format {got!r}): not shown")
        return None
    return document


def _origin_from_ledger(records: list[LedgerEvent]) -> dict[str, Any]:
    """A request refused on arrival has no request.json; its first record keeps the origin."""
    for event in records:
        origin = event.details.get("origin")
        if isinstance(origin, dict):
            return origin
    return {}


def previous_serving_run(runs: RunStore, status: RunStatus, records: list[LedgerEvent]) -> RunStatus | None:
    """The run whose model served when this run's data was checked: what RunStore.last_serving_run
    answered then, at this run's training record (or its start). For the newest run it is
    last_serving_run's answer now; an older run's report compares it with the run it was checked
    against, not with one deployed after it. One pass over the ledgers, as last_serving_run makes."""
    training = next((event for event in records if event.state == RunState.TRAINING), None)
    as_of = training.time if training is not None else status.started
    served = [s for s in runs.statuses() if s.run_id != status.run_id and s.state == RunState.DEPLOYED
              and s.updated <= as_of]
    return max(served, key=lambda s: s.updated, default=None)


def counts_of(records: list[LedgerEvent] | tuple[LedgerEvent, ...]) -> dict[str, Any] | None:
    """The data counts of a run's `training` record: rows read, valid, dropped; train and eval rows."""
    training = next((event for event in records if event.state == RunState.TRAINING), None)
    if training is None:
        return None
    rows = training.details.get("rows") if isinstance(training.details.get("rows"), dict) else {}
    source = training.details.get("input") if isinstance(training.details.get("input"), dict) else {}
    counts = {"rows read": source.get("rows_read"), "rows valid": source.get("rows_valid"),
              "rows dropped": source.get("rows_dropped"), "train rows": rows.get("train"),
              "eval rows": rows.get("eval")}
    counts = {name: value for name, value in counts.items() if _is_number(value)}
    data_check = training.details.get("data_check")
    return {"counts": counts, "data_check": data_check if isinstance(data_check, dict) else None}


def decision_of(records: tuple[LedgerEvent, ...] | list[LedgerEvent], status: RunStatus) -> str | None:
    """Why the run ended as it did: the gate's or the bake's reason, else the deciding record's."""
    for state in (RunState.DEPLOYED, RunState.ROLLED_BACK):
        event = next((e for e in records if e.state == state and isinstance(e.details.get("bake"), dict)), None)
        if event is not None and status.state == state and isinstance(event.details["bake"].get("reason"), str):
            return event.details["bake"]["reason"]
    if status.reason:
        return status.reason
    for event in reversed(records):
        gate = event.details.get("gate")
        if isinstance(gate, dict) and isinstance(gate.get("reason"), str):
            return gate["reason"]
    return None


def rmse_of(metrics: Mapping[str, Any]) -> float | None:
    value = metrics.get("eval_rmse")
    return float(value) if _is_number(value) and math.isfinite(value) else None


def releases_of(releases: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """The traffic changes of this run's model: its own records (first, canary, promoted, rolled
    back), then any later one that moved traffic to or from the deployed model it had (a later
    promotion that retired it, a rollback)."""
    own = [release for release in releases if release.get("run_id") == run_id]
    deployed = {str(release.get("deployed_model_id")) for release in own if release.get("deployed_model_id")}
    chosen = []
    for release in releases:
        touched = set(map(str, (release.get("from") or {}))) | set(map(str, (release.get("to") or {})))
        if release.get("run_id") == run_id or (deployed & touched and release not in chosen and
                                                _time(release) >= min(map(_time, own))):
            chosen.append(release)
    return sorted(chosen, key=_time)


def current_split(releases: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The endpoint's traffic split now: the last traffic change's `to`, or None before the first."""
    return dict(releases[-1].get("to") or {}) if releases else None


def _time(release: Mapping[str, Any]) -> datetime:
    try:
        return parse_rfc3339(str(release.get("time")))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)


def release_time(release: Mapping[str, Any]) -> datetime | None:
    moment = _time(release)
    return None if moment.year == 1 else moment


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
