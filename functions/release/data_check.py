"""The data check: do this run's preprocessing counts look like the last successful run's?

Training on a source that suddenly lost half its rows, on data a filter now mostly drops, or on a
split gone wrong costs a training job and can still pass the gate (the candidate is scored on its
own eval rows). The manifest's counts (`events.manifest.summarize`: rows per split, and the
pipeline's rows read and dropped) catch these before training is launched. Checks, each against
the last successful run:
- rows read within ±`rows_read_tolerance` of the earlier figure (a fraction of it), but only when
  both runs asked for the same `limit` and `source`: a request for other data changes rows read
  on purpose;
- the share of rows read that the filters dropped within ±`dropped_share_tolerance` (absolute);
- each split's share of the rows written within ±`split_share_tolerance` (absolute).
A count that either run lacks is not compared (the reason says so) rather than blocking every
later run on a record an older version wrote. With no earlier run there is nothing to compare.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from events.manifest import SPLITS, ManifestSummary
from functions.release.checks import check, failed, is_within, percent
from functions.release.policy import ReleasePolicy


class InvalidSummary(ValueError):
    """A manifest summary whose counts are not counts; str() is one line."""


@dataclass(frozen=True)
class RunData:
    """One run's manifest summary and what its request asked for.

    `summary` is a `ManifestSummary` or its ledger form {"rows": {split: n}, "input": {...}}.
    `source` is the source the run read (the request's, or the platform default it fell back to),
    `limit` the request's limit.
    """

    summary: ManifestSummary | Mapping[str, Any]
    limit: int | None
    source: str | None
    run_id: str | None = None


@dataclass(frozen=True)
class DataCheckDecision:
    """Whether training may go ahead on this data, why (one line), and every check made
    (JSON-ready records {"name", "value", "bound": [low, high], "passed"})."""

    passed: bool
    reason: str
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "checks": [dict(c) for c in self.checks]}


@dataclass(frozen=True)
class _Counts:
    rows: dict[str, int]
    rows_read: int | None
    rows_dropped: int | None


def check_data(current: RunData, previous: RunData | None,
               policy: ReleasePolicy = ReleasePolicy()) -> DataCheckDecision:
    """The data check of `current` against `previous`, the last successful run (None: there is none)."""
    now = _counts(current.summary, "this run's")
    if previous is None:
        return DataCheckDecision(True, "no earlier run to compare with")
    before = _counts(previous.summary, "the earlier run's")
    checks: list[dict[str, Any]] = []
    problems: list[str] = []
    notes: list[str] = []

    if (current.limit, current.source) != (previous.limit, previous.source):
        notes.append("rows read not compared: the requests differ (" + _difference(current, previous) + ")")
    elif now.rows_read is None or not before.rows_read:
        notes.append("rows read not compared: " + _missing(now.rows_read, before.rows_read or None))
    else:
        tolerance = policy.rows_read_tolerance
        low, high = max(0.0, before.rows_read * (1 - tolerance)), before.rows_read * (1 + tolerance)
        checks.append(check("rows_read", now.rows_read, [low, high], is_within(now.rows_read, low, high)))
        change = now.rows_read / before.rows_read - 1
        if now.rows_read == before.rows_read:
            text = f"rows read unchanged at {now.rows_read}"
        else:
            text = (f"rows read {'rose' if change > 0 else 'fell'} from {before.rows_read} to {now.rows_read} "
                    f"({'+' if change > 0 else ''}{percent(change)}, allowed ±{percent(tolerance)})")
        (notes if checks[-1]["passed"] else problems).append(text)

    dropped_now, dropped_before = _share(now.rows_dropped, now.rows_read), _share(before.rows_dropped, before.rows_read)
    if dropped_now is None or dropped_before is None:
        notes.append("dropped share not compared: " + _missing(dropped_now, dropped_before))
    else:
        low, high = _band(dropped_before, policy.dropped_share_tolerance)
        checks.append(check("dropped_share", dropped_now, [low, high], is_within(dropped_now, low, high)))
        if not checks[-1]["passed"]:
            problems.append(f"the filters dropped {percent(dropped_now)} of the rows read, against "
                            f"{percent(dropped_before)} last time (allowed {_points(policy.dropped_share_tolerance)})")

    # Shares only of the same splits: with a split missing, the others' shares mean nothing.
    if set(now.rows) != set(SPLITS) or set(before.rows) != set(SPLITS) or not sum(before.rows.values()):
        notes.append("split shares not compared: " + _missing(
            now.rows if set(now.rows) == set(SPLITS) else None,
            before.rows if set(before.rows) == set(SPLITS) and sum(before.rows.values()) else None))
    else:
        total_now, total_before = sum(now.rows.values()), sum(before.rows.values())
        for split in SPLITS:
            share_now, share_before = now.rows[split] / total_now, before.rows[split] / total_before
            low, high = _band(share_before, policy.split_share_tolerance)
            checks.append(check(f"split_share[{split}]", share_now, [low, high], is_within(share_now, low, high)))
            if not checks[-1]["passed"]:
                problems.append(f"the {split} split holds {percent(share_now)} of the rows written, against "
                                f"{percent(share_before)} last time (allowed {_points(policy.split_share_tolerance)})")

    against = f"the last good run {previous.run_id}" if previous.run_id else "the last good run"
    if problems:
        more = len(failed(checks)) - 1
        extra = f"; {more} more check{'s' if more != 1 else ''} failed" if more > 0 else ""
        return DataCheckDecision(False, f"data unlike {against}: {problems[0]}{extra}; if the change is meant, "
                                        "run again with wider release.dataCheck tolerances", checks)
    summary = f"data in line with {against} ({len(checks)} check{'s' if len(checks) != 1 else ''} passed)"
    return DataCheckDecision(True, "; ".join([summary, *notes]), checks)


def _points(tolerance: float) -> str:
    """An absolute band on a share, in percentage points: 0.05 -> '±5 points'."""
    return f"±{tolerance * 100:.3g} points"


def _band(center: float, tolerance: float) -> tuple[float, float]:
    return max(0.0, center - tolerance), min(1.0, center + tolerance)


def _share(part: int | None, whole: int | None) -> float | None:
    return None if part is None or not whole else part / whole


def _missing(now: Any, before: Any) -> str:
    """Which run lacks the figure (None): a count not recorded, or nothing to take a share of."""
    if now is None and before is None:
        return "neither run has the figure"
    return f"{'this run' if now is None else 'the earlier run'} has no figure"


def _difference(current: RunData, previous: RunData) -> str:
    parts = []
    if current.limit != previous.limit:
        parts.append(f"limit {current.limit} against {previous.limit}")
    if current.source != previous.source:
        parts.append(f"source {current.source} against {previous.source}")
    return ", ".join(parts)


def _counts(summary: ManifestSummary | Mapping[str, Any], whose: str) -> _Counts:
    if isinstance(summary, ManifestSummary):
        rows, inputs = summary.rows, summary.input
    elif isinstance(summary, Mapping):
        rows, inputs = summary.get("rows"), summary.get("input", {})
    else:
        raise InvalidSummary(f"{whose} manifest summary is not an object (got {type(summary).__name__})")
    if not isinstance(rows, Mapping):
        raise InvalidSummary(f"{whose} manifest summary has no rows per split")
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise InvalidSummary(f"{whose} manifest summary: input is not an object")
    counts = {split: _count(rows.get(split), f"{whose} {split} rows") for split in SPLITS}
    return _Counts(rows={split: n for split, n in counts.items() if n is not None},
                   rows_read=_count(inputs.get("rows_read"), f"{whose} rows_read"),
                   rows_dropped=_count(inputs.get("rows_dropped"), f"{whose} rows_dropped"))


def _count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidSummary(f"{what} must be a count (an integer of at least 0), got {value!r}")
    return value
