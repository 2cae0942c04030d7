"""Gradient-boosted trees (LightGBM) on the babyweight features: the ``train`` benchmark's second peer.

The trees see the model's four inputs as they come: is_male and plurality as categorical codes
(their vocabularies in trainer.schema), mother_age and gestation_weeks as raw numbers, so the
trees find their own split points and interactions where the wide & deep model is given buckets
and a hashed cross. Settings are ordinary ones for a small tabular regression, not tuned on the
eval rows: squared loss, learning rate 0.05, 31 leaves a tree, at least 50 rows a leaf, up to
500 trees, stopped early once 30 trees in a row have not lowered the RMSE of a held-out tenth of
the *training* split (the eval split is never seen before scoring); the model keeps its best
iteration. It uses every core (``os.cpu_count()`` threads), as the trainer does.

LightGBM is a dependency of the benchmark only (requirements.txt says so): nothing in the
functions or the trainer imports it, and this module imports it only when it fits.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from bench.linear_baseline import Split, vocabulary_codes
from trainer import schema

LEARNING_RATE = 0.05
MAX_TREES = 500
NUM_LEAVES = 31
MIN_ROWS_PER_LEAF = 50
EARLY_STOPPING_TREES = 30
HOLDOUT_FRACTION = 0.1
SEED = 7
PARAMS = {
    "objective": "regression",
    "metric": "rmse",
    "learning_rate": LEARNING_RATE,
    "num_leaves": NUM_LEAVES,
    "min_data_in_leaf": MIN_ROWS_PER_LEAF,
    "seed": SEED,
    "deterministic": True,
    "verbosity": -1,
}


FEATURE_NAMES = ["is_male", "plurality", "mother_age", "gestation_weeks"]
CATEGORICAL = ["is_male", "plurality"]


def feature_matrix(split: Split) -> np.ndarray:
    """(n, 4) float array: is_male code, plurality code, mother_age, gestation_weeks."""
    return np.column_stack([
        vocabulary_codes(split.is_male, schema.IS_MALE_VALUES, "is_male"),
        vocabulary_codes(split.plurality, schema.PLURALITY_VALUES, "plurality"),
        split.mother_age,
        split.gestation_weeks,
    ]).astype(np.float64)


@dataclass(frozen=True)
class BoostedFit:
    booster: object = field(repr=False)
    trees: int
    fit_s: float
    settings: dict

    def predict(self, split: Split) -> np.ndarray:
        return self.booster.predict(feature_matrix(split), num_iteration=self.trees)


def library() -> str:
    """The library and its version, as the benchmark reports them."""
    import lightgbm

    return f"lightgbm {lightgbm.__version__}"


def settings() -> dict:
    """The settings, as the benchmark reports them."""
    return {"learning_rate": LEARNING_RATE, "max_trees": MAX_TREES, "num_leaves": NUM_LEAVES,
            "min_rows_per_leaf": MIN_ROWS_PER_LEAF, "early_stopping_trees": EARLY_STOPPING_TREES,
            "early_stopping_on": f"{HOLDOUT_FRACTION:.0%} of the training split held out"}


def fit(train: Split) -> BoostedFit:
    """Boosted trees on ``train``; ``fit_s`` covers building the features, the holdout and boosting."""
    import lightgbm

    if len(train) < 2:
        raise ValueError("cannot fit boosted trees on fewer than two rows")
    began = time.perf_counter()
    features = feature_matrix(train)
    order = np.random.default_rng(SEED).permutation(len(train))
    held = max(1, int(len(train) * HOLDOUT_FRACTION))
    holdout, rest = order[:held], order[held:]
    params = {**PARAMS, "num_threads": os.cpu_count() or 1}
    fit_set = lightgbm.Dataset(features[rest], train.label[rest], feature_name=FEATURE_NAMES,
                               categorical_feature=CATEGORICAL, free_raw_data=False)
    stop_set = lightgbm.Dataset(features[holdout], train.label[holdout], reference=fit_set)
    booster = lightgbm.train(params, fit_set, num_boost_round=MAX_TREES, valid_sets=[stop_set],
                             callbacks=[lightgbm.early_stopping(EARLY_STOPPING_TREES, verbose=False)])
    trees = booster.best_iteration or booster.current_iteration()
    return BoostedFit(booster, trees, time.perf_counter() - began, settings())
