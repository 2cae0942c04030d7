"""The record each release decision keeps of one check, and the comparisons the checks use.

A check record is a plain dict, {"name", "value", "bound", "passed"}, so that a decision's checks
go into the run ledger as they are (JSON: str, finite numbers or null, a [low, high] pair for a
band, and a boolean). The comparisons treat a value within a relative 1e-9 of its bound as equal
to it: "equal at the bound" then means the same whether the bound was computed as 1.0 * 1.003
or written as 1.003, and no run is decided by the last bit of a float.
"""
from __future__ import annotations

import math
from typing import Any

# Relative closeness under which a value counts as equal to its bound.
_REL_EPSILON = 1e-9
_ABS_EPSILON = 1e-12


def check(name: str, value: float | int | None, bound: Any, passed: bool) -> dict[str, Any]:
    """One check record, with floats rounded to 12 significant digits for a readable ledger."""
    return {"name": name, "value": _tidy(value), "bound": _tidy(bound), "passed": bool(passed)}


def is_equal(value: float, bound: float) -> bool:
    return math.isclose(value, bound, rel_tol=_REL_EPSILON, abs_tol=_ABS_EPSILON)


def is_below(value: float, bound: float) -> bool:
    """value < bound, where a value equal to the bound (within float noise) is not below it."""
    return value < bound and not is_equal(value, bound)


def is_at_most(value: float, bound: float) -> bool:
    """value <= bound, where a value equal to the bound (within float noise) passes."""
    return value <= bound or is_equal(value, bound)


def is_within(value: float, low: float, high: float) -> bool:
    return is_at_most(low, value) and is_at_most(value, high)


def failed(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in checks if not record["passed"]]


def percent(fraction: float) -> str:
    """A fraction as a reason shows it: 0.05 -> '5 %', 0.0312 -> '3.12 %', 0.003 -> '0.3 %'."""
    return f"{fraction * 100:.3g} %"


def number(value: float) -> str:
    """A figure as a reason shows it: four significant digits."""
    return f"{value:.4g}"


def _tidy(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, (list, tuple)):
        return [_tidy(item) for item in value]
    return value
