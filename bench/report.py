"""Figures and tables shared by the benchmarks: latency summaries, rates and plain-text tables.

Pure functions, so the numbers a benchmark prints are computed the same way everywhere and
tests can check them without running anything.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np


def latency_summary(values_ms: Iterable[float]) -> dict:
    """p50 / p95 / p99 / max / mean of latencies in milliseconds (None for each when empty).

    Percentiles interpolate linearly between samples (numpy's default), so with 20 samples
    p95 lies between the 19th and the 20th.
    """
    values = np.asarray([v for v in values_ms if v is not None], dtype=float)
    if values.size == 0:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    if not np.isfinite(values).all():
        raise ValueError("latencies must be finite numbers")
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": int(values.size),
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(values.max()), 2),
        "mean_ms": round(float(values.mean()), 2),
    }


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, digits)


def per_second(count: float, seconds: float) -> float | None:
    """A rate, or None when no time was measured."""
    if seconds is None or seconds <= 0:
        return None
    return round(count / seconds, 1)


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(np.median(np.asarray(values, dtype=float)))


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(title: str, headers: Sequence[str], rows: Sequence[Sequence], notes: Sequence[str] = ()) -> str:
    """A plain-text table: a title line, aligned columns (numbers right-aligned), then notes."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row {row} has {len(row)} cells for {len(headers)} columns")
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) and bool(rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [title, line(list(headers)), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    out += [f"  {note}" for note in notes]
    return "\n".join(out)
