"""Everything the bucket knows about one run, gathered into one JSON-able dict.

`mlrelay status RUN`, a report and a web console all show a run; they share this one reading of
the run store so that they cannot disagree. The view is built from what exists: the ledger (the
source of truth for state, times, job ids, the data check, the gate and the release), the
request, the trainer's metrics.json and comparison.json, the endpoint's release records and,
while the run trains, the trainer's progress.json. A piece that does not exist (a run that
failed in preprocessing has no RMSE) is left out rather than filled with nulls, so a reader
tests `"eval" in view` instead of guessing what a None means.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterable, Mapping

from events.ledger import LedgerEvent, RunState, RunStatus, fold
from events.timestamps import format_rfc3339
from functions.platform import NotFound
from functions.run_store import RunStore, progress_name

VIEW_FORMAT = "mlrelay.run-view/v1"
PROGRESS_FORMAT = "mlrelay.training-progress/v1"
MAX_PROGRESS_BYTES = 64 << 10
_PROGRESS_COUNTS = ("examples_seen", "examples_total", "evaluations_done", "evaluations_total")


class NoSuchRun(ValueError):
    """The bucket has neither a ledger nor a request for this run id."""


def run_records(runs: RunStore, run_id: str) -> list[LedgerEvent]:
    """A run's readable ledger records in time order (ValueError for anything but a run id)."""
    return sorted(runs.ledger(run_id).get(run_id, []), key=lambda event: event.time)


def read_progress(runs: RunStore, run_id: str) -> dict[str, Any] | None:
    """The trainer's progress.json, or None when it is absent, unreadable or not of its format.

    The file is rewritten while the job runs; a half-written or foreign document is no progress
    to show, never an error of the view.
    """
    try:
        document = json.loads(runs.storage.read(progress_name(run_id), max_bytes=MAX_PROGRESS_BYTES))
    except (NotFound, ValueError):
        return None
    if not isinstance(document, dict) or document.get("format") != PROGRESS_FORMAT:
        return None
    progress: dict[str, Any] = {}
    for key in _PROGRESS_COUNTS:
        value = document.get(key)
        if _is_number(value) and value >= 0:
            progress[key] = int(value)
    if "examples_seen" not in progress:
        return None
    if _is_number(document.get("last_eval_rmse")):
        progress["last_eval_rmse"] = float(document["last_eval_rmse"])
    if isinstance(document.get("updated"), str):
        progress["updated"] = document["updated"]
    total = progress.get("examples_total")
    if total:
        progress["fraction"] = round(min(progress["examples_seen"] / total, 1.0), 4)
    return progress


def run_view(runs: RunStore, run_id: str) -> dict[str, Any]:
    """One run as the bucket tells it; NoSuchRun when it has neither ledger nor request."""
    events = run_records(runs, run_id)
    request = _request_document(runs, run_id)
    if not events and request is None:
        raise NoSuchRun(f"no run {run_id}")
    view: dict[str, Any] = {"format": VIEW_FORMAT, "run_id": run_id}
    if request is not None:
        _put(view, "request", request.get("request"))
        _put(view, "origin", request.get("origin"))
    if not events:  # the request landed, its first record not yet
        view.update(state="starting", terminal=False)
        return view
    status = fold(events)
    view.update(state=status.state.value, terminal=status.terminal)
    _put(view, "reason", one_line(status.reason))
    view.update(started=_when(status.started), updated=_when(status.updated), records=status.records)
    view["job_ids"] = dict(status.job_ids)
    view["stages"] = stage_view(status, events)
    _put(view, "anomalies", list(status.anomalies))
    _put(view, "rows", _rows(events))
    _put(view, "data_check", _last(events, "data_check"))
    _put(view, "eval", _eval(runs, run_id, events))
    _put(view, "gate", _last(events, "gate"))
    _put(view, "release", _release(runs, run_id, events))
    _put(view, "model_version", _last(events, "model_version"))
    _put(view, "traffic_split", _last(events, "traffic_split"))
    if status.state == RunState.TRAINING:
        _put(view, "training_progress", read_progress(runs, run_id))
    return view


def stage_view(status: RunStatus, events: Iterable[LedgerEvent]) -> dict[str, dict[str, Any]]:
    """Each stage the run reached: its last state, start, end and seconds.

    Records after the one that ended the run (a redelivery's) change no stage's state, as they
    change nothing in the fold.
    """
    last_state: dict[str, str] = {}
    for event in sorted(events, key=lambda e: (e.time, e.terminal)):
        last_state[event.stage] = event.state.value
        if event.terminal:
            break
    return {name: {"state": last_state.get(name), "start": _when(timing.start), "end": _when(timing.end),
                   "seconds": timing.seconds}
            for name, timing in status.stages.items()}


def one_line(text: object) -> str | None:
    """A reason on one line (a job's error may span several)."""
    if not isinstance(text, str) or not text.strip():
        return None
    return " ".join(text.split())


def _request_document(runs: RunStore, run_id: str) -> dict[str, Any] | None:
    try:
        return runs.request_document(run_id)
    except (NotFound, ValueError):
        return None


