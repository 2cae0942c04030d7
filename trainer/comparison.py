"""comparison.json: the candidate and the champion scored on the same eval rows, overall and per slice.

The release gate decides whether a candidate replaces the champion. It can only compare like
with like if both models are scored on the very same rows, and only the training run has those
rows at hand, so the trainer writes the figures and the gate reads them. An overall RMSE can
hide a model that got worse where it matters most, so the file also has the RMSE of slices
that are small but heavy in error: each plurality (twins and more are rare and light), preterm
births (``gestation_weeks<37``) and the rows without ultrasound (``is_male=Unknown``). A slice
without rows is left out rather than written with an undefined RMSE.

Plain numpy, no TensorFlow: the figures are checked by hand in tests, and the champion's
predictions come from its serving signature (:mod:`trainer.serving_check`), not from here.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from trainer import evaluation

FORMAT = "mlrelay-model-comparison/1"
PRETERM_WEEKS = 37
# An error goes into one line of JSON; TensorFlow's messages can run to pages.
MAX_ERROR_CHARS = 500


def slice_masks(features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows of each slice, as boolean masks over the eval rows; slices without rows left out.

    ``plurality=<value>`` for every plurality value present (as written in the data, e.g.
    ``plurality=Single(1)``), ``gestation_weeks<37`` and ``is_male=Unknown``.
    """
    plurality = np.asarray(features["plurality"]).astype(str)
    masks = {f"plurality={value}": plurality == value for value in np.unique(plurality)}
    masks[f"gestation_weeks<{PRETERM_WEEKS}"] = np.asarray(features["gestation_weeks"]) < PRETERM_WEEKS
    masks["is_male=Unknown"] = np.asarray(features["is_male"]).astype(str) == "Unknown"
    return {name: mask for name, mask in masks.items() if mask.any()}


def score(predicted: np.ndarray, labels: np.ndarray, masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``{"rmse": overall, "slices": {name: {"rmse": ..., "rows": ...}}}`` of one model's predictions."""
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    overall = evaluation.rmse(predicted, labels)  # also checks that the lengths agree
    slices = {
        name: {"rmse": evaluation.rmse(predicted[mask], labels[mask]), "rows": int(mask.sum())}
        for name, mask in masks.items()
    }
    return {"rmse": overall, "slices": slices}


def champion_score(
    artifact_uri: str, predicted: np.ndarray, labels: np.ndarray, masks: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """The champion's entry; a non-finite prediction is a ValueError (it has no RMSE to gate on)."""
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    bad = int(np.count_nonzero(~np.isfinite(predicted)))
    if bad:
        raise ValueError(f"the champion predicted {bad} non-finite value(s) of {predicted.size}")
    return {"artifact_uri": artifact_uri, **score(predicted, labels, masks)}


def champion_error(artifact_uri: str, error: BaseException | str) -> dict[str, Any]:
    """The champion's entry when it could not be scored: why, on one line."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    line = " ".join(text.split())
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 3] + "..."
    return {"artifact_uri": artifact_uri, "error": line}


def comparison(
    labels: np.ndarray,
    mean_baseline_rmse: float,
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The whole comparison.json document; ``candidate`` from :func:`score`, ``champion`` from
    :func:`champion_score`, :func:`champion_error`, or None when there is no champion."""
    return {
        "format": FORMAT,
        "eval_rows": int(np.size(labels)),
        "mean_baseline_rmse": float(mean_baseline_rmse),
        "candidate": dict(candidate),
        "champion": dict(champion) if champion is not None else None,
    }
