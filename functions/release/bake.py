"""The bake verdict: after its bake window, does the canary take all the traffic or go?

The figures are each deployed model's serving counts over the bake window (Cloud Monitoring in
the cloud, the local endpoint's counters locally):

    {deployed_model_id: {"requests": int, "errors": int, "latency_p99_ms": float | None}}

The canary is promoted when
- it served at least `min_requests` requests; with fewer there is too little traffic to judge,
  and `promote_on_little_traffic` decides (the default promotes: a quiet endpoint is no reason to
  keep an old model, and the gate already judged the candidate on its eval rows);
- its error rate is at most `max_error_rate`, and at most the champion's plus
  `max_error_rate_increase` when the champion served requests in the same window;
- its p99 latency is at most `max_latency_ratio` times the champion's, or `max_latency_p99_ms`
  when there is no champion figure. A canary with no latency figure is judged on errors alone
  (Monitoring has no percentile for a model that served nothing).
A model missing from the figures served nothing in the window. Only the canary's and the
champion's figures are read; the endpoint's other deployed models are not this decision's.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from functions.release.checks import check, failed, is_at_most, number, percent
from functions.release.policy import ReleasePolicy


class InvalidServingFigures(ValueError):
    """Serving figures that are not counts and latencies; str() is one line."""


@dataclass(frozen=True)
class ServingFigures:
    requests: int
    errors: int
    latency_p99_ms: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


NO_TRAFFIC = ServingFigures(0, 0, None)


@dataclass(frozen=True)
class BakeVerdict:
    """Promote the canary (True) or roll it back, why (one line), and every check made
    (JSON-ready records {"name", "value", "bound", "passed"})."""

    promote: bool
    reason: str
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reason": self.reason, "checks": [dict(c) for c in self.checks]}


def bake_ends_at(deployed_at: datetime, policy: ReleasePolicy = ReleasePolicy()) -> datetime:
    """When the bake of a canary deployed at `deployed_at` ends (the scheduled task's time)."""
    if deployed_at.tzinfo is None:
        raise ValueError("deployed_at must be timezone-aware")
    return deployed_at + timedelta(seconds=policy.bake_seconds)


def judge_bake(figures: Mapping[str, Any], candidate_id: str, champion_id: str | None,
               policy: ReleasePolicy = ReleasePolicy()) -> BakeVerdict:
    """The verdict on the canary `candidate_id` against the champion `champion_id` (None: none)."""
    if not isinstance(candidate_id, str) or not candidate_id:
        raise InvalidServingFigures(f"the canary's deployed model id must be a non-empty string, not {candidate_id!r}")
    if champion_id == candidate_id:
        raise InvalidServingFigures(f"the canary and the champion are the same deployed model {candidate_id!r}")
    if not isinstance(figures, Mapping):
        raise InvalidServingFigures(f"serving figures must be an object per deployed model, not "
                                    f"{type(figures).__name__}")
    canary = _figures(figures, candidate_id)
    champion = _figures(figures, champion_id) if champion_id is not None else None
    if champion is not None and not champion.requests:
        champion = None  # a champion that served nothing in the window gives nothing to compare with

    checks = [check("requests", canary.requests, policy.min_requests, canary.requests >= policy.min_requests)]
    if not checks[0]["passed"]:
        little = f"too little traffic to judge ({canary.requests} requests, at least {policy.min_requests} wanted)"
        if policy.promote_on_little_traffic:
            return BakeVerdict(True, f"promote: {little}; the release policy promotes without that evidence", checks)
        return BakeVerdict(False, f"roll back: {little}; the release policy rolls back without that evidence", checks)

    problems: list[str] = []
    rate = canary.error_rate
    checks.append(check("error_rate", rate, policy.max_error_rate,
                        rate is None or is_at_most(rate, policy.max_error_rate)))
    if not checks[-1]["passed"]:
        problems.append(f"the canary failed {canary.errors} of {canary.requests} requests ({percent(rate)}), "
                        f"more than the {percent(policy.max_error_rate)} allowed")
    if champion is not None:
        bound = champion.error_rate + policy.max_error_rate_increase
        checks.append(check("error_rate_vs_champion", rate, bound, rate is None or is_at_most(rate, bound)))
        if not checks[-1]["passed"]:
            problems.append(f"the canary's error rate {percent(rate)} is more than the champion's "
                            f"{percent(champion.error_rate)} plus {percent(policy.max_error_rate_increase)}")

    latency = canary.latency_p99_ms
    latency_text = "no p99 latency figure"
    if latency is not None:
        if champion is not None and champion.latency_p99_ms is not None:
            bound = policy.max_latency_ratio * champion.latency_p99_ms
            name, limit = "latency_p99_vs_champion", (f"{number(policy.max_latency_ratio)} × the champion's "
                                                      f"{number(champion.latency_p99_ms)} ms")
        else:
            bound = policy.max_latency_p99_ms
            name, limit = "latency_p99_ms", "the limit with no champion figure"
        checks.append(check(name, latency, bound, is_at_most(latency, bound)))
        latency_text = f"p99 latency {number(latency)} ms (at most {number(bound)} ms)"
        if not checks[-1]["passed"]:
            problems.append(f"the canary's p99 latency {number(latency)} ms is more than {number(bound)} ms, "
                            f"{limit}")

    if problems:
        more = len(failed(checks)) - 1
        extra = f"; {more} more check{'s' if more != 1 else ''} failed" if more > 0 else ""
        return BakeVerdict(False, f"roll back: {problems[0]}{extra}", checks)
    if rate is None:
        return BakeVerdict(True, "promote: the canary served no requests during its bake, and a quiet endpoint "
                                 "is no reason to hold it back (set min_requests to demand evidence)", checks)
    return BakeVerdict(True, f"promote: the canary served {canary.requests} requests with {percent(rate)} errors "
                             f"(at most {percent(policy.max_error_rate)}) and {latency_text}", checks)


def _figures(figures: Mapping[str, Any], deployed_model_id: str) -> ServingFigures:
    if deployed_model_id not in figures:
        return NO_TRAFFIC
    entry = figures[deployed_model_id]
    where = f"serving figures of {deployed_model_id!r}"
    if not isinstance(entry, Mapping):
        raise InvalidServingFigures(f"{where} must be an object, not {type(entry).__name__}")
    for name in ("requests", "errors"):
        if name not in entry:
            raise InvalidServingFigures(f"{where}: {name} is missing")
    requests, errors = entry["requests"], entry["errors"]
    for name, value in (("requests", requests), ("errors", errors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidServingFigures(f"{where}: {name} must be an integer of at least 0, got {value!r}")
    if errors > requests:
        raise InvalidServingFigures(f"{where}: {errors} errors out of only {requests} requests")
    latency = entry.get("latency_p99_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))
                                or not math.isfinite(latency) or latency < 0):
        raise InvalidServingFigures(f"{where}: latency_p99_ms must be a finite number of at least 0 or "
                                    f"null, got {latency!r}")
    return ServingFigures(requests, errors, None if latency is None else float(latency))
