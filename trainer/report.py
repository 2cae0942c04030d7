"""progress.json and training_report.json: what a person watches while a run trains, and plots after it.

progress.json is rewritten after every evaluation (and once when training starts) so that a live
display can show "examples seen of the total, the last eval RMSE" while the job runs, by reading
one small file rather than the job's log or TensorBoard's event files:

    {"format": "mlrelay.training-progress/v1", "examples_seen": int, "examples_total": int,
     "evaluations_done": int, "evaluations_total": int, "last_eval_rmse": float | null,
     "updated": RFC 3339 time}

training_report.json is written once, after training and before metrics.json (which marks the run
complete), with what a person would plot: the learning curves, the error of each slice of births
the release gate looks at, and predictions beside the truth for a residual plot:

    {"format": "mlrelay.training-report/v1",
     "evaluations": [{"examples_seen": int, "train_loss": float, "eval_loss": float,
                      "eval_rmse": float}, ...],                      # one per evaluation
     "slices": {"<slice>": {"rows": int, "rmse": float}, ...},        # as in comparison.json
     "sample": [{"true": float, "predicted": float, "gestation_weeks": float,
                 "plurality": str, "is_male": str, "mother_age": float}, ...]}  # <= 500 eval rows

Both are strict JSON (no NaN or Infinity, which most JSON readers refuse): a figure that is not
finite, as after a diverged run, is written as null. Plain numpy, no TensorFlow, so that tests check
the documents by hand; the Keras callback that writes progress.json is :mod:`trainer.progress`.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

PROGRESS_FORMAT = "mlrelay.training-progress/v1"
REPORT_FORMAT = "mlrelay.training-report/v1"
# Enough points for a residual plot by gestation week and plurality, few enough to keep the file
# small (under 100 kB) and cheap to write through Vertex's Cloud Storage FUSE mount.
MAX_SAMPLE_ROWS = 500
# A fixed seed, not the run's --seed: a candidate and its champion, trained with different seeds on
# the same eval rows, report the same sample rows, so their residual plots can be laid side by side.
SAMPLE_SEED = 0
SAMPLE_FEATURES = ("gestation_weeks", "plurality", "is_male", "mother_age")


def rfc3339(moment: datetime | None = None) -> str:
    """``moment`` (default: now) in UTC as RFC 3339 with milliseconds, e.g. ``2026-12-01T16:40:00.123Z``."""
    moment = (moment or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing or not finite (strict JSON has no NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def progress(
    examples_seen: int,
    examples_total: int,
    evaluations_done: int,
    evaluations_total: int,
    last_eval_rmse: float | None,
    updated: datetime | None = None,
) -> dict[str, Any]:
    """The progress.json document."""
    return {
        "format": PROGRESS_FORMAT,
        "examples_seen": int(examples_seen),
        "examples_total": int(examples_total),
        "evaluations_done": int(evaluations_done),
        "evaluations_total": int(evaluations_total),
        "last_eval_rmse": finite_or_none(last_eval_rmse),
        "updated": rfc3339(updated),
    }


def evaluations(history: Mapping[str, Sequence[float]], examples_per_evaluation: int) -> list[dict[str, Any]]:
    """One entry per evaluation from Keras's ``History.history`` (one value per epoch of ``fit``).

    The trainer runs one Keras epoch per evaluation, so entry ``i`` is the state after
    ``(i + 1) * examples_per_evaluation`` training examples. ``train_loss`` is Keras's ``loss``
    log: the mean of the training batches' MSE over that evaluation's training steps (Keras resets
    the running mean at each epoch), taken while the weights were still changing, and on shuffled
    training batches rather than all rows. ``eval_loss`` (MSE) and ``eval_rmse`` are measured on
    every eval row with the weights as they stand at the evaluation.
    """
    train_loss = history.get("loss", [])
    eval_loss = history.get("val_loss", [])
    eval_rmse = history.get("val_rmse", [])
    if not len(train_loss) == len(eval_loss) == len(eval_rmse):
        raise ValueError(
            f"history lengths differ: loss {len(train_loss)}, val_loss {len(eval_loss)}, "
            f"val_rmse {len(eval_rmse)}"
        )
    return [
        {
            "examples_seen": (index + 1) * int(examples_per_evaluation),
            "train_loss": finite_or_none(train_loss[index]),
            "eval_loss": finite_or_none(eval_loss[index]),
            "eval_rmse": finite_or_none(eval_rmse[index]),
        }
        for index in range(len(train_loss))
    ]


def sample_indices(rows: int, limit: int = MAX_SAMPLE_ROWS) -> np.ndarray:
    """Which of ``rows`` eval rows go into the sample: all when there are at most ``limit``,
    otherwise ``limit`` rows drawn without replacement with :data:`SAMPLE_SEED`, in row order.

    A random draw rather than every n-th row: eval shards may be ordered (by key, by source file),
    and a stride over ordered rows can miss a whole group of births.
    """
    if rows <= limit:
        return np.arange(rows)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(rows, size=limit, replace=False))


def _compact_floats(values: np.ndarray) -> list[float | None]:
    """float32 columns as the shortest decimals that give back the same float32 (``7.3``, not
    ``7.300000190734863``); not-finite values as None."""
    return [finite_or_none(str(value)) for value in np.asarray(values, dtype=np.float32).reshape(-1)]


def sample(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    predicted: np.ndarray,
    limit: int = MAX_SAMPLE_ROWS,
) -> list[dict[str, Any]]:
    """At most ``limit`` eval rows with the prediction beside the truth, and the features a residual
    plot by gestation week and plurality needs."""
    labels = np.asarray(labels).reshape(-1)
    predicted = np.asarray(predicted).reshape(-1)
    if predicted.shape != labels.shape:
        raise ValueError(f"cannot pair {predicted.shape} predictions with {labels.shape} labels")
    chosen = sample_indices(labels.size, limit)
    columns: dict[str, list] = {
        "true": _compact_floats(labels[chosen]),
        "predicted": _compact_floats(predicted[chosen]),
    }
    for name in SAMPLE_FEATURES:
        column = np.asarray(features[name])[chosen]
        is_text = column.dtype.kind in "OUS"
        columns[name] = [str(value) for value in column] if is_text else _compact_floats(column)
    return [{name: values[index] for name, values in columns.items()} for index in range(chosen.size)]


def training_report(
    history: Mapping[str, Sequence[float]],
    examples_per_evaluation: int,
    slices: Mapping[str, Mapping[str, Any]],
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    predicted: np.ndarray,
) -> dict[str, Any]:
    """The training_report.json document; ``slices`` is the candidate's per-slice score of
    :func:`trainer.comparison.score`, so the report and comparison.json show the same figures."""
    return {
        "format": REPORT_FORMAT,
        "evaluations": evaluations(history, examples_per_evaluation),
        "slices": {
            name: {"rows": int(entry["rows"]), "rmse": finite_or_none(entry["rmse"])}
            for name, entry in slices.items()
        },
        "sample": sample(features, labels, predicted),
    }
