"""A closed-form linear fit on the wide part of the babyweight features: the ``train`` baseline.

The features are the model's one-hot inputs (trainer.schema): is_male, plurality, and the
buckets of mother_age and gestation_weeks at the model's boundaries. Least squares (numpy
lstsq) finds the best linear model on them in one step; the gap between it and the network
is what the network's crosses and hidden layers buy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from trainer import schema


@dataclass(frozen=True)
class Split:
    """One split's columns as numpy arrays (strings as Python str objects)."""

    label: np.ndarray
    is_male: np.ndarray
    plurality: np.ndarray
    mother_age: np.ndarray
    gestation_weeks: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


def read_split(files: Sequence[str]) -> Split:
    """The rows of headerless preprocess shards (the trainer's CSV contract)."""
    if not files:
        raise ValueError("no shards to read")
    types = {name: (pa.string() if name in schema.STRING_FEATURES or name == "key" else pa.float64())
             for name in schema.CSV_COLUMNS}
    tables = [pa_csv.read_csv(path, read_options=pa_csv.ReadOptions(column_names=list(schema.CSV_COLUMNS)),
                              convert_options=pa_csv.ConvertOptions(column_types=types)) for path in files]
    table = pa.concat_tables(tables)
    return Split(
        label=table["weight_pounds"].to_numpy(),
        is_male=np.asarray(table["is_male"].to_pylist(), dtype=object),
        plurality=np.asarray(table["plurality"].to_pylist(), dtype=object),
        mother_age=table["mother_age"].to_numpy(),
        gestation_weeks=table["gestation_weeks"].to_numpy(),
    )


def vocabulary_codes(values: np.ndarray, vocabulary: Sequence[str], name: str) -> np.ndarray:
    """Each value's index in ``vocabulary``; ValueError naming ``name`` for a value outside it."""
    lookup = {value: index for index, value in enumerate(vocabulary)}
    inverse, unique = pd.factorize(values)
    unknown = [value for value in unique if value not in lookup]
    if unknown:
        raise ValueError(f"{name} has values {unknown[:5]} outside the model's vocabulary {list(vocabulary)}")
    return np.array([lookup[value] for value in unique], dtype=np.int64)[inverse]


# The one-hot groups, in the order of the coefficients: sex, plurality, age bucket, gestation bucket.
GROUP_WIDTHS = (len(schema.IS_MALE_VALUES), len(schema.PLURALITY_VALUES),
                len(schema.MOTHER_AGE_BOUNDARIES) + 1, len(schema.GESTATION_WEEKS_BOUNDARIES) + 1)
WIDTH = sum(GROUP_WIDTHS)


def feature_codes(split: Split) -> np.ndarray:
    """Which one-hot column is 1 in each group, per row: an (n, 4) array of column indexes.

    The design matrix has exactly these four ones per row (71 columns in all), so it is never
    built: the normal equations are counted from the indexes directly.
    """
    offsets = np.cumsum((0,) + GROUP_WIDTHS[:-1])
    groups = [
        vocabulary_codes(split.is_male, schema.IS_MALE_VALUES, "is_male"),
        vocabulary_codes(split.plurality, schema.PLURALITY_VALUES, "plurality"),
        np.searchsorted(schema.MOTHER_AGE_BOUNDARIES, split.mother_age, side="right"),
        np.searchsorted(schema.GESTATION_WEEKS_BOUNDARIES, split.gestation_weeks, side="right"),
    ]
    return np.stack([codes + offset for codes, offset in zip(groups, offsets)], axis=1)


@dataclass(frozen=True)
class LinearFit:
    coefficients: np.ndarray
    fit_s: float

    def predict(self, split: Split) -> np.ndarray:
        return self.coefficients[feature_codes(split)].sum(axis=1)


def fit(train: Split) -> LinearFit:
    """Least squares on the training split; ``fit_s`` covers building the features and solving.

    The normal equations (X^T X, 71 x 71, counted from the one-hot indexes) are solved with
    lstsq, which copes with their rank deficiency (each one-hot group sums to one); the fitted
    values are those of lstsq on the design matrix itself.
    """
    if len(train) == 0:
        raise ValueError("cannot fit on an empty split")
    began = time.perf_counter()
    codes = feature_codes(train)
    gram = np.zeros((WIDTH, WIDTH))
    moment = np.zeros(WIDTH)
    for a in range(codes.shape[1]):
        moment += np.bincount(codes[:, a], weights=train.label, minlength=WIDTH)
        for b in range(codes.shape[1]):
            gram += np.bincount(codes[:, a] * WIDTH + codes[:, b], minlength=WIDTH * WIDTH).reshape(WIDTH, WIDTH)
    coefficients, *_ = np.linalg.lstsq(gram, moment, rcond=None)
    return LinearFit(coefficients, time.perf_counter() - began)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(predicted) - np.asarray(actual)))))
