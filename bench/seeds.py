"""How much the trainer's eval RMSE moves with its seed alone: the figure the gate's tolerance rests on.

The release gate compares a candidate with its champion; if two trainings of the same data
differ by more than the gate's change tolerance only because their seeds differ, the gate
flaps. The ``train`` benchmark trains on the same preprocess output with seeds 1..N (seed 1
being the trainer's default run) and summarises their eval RMSE here, overall and per gate
slice (the slices of training_report.json, which are comparison.json's), each spread also as a
fraction of the mean RMSE: the unit of the gate's `tolerance` and `slice_tolerance`.
"""
from __future__ import annotations

import statistics
from typing import Mapping, Sequence


def spread(seeds: Sequence[int], rmses: Sequence[float], floor: float | None = None) -> dict:
    """Per-seed eval RMSE, their spread (max - min) and standard deviation, in lb and relative.

    The standard deviation is the sample one (n - 1); with one seed it is None and the spread 0.
    """
    if len(seeds) != len(rmses) or not rmses:
        raise ValueError(f"need one RMSE per seed, got {len(rmses)} for seeds {list(seeds)}")
    mean = statistics.fmean(rmses)
    summary = {
        "seeds": list(seeds),
        "eval_rmse": [round(value, 5) for value in rmses],
        "mean_lb": round(mean, 5),
        "spread_lb": round(max(rmses) - min(rmses), 5),
        "spread_fraction": round((max(rmses) - min(rmses)) / mean, 6) if mean > 0 else None,
        "std_lb": round(statistics.stdev(rmses), 5) if len(rmses) > 1 else None,
    }
    if floor:
        summary["rmse_over_floor"] = [round(value / floor, 4) for value in rmses]
    return summary


def slice_spread(slices_per_seed: Sequence[Mapping[str, Mapping]], min_rows: int) -> dict:
    """Each slice's RMSE across the seeds and its spread as a fraction of its mean.

    ``slices_per_seed`` holds one training report's "slices" per seed ({name: {"rows", "rmse"}}).
    Only slices every seed scored, with at least ``min_rows`` rows (the gate skips smaller ones),
    are summarised; "widest" names the slice whose relative spread is the largest.
    """
    if not slices_per_seed:
        raise ValueError("need the slices of at least one seed")
    names = set.intersection(*(set(slices) for slices in slices_per_seed))
    summary: dict[str, dict] = {}
    for name in sorted(names):
        rmses = [slices[name]["rmse"] for slices in slices_per_seed]
        rows = slices_per_seed[0][name]["rows"]
        if rows < min_rows or any(value is None for value in rmses):
            continue
        mean = statistics.fmean(rmses)
        summary[name] = {"rows": rows, "mean_lb": round(mean, 5), "spread_lb": round(max(rmses) - min(rmses), 5),
                         "spread_fraction": round((max(rmses) - min(rmses)) / mean, 6) if mean > 0 else None}
    judged = [name for name, entry in summary.items() if entry["spread_fraction"] is not None]
    widest = max(judged, key=lambda name: summary[name]["spread_fraction"]) if judged else None
    return {"min_rows": min_rows, "slices": summary, "widest": widest}
