"""The run ledger: append-only records of what happened to a run, and the fold that reads them.

Each stage appends one JSON object per fact (its object name, which sorts by time, is the run
store's: `functions.run_store.ledger_name`). Nothing is ever rewritten, so concurrent or
redelivered functions cannot lose each other's records; `fold` turns whatever records exist, in any order, into
the run's current state and per-stage times.

Run states and the transitions a run may take:

    requested ──┬─────────────────► preprocessing ──► training ──► deploying ──► deployed
        │       └─► queued ─────────────┘   │              │             │    ▲
        │              │                    │              │             ▼    │ promoted
        │              │                    │              │           baking ┴──► rolled-back
        ├─► rejected ◄─┼────────────────────┤              ├─► rejected  │
        └─► failed  ◄──┴────────────────────┴──────────────┴─► failed ◄──┘
    (rejected: a bad request, no room in the queue, the daily budget spent, data outside its
    bounds, or the gate)

A run's first record is `requested` (or `rejected`, for a request refused on arrival). A request
that finds every active slot taken waits `queued` (in the request stage) until a run ends; one
that finds the queue full, or the daily run budget spent, is `rejected` with the reason. A blessed
candidate beside a champion bakes as a canary (`baking`, in the release stage) before it is
promoted (`deployed`) or rolled back. `deployed`, `rejected`, `rolled-back` and `failed` are
terminal. Repeating the current state is legal (a redelivery).
Folding rules:
- the earliest terminal record decides the outcome: records written later by redeliveries (a
  second `training`, a late `preprocessing`) never reopen a finished run, and a later terminal
  record that disagrees is reported as an anomaly;
- without a terminal record the state is the furthest one reached, so an out-of-order or
  redelivered earlier record never moves a run backwards;
- a change that skips or reverses the chart above is kept but listed in `RunStatus.anomalies`;
- `RunStatus.reason` is the deciding record's reason, or, while a run waits `queued`, why it waits.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from events.errors import InvalidEvent
from events.run_id import is_run_id
from events.timestamps import format_rfc3339, to_utc

LEDGER_FORMAT = "mlrelay.ledger/v1"


class RunState(StrEnum):
    REQUESTED = "requested"
    QUEUED = "queued"
    PREPROCESSING = "preprocessing"
    TRAINING = "training"
    DEPLOYING = "deploying"
    BAKING = "baking"
    DEPLOYED = "deployed"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"


TERMINAL_STATES = frozenset({RunState.DEPLOYED, RunState.REJECTED, RunState.ROLLED_BACK, RunState.FAILED})
STAGES = ("request", "preprocess", "train", "deploy", "release")

# The stage a state belongs to; terminal failures may happen in any stage.
_STATE_STAGES: dict[RunState, frozenset[str]] = {
    RunState.REQUESTED: frozenset({"request"}),
    RunState.QUEUED: frozenset({"request"}),
    RunState.PREPROCESSING: frozenset({"preprocess"}),
    RunState.TRAINING: frozenset({"train"}),
    RunState.DEPLOYING: frozenset({"deploy"}),
    RunState.BAKING: frozenset({"release"}),
    RunState.DEPLOYED: frozenset({"deploy", "release"}),
    RunState.ROLLED_BACK: frozenset({"release"}),
    RunState.REJECTED: frozenset({"request", "train", "deploy"}),
    RunState.FAILED: frozenset(STAGES),
}
_PROGRESS = {RunState.REQUESTED: 0, RunState.QUEUED: 1, RunState.PREPROCESSING: 2, RunState.TRAINING: 3,
             RunState.DEPLOYING: 4, RunState.BAKING: 5}
INITIAL_STATES = frozenset({RunState.REQUESTED, RunState.REJECTED})
LEGAL_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.REQUESTED: frozenset({RunState.QUEUED, RunState.PREPROCESSING, RunState.REJECTED, RunState.FAILED}),
    # rejected: refused while it waits (by an operator or the reconcile sweep); it never ran
    RunState.QUEUED: frozenset({RunState.PREPROCESSING, RunState.REJECTED, RunState.FAILED}),
    # rejected: the data check refuses the manifest's counts before any training is launched
    RunState.PREPROCESSING: frozenset({RunState.TRAINING, RunState.REJECTED, RunState.FAILED}),
    RunState.TRAINING: frozenset({RunState.DEPLOYING, RunState.REJECTED, RunState.FAILED}),
    RunState.DEPLOYING: frozenset({RunState.DEPLOYED, RunState.BAKING, RunState.REJECTED, RunState.FAILED}),
    RunState.BAKING: frozenset({RunState.DEPLOYED, RunState.ROLLED_BACK, RunState.FAILED}),
    RunState.DEPLOYED: frozenset(),
    RunState.REJECTED: frozenset(),
    RunState.ROLLED_BACK: frozenset(),
    RunState.FAILED: frozenset(),
}


def is_legal_transition(old: RunState | None, new: RunState) -> bool:
    """Whether a run may go from `old` (None: no record yet) to `new`; staying put is legal."""
    if old is None:
        return new in INITIAL_STATES
    return new == old or new in LEGAL_TRANSITIONS[old]


@dataclass(frozen=True)
class LedgerEvent:
    """One ledger record: which run, which stage, the state it reached, when and because of what."""

    run_id: str
    stage: str
    state: RunState
    time: datetime
    cause_event_id: str | None = None
    job_ids: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_run_id(self.run_id):
            raise InvalidEvent(f"ledger record: not a run id: {str(self.run_id)[:80]!r}")
        try:
            state = RunState(self.state)
        except ValueError:
            raise InvalidEvent(f"ledger record: unknown state {self.state!r}") from None
        object.__setattr__(self, "state", state)
        if self.stage not in STAGES:
            raise InvalidEvent(f"ledger record: unknown stage {self.stage!r} (expected one of {', '.join(STAGES)})")
        if self.stage not in _STATE_STAGES[state]:
            raise InvalidEvent(f"ledger record: state {state.value!r} cannot happen in stage {self.stage!r}")
        try:
            object.__setattr__(self, "time", to_utc(self.time))
        except ValueError as err:
            raise InvalidEvent(f"ledger record time: {err}") from None
        if self.cause_event_id is not None and not isinstance(self.cause_event_id, str):
            raise InvalidEvent("ledger record: cause_event_id must be a string")
        if not isinstance(self.job_ids, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.job_ids.items()
        ):
            raise InvalidEvent("ledger record: job_ids must map strings to strings")
        if not isinstance(self.timings, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in self.timings.items()
        ):
            raise InvalidEvent("ledger record: timings must map names to seconds")
        if not isinstance(self.details, Mapping):
            raise InvalidEvent("ledger record: details must be a JSON object")
        try:
            json.dumps(dict(self.details), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InvalidEvent(f"ledger record: details are not JSON ({err})") from None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "run_id": self.run_id,
            "stage": self.stage,
            "state": self.state.value,
            "time": format_rfc3339(self.time, digits=6),
            "cause_event_id": self.cause_event_id,
            "job_ids": dict(self.job_ids),
            "details": dict(self.details),
            "timings": dict(self.timings),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str | Mapping[str, Any]) -> LedgerEvent:
        """Read a record back; InvalidEvent for anything that is not one."""
        if isinstance(raw, (bytes, bytearray, str)):
            try:
                raw = json.loads(raw)
            except (ValueError, RecursionError) as err:
                raise InvalidEvent(f"ledger record is not JSON: {err}") from None
        if not isinstance(raw, Mapping):
            raise InvalidEvent("ledger record must be a JSON object")
        if raw.get("format") != LEDGER_FORMAT:
            raise InvalidEvent(f"ledger record format must be {LEDGER_FORMAT!r}, got {raw.get('format')!r}")
        missing = [key for key in ("run_id", "stage", "state", "time") if key not in raw]
        if missing:
            raise InvalidEvent(f"ledger record is missing {', '.join(missing)}")
        if not isinstance(raw["time"], str):
            raise InvalidEvent("ledger record time must be an RFC 3339 string")
        return cls(
            run_id=raw["run_id"],
            stage=raw["stage"],
            state=raw["state"],
            time=raw["time"],
            cause_event_id=raw.get("cause_event_id"),
            job_ids=_or_empty(raw.get("job_ids")),
            details=_or_empty(raw.get("details")),
            timings=_or_empty(raw.get("timings")),
        )


def _or_empty(value: Any) -> Any:
    return {} if value is None else value


@dataclass(frozen=True)
class StageTiming:
    start: datetime | None
    end: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class RunStatus:
    """A run as its ledger tells it."""

    run_id: str
    state: RunState
    stages: Mapping[str, StageTiming]
    started: datetime
    updated: datetime
    job_ids: Mapping[str, str]
    reason: str | None
    anomalies: tuple[str, ...]
    records: int

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        def when(moment: datetime | None) -> str | None:
            return None if moment is None else format_rfc3339(moment)

        return {
            "run_id": self.run_id,
            "state": self.state.value,
            "terminal": self.terminal,
            "started": when(self.started),
            "updated": when(self.updated),
            "stages": {
                name: {"start": when(t.start), "end": when(t.end), "seconds": t.seconds}
                for name, t in self.stages.items()
            },
            "job_ids": dict(self.job_ids),
            "reason": self.reason,
            "anomalies": list(self.anomalies),
            "records": self.records,
        }


def _order(event: LedgerEvent) -> tuple[datetime, int, int]:
    terminal_last = 1 if event.terminal else 0
    return event.time, terminal_last, _PROGRESS.get(event.state, 9)


def fold(events: Iterable[LedgerEvent]) -> RunStatus:
    """A run's current state from its ledger records, given in any order."""
    ordered = sorted(events, key=_order)
    if not ordered:
        raise ValueError("a run's ledger has at least one record")
    run_ids = {event.run_id for event in ordered}
    if len(run_ids) > 1:
        raise ValueError(f"records of several runs folded together: {', '.join(sorted(run_ids))}")

    anomalies: list[str] = []
    deciding = next((event for event in ordered if event.terminal), None)
    if deciding is not None:
        for event in ordered:
            if event.terminal and event.state != deciding.state:
                anomalies.append(
                    f"{event.state.value} at {format_rfc3339(event.time)} conflicts with "
                    f"{deciding.state.value} at {format_rfc3339(deciding.time)}"
                )
        considered = ordered[: ordered.index(deciding) + 1]
    else:
        considered = ordered

    current: RunState | None = None
    job_ids: dict[str, str] = {}
    for event in considered:
        job_ids.update(event.job_ids)
        if not is_legal_transition(current, event.state):
            backwards = (
                current is not None
                and not event.terminal
                and current in _PROGRESS
                and _PROGRESS[event.state] < _PROGRESS[current]
            )
            if not backwards:  # a redelivered earlier step is expected; a skip is not
                before = current.value if current else "(no record)"
                anomalies.append(
                    f"illegal transition {before} -> {event.state.value} at {format_rfc3339(event.time)}"
                )
        if current is None or event.terminal or (
            current in _PROGRESS and _PROGRESS[event.state] > _PROGRESS[current]
        ):
            current = event.state
    assert current is not None

    return RunStatus(
        run_id=ordered[0].run_id,
        state=current,
        stages=_stage_timings(considered, deciding),
        started=ordered[0].time,
        updated=ordered[-1].time,
        job_ids=job_ids,
        reason=_reason(deciding or _waiting(considered, current)),
        anomalies=tuple(anomalies),
        records=len(ordered),
    )


def _stage_timings(considered: list[LedgerEvent], deciding: LedgerEvent | None) -> dict[str, StageTiming]:
    """Each stage starts at its first record and ends when a later stage starts or the run ends."""
    timings: dict[str, StageTiming] = {}
    for index, stage in enumerate(STAGES):
        own = [event.time for event in considered if event.stage == stage]
        if not own:
            continue
        start = min(own)
        later = [event.time for event in considered if STAGES.index(event.stage) > index]
        if deciding is not None and deciding.stage == stage:
            later.append(deciding.time)
        timings[stage] = StageTiming(start, min(later) if later else None)
    return timings


def _waiting(considered: list[LedgerEvent], current: RunState) -> LedgerEvent | None:
    """The record that put a run in the queue, while it waits there: its reason says behind what."""
    if current != RunState.QUEUED:
        return None
    return next((event for event in reversed(considered) if event.state == RunState.QUEUED), None)


def _reason(deciding: LedgerEvent | None) -> str | None:
    if deciding is None:
        return None
    reason = deciding.details.get("reason")
    return reason if isinstance(reason, str) else None
