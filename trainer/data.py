"""tf.data input from the preprocess CSV shards, and the checks that make bad shards fail clearly.

Training streams shuffled, repeated batches read with ``tf.data.experimental.CsvDataset``.
Before training, one pass over each split (:func:`summarize_split`, :func:`read_split`) parses
every row it will use, so a malformed shard stops the run before anything is trained or
written; :func:`locate_malformed_line` then names the file and line.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from trainer import schema
from trainer.inputs import TrainerInputError

_COLUMN_DTYPES = {
    "weight_pounds": tf.float32,
    "is_male": tf.string,
    "mother_age": tf.float32,
    "plurality": tf.string,
    "gestation_weeks": tf.float32,
    "key": tf.string,
}
_READ_BATCH = 8192


def csv_dataset(
    files: Sequence[str],
    batch_size: int,
    *,
    shuffle: bool,
    repeat: bool,
    seed: int | None = None,
    shuffle_buffer: int = 100_000,
) -> tf.data.Dataset:
    """Batches of ``(features, label)`` from headerless shards in the contract's column order.

    Every column is required (a dtype, not a default), so a short line or a word where a number
    belongs is an error rather than a silent default. Features are 1-D: ``is_male`` and
    ``plurality`` strings, ``mother_age`` and ``gestation_weeks`` float32; the label is float32.
    A training dataset (``shuffle``) keeps the parsed rows in memory after the first pass and
    reshuffles them every pass: ``CsvDataset`` + ``cache`` reads about ten times faster than
    ``make_csv_dataset``, which re-parses every pass (measured: 270k against 25k rows/s).
    """
    dataset = tf.data.experimental.CsvDataset(
        list(files), record_defaults=[_COLUMN_DTYPES[name] for name in schema.CSV_COLUMNS]
    )
    if shuffle:
        dataset = dataset.cache().shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size, drop_remainder=repeat).map(
        _to_features_and_label, num_parallel_calls=tf.data.AUTOTUNE
    )


def _to_features_and_label(*columns: tf.Tensor) -> tuple[dict, tf.Tensor]:
    named = dict(zip(schema.CSV_COLUMNS, columns))
    return {name: named[name] for name in schema.FEATURE_COLUMNS}, named[schema.LABEL_COLUMN]


@dataclass(frozen=True)
class SplitSummary:
    """What the model and the baseline need from the training split, from one streaming pass."""

    rows: int
    label_mean: float
    mother_age_mean: float
    mother_age_variance: float
    gestation_weeks_mean: float
    gestation_weeks_variance: float


def _batches(files: Sequence[str], batch_size: int) -> Iterator[tuple[dict, np.ndarray]]:
    """Yield numpy batches in file order, turning parse errors into TrainerInputError."""
    dataset = csv_dataset(files, batch_size, shuffle=False, repeat=False)
    iterator = iter(dataset)
    while True:
        try:
            features, label = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            raise _malformed_input_error(files, error) from None
        features = {name: value.numpy() for name, value in features.items()}
        label = label.numpy()
        numbers = [label, features["mother_age"], features["gestation_weeks"]]
        if not all(np.isfinite(column).all() for column in numbers):
            raise _malformed_input_error(files, None)
        yield features, label


def _malformed_input_error(files: Sequence[str], error: Exception | None) -> TrainerInputError:
    where = locate_malformed_line(files)
    if where is not None:
        return TrainerInputError(f"malformed input: {where}")
    detail = getattr(error, "message", str(error)) if error is not None else "non-finite number"
    return TrainerInputError(f"cannot read shards {list(files)[:3]}...: {detail}")


def summarize_split(files: Sequence[str]) -> SplitSummary:
    """Count the rows and measure the label mean and the numeric features' mean and variance."""
    count = 0
    sums = {name: [0.0, 0.0] for name in ("label", "mother_age", "gestation_weeks")}
    for features, label in _batches(files, _READ_BATCH):
        count += len(label)
        for name, column in (("label", label), ("mother_age", features["mother_age"]),
                             ("gestation_weeks", features["gestation_weeks"])):
            values = column.astype(np.float64)
            sums[name][0] += float(values.sum())
            sums[name][1] += float(np.square(values).sum())
    if count == 0:
        raise TrainerInputError(f"the training shards hold no rows: {list(files)}")

    def mean_var(name: str) -> tuple[float, float]:
        mean = sums[name][0] / count
        return mean, max(sums[name][1] / count - mean * mean, 0.0)

    age_mean, age_var = mean_var("mother_age")
    gest_mean, gest_var = mean_var("gestation_weeks")
    return SplitSummary(
        rows=count,
        label_mean=mean_var("label")[0],
        mother_age_mean=age_mean,
        mother_age_variance=age_var,
        gestation_weeks_mean=gest_mean,
        gestation_weeks_variance=gest_var,
    )


def read_split(files: Sequence[str], limit: int | None = None) -> tuple[dict, np.ndarray]:
    """The first ``limit`` rows (all when None) as numpy columns, strings decoded to ``str``."""
    parts: list[tuple[dict, np.ndarray]] = []
    taken = 0
    for features, label in _batches(files, _READ_BATCH):
        if limit is not None and taken + len(label) > limit:
            keep = limit - taken
            features = {name: value[:keep] for name, value in features.items()}
            label = label[:keep]
        parts.append((features, label))
        taken += len(label)
        if limit is not None and taken >= limit:
            break
    if taken == 0:
        raise TrainerInputError(f"the shards hold no rows: {list(files)}")
    features = {
        name: np.concatenate([part[0][name] for part in parts]) for name in schema.FEATURE_COLUMNS
    }
    for name in schema.STRING_FEATURES:
        features[name] = features[name].astype(str).astype(object)
    label = np.concatenate([part[1] for part in parts])
    return features, label


def locate_malformed_line(files: Sequence[str]) -> str | None:
    """Find the first row that breaks the contract: ``"<file>:<line>: <what is wrong>"``.

    Only called once reading has failed, so its cost (a Python pass) is paid on errors only.
    """
    numeric = {schema.CSV_COLUMNS.index(name): name for name in schema.NUMERIC_COLUMNS}
    for path in files:
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                for line_number, fields in enumerate(csv.reader(handle), start=1):
                    problem = _row_problem(fields, numeric)
                    if problem:
                        return f"{path}:{line_number}: {problem}"
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            return f"{path}: {error}"
    return None


def _row_problem(fields: list[str], numeric: dict[int, str]) -> str | None:
    if len(fields) != len(schema.CSV_COLUMNS):
        return f"expected {len(schema.CSV_COLUMNS)} fields ({','.join(schema.CSV_COLUMNS)}), got {len(fields)}"
    for index, name in numeric.items():
        try:
            value = float(fields[index])
        except ValueError:
            return f"{name} is not a number: {fields[index]!r}"
        if not math.isfinite(value):
            return f"{name} is not finite: {fields[index]!r}"
    for name in schema.STRING_FEATURES:
        if not fields[schema.CSV_COLUMNS.index(name)]:
            return f"{name} is empty"
    return None
