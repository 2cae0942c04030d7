"""How much the trainer's eval RMSE moves with its seed alone: the figure the gate's tolerance rests on.

The release gate compares a candidate with its champion; if two trainings of the same data
differ by more than the gate's change tolerance only because their seeds differ, the gate
flaps. The ``train`` benchmark trains on the same preprocess output with seeds 1..N (seed 1
being the trainer's default run) and summarises their eval RMSE here.
"""
from __future__ import annotations

import statistics
from typing import Sequence


def spread(seeds: Sequence[int], rmses: Sequence[float], floor: float | None = None) -> dict:
    """Per-seed eval RMSE, their spread (max - min) and standard deviation, in lb.

    The standard deviation is the sample one (n - 1); with one seed it is None and the spread 0.
    """
    if len(seeds) != len(rmses) or not rmses:
        raise ValueError(f"need one RMSE per seed, got {len(rmses)} for seeds {list(seeds)}")
    summary = {
        "seeds": list(seeds),
        "eval_rmse": [round(value, 5) for value in rmses],
        "mean_lb": round(statistics.fmean(rmses), 5),
        "spread_lb": round(max(rmses) - min(rmses), 5),
        "std_lb": round(statistics.stdev(rmses), 5) if len(rmses) > 1 else None,
    }
    if floor:
        summary["rmse_over_floor"] = [round(value / floor, 4) for value in rmses]
    return summary
