"""The figures in metrics.json: RMSEs, the Bayes floor and best possible RMSE of synthetic data, and the atomic write.

Kept free of TensorFlow: these are plain numpy computations that tests call directly.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import numpy as np

from trainer import schema

log = logging.getLogger(__name__)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error of two equally long 1-D arrays."""
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    actual = np.asarray(actual, dtype=np.float64).reshape(-1)
    if predicted.shape != actual.shape or actual.size == 0:
        raise ValueError(f"cannot compare {predicted.shape} predictions with {actual.shape} labels")
    return float(np.sqrt(np.mean(np.square(predicted - actual))))


def baseline_rmse(train_label_mean: float, eval_labels: np.ndarray) -> float:
    """RMSE on eval of always predicting the training mean: what a model must beat."""
    return rmse(np.full(np.shape(eval_labels), train_label_mean), eval_labels)


def _ask_generator(sample: Mapping[str, Any] | None, function: str, figure: str,
                   eval_features: Mapping[str, np.ndarray]):
    """``natality_sample.<function>`` of the eval rows' four features, when the data is its output; else None.

    Only the generator knows its own noise; it is imported here, lazily, so the trainer runs
    where that package is absent. The figure is informative: a failure is logged, never raised,
    so it cannot lose the model.
    """
    if not sample or sample.get("generator") != schema.SAMPLE_GENERATOR_WITH_BAYES_FLOOR:
        return None
    try:
        import natality_sample  # noqa: PLC0415 (optional, imported only for synthetic data)

        answer = getattr(natality_sample, function)
    except (ImportError, AttributeError) as error:
        log.warning("no %s: natality_sample is not available (%s)", figure, error)
        return None
    try:
        return answer(*(eval_features[name] for name in ("is_male", "plurality", "mother_age", "gestation_weeks")))
    except Exception as error:  # the figure is informative; a failure must not lose the model
        log.warning("no %s: natality_sample.%s failed: %s", figure, function, error)
        return None


def bayes_floor(sample: Mapping[str, Any] | None, eval_features: Mapping[str, np.ndarray]) -> float | None:
    """The lowest RMSE any model can expect on the eval rows, when the data is synthetic.

    An expectation over the noise: a given eval split may draw less noise than it expects, and
    a model may then score under it (see best_possible_rmse).
    """
    floor = _ask_generator(sample, "bayes_floor", "Bayes floor", eval_features)
    return None if floor is None else float(floor)


def best_possible_rmse(sample: Mapping[str, Any] | None, eval_features: Mapping[str, np.ndarray],
                       eval_labels: np.ndarray) -> float | None:
    """RMSE on these very eval rows of the generator's own conditional mean, when the data is synthetic.

    No model can expect to beat it on them: it is the floor with this split's own noise in it,
    so a model's ratio to it is its own excess, where its ratio to the floor also holds the
    split's luck.
    """
    best = _ask_generator(sample, "conditional_mean", "best possible RMSE", eval_features)
    if best is None:
        return None
    return rmse(np.asarray(best, dtype=np.float64), np.asarray(eval_labels, dtype=np.float64))


def write_json_atomically(path: str, document: Mapping[str, Any], *, allow_nan: bool = True) -> None:
    """Write ``document`` so that readers see either no file or the whole file.

    With ``allow_nan=False`` a NaN or infinity is a ValueError, raised before anything is written.
    """
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=allow_nan) + "\n"
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
