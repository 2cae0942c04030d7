"""Draw natality records from the calibrated model, in BigQuery's column types.

Rows are produced in fixed blocks of ROW_GROUP_ROWS, each from its own random
stream seeded by (seed, block number). The data is therefore the same for a seed
whatever the caller does with it (first N rows of a longer sample included), and
a writer can stream one block at a time into one Parquet row group.
"""

from __future__ import annotations

import numbers
from typing import Iterator

import numpy as np
import pyarrow as pa

from natality_sample import calibration as cal
from natality_sample.model import AGES, WEEKS, GenerativeModel, default_model

ROW_GROUP_ROWS = 65_536  # Beam's Parquet source splits work by row group

# The natality table's columns the babyweight pipeline reads, in BigQuery's types.
BIGQUERY_COLUMNS = (
    ("year", "INTEGER"),
    ("month", "INTEGER"),
    ("weight_pounds", "FLOAT"),
    ("is_male", "BOOLEAN"),
    ("mother_age", "INTEGER"),
    ("plurality", "INTEGER"),
    ("gestation_weeks", "INTEGER"),
)
_ARROW_TYPES = {"INTEGER": pa.int64(), "FLOAT": pa.float64(), "BOOLEAN": pa.bool_()}
SCHEMA = pa.schema([pa.field(name, _ARROW_TYPES[kind], nullable=True) for name, kind in BIGQUERY_COLUMNS])


def check_count(value, name: str, minimum: int) -> int:
    """A whole number >= minimum, or a ValueError saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _draw_categorical(rng_uniform: np.ndarray, pmf: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(pmf)
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng_uniform, side="right"), len(pmf) - 1)


def _draw_by_plurality(uniform: np.ndarray, plurality: np.ndarray, pmf_rows: np.ndarray, support: np.ndarray):
    out = np.empty(len(uniform), dtype=np.int64)
    for p in np.unique(plurality):
        rows = plurality == p
        out[rows] = support[_draw_categorical(uniform[rows], pmf_rows[p - 1])]
    return out


def _block(n: int, rng: np.random.Generator, model: GenerativeModel) -> pa.Table:
    """n records; every random draw has a fixed size so the stream never depends on the data."""
    u = rng.random((8, n))
    plurality = _draw_categorical(u[0], model.plurality_pmf) + 1
    is_male = u[1] < model.p_male
    age = _draw_by_plurality(u[2], plurality, model.age_pmf, AGES)
    week = _draw_by_plurality(u[3], plurality, model.week_pmf, WEEKS)
    parts = model.components(is_male, plurality, age, week)
    misdated = u[4] < parts.misdated_share
    mean = np.where(misdated, parts.misdated_mean, parts.dated_mean)
    log_sd = np.where(misdated, parts.misdated_log_sd, parts.dated_log_sd)
    weight = mean * np.exp(log_sd * rng.standard_normal(n) - log_sd**2 / 2)  # log-normal with this mean
    year = cal.FIRST_YEAR + _draw_categorical(u[5], np.asarray(cal.YEAR_COUNTS, dtype=float))
    month = 1 + _draw_categorical(u[6], np.asarray(cal.MONTH_COUNTS, dtype=float))
    early_year = rng.integers(cal.EARLIEST_YEAR, cal.FIRST_YEAR, size=n)

    columns = {"year": year, "month": month, "weight_pounds": weight, "is_male": is_male,
               "mother_age": age, "plurality": plurality, "gestation_weeks": week}
    nulls = {name: np.zeros(n, dtype=bool) for name in columns}
    kinds = list(cal.INVALID_ROW_SHARES)
    shares = np.array([cal.INVALID_ROW_SHARES[k] for k in kinds] + [1.0 - sum(cal.INVALID_ROW_SHARES.values())])
    defect = _draw_categorical(u[7], shares)
    for index, (column, kind) in enumerate(kinds):
        rows = defect == index
        if kind == "null":
            nulls[column] |= rows
        elif kind == "zero":
            columns[column] = np.where(rows, 0, columns[column]).astype(columns[column].dtype)
        elif kind == "before_2001":
            columns[column] = np.where(rows, early_year, columns[column])
        else:  # pragma: no cover - guards edits to calibration.INVALID_ROW_SHARES
            raise ValueError(f"unknown invalid-row kind {kind!r} for column {column!r}")
    arrays = [pa.array(columns[f.name], type=f.type, mask=nulls[f.name]) for f in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def iter_blocks(rows: int, seed: int = 0) -> Iterator[pa.Table]:
    """The sample as consecutive tables of ROW_GROUP_ROWS rows (the last one shorter)."""
    rows = check_count(rows, "rows", 1)
    seed = check_count(seed, "seed", 0)
    model = default_model()
    for number, start in enumerate(range(0, rows, ROW_GROUP_ROWS)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, number]))
        block = _block(ROW_GROUP_ROWS, rng, model)  # always a full block: a shorter sample is a prefix
        yield block if rows - start >= ROW_GROUP_ROWS else block.slice(0, rows - start)


def sample(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` natality records (valid and invalid, as in the real table) for ``seed``."""
    return pa.concat_tables(list(iter_blocks(rows, seed)))
