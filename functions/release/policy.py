"""The release policy: every threshold the gate, the data check and the bake verdict apply.

One frozen object, built from the configuration (with these defaults where it sets nothing) and
narrowed or widened for one run by the run request's "release" object (`with_overrides`). A
decision is only as good as its thresholds, so a policy checks its own values when it is made:
a negative tolerance or a canary of 0 % is refused here, not discovered at the bake's end.

Defaults, and why:
- min_improvement_over_mean 0.05: a model must beat predicting the training mean by 5 % of that
  baseline's RMSE, or it has learnt nothing worth serving.
- tolerance 0.002, slice_tolerance 0.01, min_slice_rows 1000: how much worse than the champion a
  candidate may score (as a fraction of the champion's RMSE) overall and on each slice, so that
  retraining is not blocked by the seed alone. Set from the spread of eval RMSE over five seeds
  on the same data (`mlrelay bench train`, scripts/evaluate_on_real_rows.py; the figures are in
  the README): overall the widest spread measured is 0.08 %, on the 31,508 real records, so
  0.2 % leaves 2.5 times that. Slices of 1,000 rows or more moved by at most 0.27 %, so 1 %
  leaves more than 3.5 times that; slices of a few hundred rows or fewer moved by 1 to 4 % with
  the seed alone (twins on the real rows, triplets on generated ones), so a smaller slice is too
  noisy to judge and is skipped.
- rows_read_tolerance 0.5, dropped_share_tolerance 0.05, split_share_tolerance 0.05: the data
  check catches a source that halved or doubled, a filter dropping a new share of rows, or a
  broken split, not ordinary growth of the table.
- max_error_rate 0.01 and max_error_rate_increase 0.005: a canary may fail at most 1 % of its
  requests, and at most half a point more than the champion over the same window.
- max_latency_ratio 2.0, max_latency_p99_ms 200: its p99 latency may be at most twice the
  champion's, or 200 ms when there is no champion figure to compare with.
- min_requests 0 and promote_on_little_traffic True: with no traffic requirement a quiet endpoint
  still promotes; set min_requests to demand evidence, and the flag to False to roll back
  instead when the evidence is missing.
- canary_percent 10, bake_seconds 900: a tenth of the traffic for fifteen minutes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from events.run_request import ReleaseOverrides


class InvalidReleasePolicy(ValueError):
    """A threshold outside its range; str() names it and the range."""


# field -> (low, high) allowed, inclusive; None: unbounded on that side.
_FLOAT_RANGES: dict[str, tuple[float, float | None]] = {
    "min_improvement_over_mean": (0.0, 1.0),  # below 1 (_BELOW_HIGH): a bound of 0 RMSE is no bound
    "tolerance": (0.0, 1.0),
    "slice_tolerance": (0.0, 1.0),
    "rows_read_tolerance": (0.0, None),
    "dropped_share_tolerance": (0.0, 1.0),
    "split_share_tolerance": (0.0, 1.0),
    "max_error_rate": (0.0, 1.0),
    "max_error_rate_increase": (0.0, 1.0),
    "max_latency_ratio": (1e-9, None),
    "max_latency_p99_ms": (1e-9, None),
}
_BELOW_HIGH = frozenset({"min_improvement_over_mean"})
_INT_RANGES: dict[str, tuple[int, int | None]] = {
    "min_slice_rows": (1, None),
    "min_requests": (0, None),
    # A canary shares the endpoint with the champion: 100 % would be a replacement, not a canary.
    "canary_percent": (1, 99),
    "bake_seconds": (1, 86_400),
}


@dataclass(frozen=True)
class ReleasePolicy:
    """The thresholds of one run's release (see the module's docstring for each default)."""

    # the gate
    min_improvement_over_mean: float = 0.05
    tolerance: float = 0.002
    slice_tolerance: float = 0.01
    min_slice_rows: int = 1000
    # the data check
    rows_read_tolerance: float = 0.5
    dropped_share_tolerance: float = 0.05
    split_share_tolerance: float = 0.05
    # the bake
    max_error_rate: float = 0.01
    max_error_rate_increase: float = 0.005
    max_latency_ratio: float = 2.0
    max_latency_p99_ms: float = 200.0
    min_requests: int = 0
    promote_on_little_traffic: bool = True
    # the canary
    canary_percent: int = 10
    bake_seconds: int = 900

    def __post_init__(self) -> None:
        for name, (low, high) in _FLOAT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidReleasePolicy(f"release policy: {name} must be a finite number, not {value!r}")
            below = name in _BELOW_HIGH
            if value < low or (high is not None and (value >= high if below else value > high)):
                raise InvalidReleasePolicy(f"release policy: {name} must be {_range(low, high, below)}, "
                                           f"not {value!r}")
            object.__setattr__(self, name, float(value))
        for name, (low, high) in _INT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidReleasePolicy(f"release policy: {name} must be an integer, not {value!r}")
            if value < low or (high is not None and value > high):
                raise InvalidReleasePolicy(f"release policy: {name} must be {_range(low, high)}, not {value!r}")
        if not isinstance(self.promote_on_little_traffic, bool):
            raise InvalidReleasePolicy("release policy: promote_on_little_traffic must be true or false, "
                                       f"not {self.promote_on_little_traffic!r}")

    def with_overrides(self, overrides: ReleaseOverrides | None) -> "ReleasePolicy":
        """This policy with what one run request sets (`RunRequest.release`); None changes nothing.

        The request schema bounds every override inside this policy's ranges, so a validated
        request always yields a valid policy.
        """
        if overrides is None:
            return self
        return replace(self, **overrides.given())

    def to_dict(self) -> dict[str, Any]:
        """The thresholds as JSON-ready values, for the run ledger to say what a decision applied."""
        return asdict(self)


def _range(low: float, high: float | None, below: bool = False) -> str:
    if high is None:
        return f"at least {low:g}"
    return f"at least {low:g} and below {high:g}" if below else f"between {low:g} and {high:g}"