def _rows(events: list[LedgerEvent]) -> dict[str, Any] | None:
    """Rows read, dropped and valid (the manifest's input), and per split, as the train stage recorded them."""
    rows: dict[str, Any] = {}
    source = _last(events, "input")
    if isinstance(source, Mapping):
        for key, name in (("rows_read", "read"), ("rows_dropped", "dropped"), ("rows_valid", "valid"),
                          ("limit", "limit")):
            if source.get(key) is not None:
                rows[name] = source[key]
    splits = _last(events, "rows")
    if isinstance(splits, Mapping) and splits:
        rows["splits"] = dict(splits)
    return rows or None


def _eval(runs: RunStore, run_id: str, events: list[LedgerEvent]) -> dict[str, Any] | None:
    """The candidate's eval RMSE beside the champion's, the mean's and, for generated data, the floor
    and the best possible RMSE on these rows."""
    metrics = runs.read_metrics(run_id) or _last(events, "metrics") or {}
    comparison = _comparison(runs, run_id)
    figures: dict[str, Any] = {}
    candidate = comparison.get("candidate") if isinstance(comparison.get("candidate"), Mapping) else {}
    champion = comparison.get("champion") if isinstance(comparison.get("champion"), Mapping) else None
    _put(figures, "rmse", _number(metrics.get("eval_rmse"), candidate.get("rmse")))
    _put(figures, "baseline_rmse", _number(metrics.get("baseline_rmse"), comparison.get("mean_baseline_rmse")))
    _put(figures, "bayes_floor", _number(metrics.get("bayes_floor")))
    _put(figures, "best_possible_rmse", _number(metrics.get("best_possible_rmse")))
    _put(figures, "rows", _number(comparison.get("eval_rows"), metrics.get("eval_examples")))
    if champion is not None:
        entry: dict[str, Any] = {}
        _put(entry, "rmse", _number(champion.get("rmse")))
        _put(entry, "error", one_line(champion.get("error")))
        _put(entry, "artifact_uri", champion.get("artifact_uri"))
        _put(entry, "version", _last(events, "champion", stage="train"))
        _put(figures, "champion", entry)
    slices = candidate.get("slices")
    if isinstance(slices, Mapping) and slices:
        champion_slices = (champion or {}).get("slices")
        champion_slices = champion_slices if isinstance(champion_slices, Mapping) else {}
        figures["slices"] = {name: _slice(entry, champion_slices.get(name)) for name, entry in sorted(slices.items())
                             if isinstance(entry, Mapping)}
    for key, name in (("train_examples_seen", "train_examples_seen"), ("train_time_s", "train_seconds"),
                      ("train_examples_per_s", "train_examples_per_s")):
        _put(figures, name, _number(metrics.get(key)))
    if isinstance(metrics.get("history"), list) and metrics["history"]:
        figures["history"] = [v for v in metrics["history"] if _is_number(v)]
    return figures or None


def _slice(candidate: Mapping[str, Any], champion: Any) -> dict[str, Any]:
    """One slice: the candidate's RMSE and rows, the champion's RMSE on the same rows."""
    entry: dict[str, Any] = {}
    _put(entry, "rmse", _number(candidate.get("rmse")))
    _put(entry, "rows", candidate.get("rows"))
    _put(entry, "champion_rmse", _number(champion.get("rmse")) if isinstance(champion, Mapping) else None)
    return entry


def _comparison(runs: RunStore, run_id: str) -> dict[str, Any]:
    try:
        document = runs.read_comparison(run_id)
    except (NotFound, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _release(runs: RunStore, run_id: str, events: list[LedgerEvent]) -> dict[str, Any] | None:
    """How the model went into service: the rollout, the canary's bake and its verdict, the traffic changes."""
    release: dict[str, Any] = {}
    _put(release, "rollout", _last(events, "rollout"))
    _put(release, "bake_ends", _last(events, "bake_ends"))
    _put(release, "deployed_model_id", _last(events, "deployed_model_id"))
    _put(release, "champion_deployed_model_id", _last(events, "champion", stage="release"))
    _put(release, "bake", _last(events, "bake"))
    _put(release, "figures", _last(events, "figures"))
    changes = [change for change in runs.releases() if change.get("run_id") == run_id]
    _put(release, "changes", [{key: change[key] for key in ("time", "action", "by", "from", "to", "why", "retired")
                               if key in change} for change in changes])
    return release or None


def _last(events: Iterable[LedgerEvent], key: str, stage: str | None = None) -> Any:
    """The last value the run's records (of one stage, if given) give `key`; None when none has it.

    A key may mean different things in different stages ("champion" is a registered version when
    training starts, a deployed model id during the release), hence the stage.
    """
    found = None
    for event in events:
        if (stage is None or event.stage == stage) and event.details.get(key) is not None:
            found = event.details[key]
    return found


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != {} and value != []:
        target[key] = value


def _number(*values: Any) -> float | int | None:
    return next((value for value in values if _is_number(value)), None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else format_rfc3339(moment, digits=6)
