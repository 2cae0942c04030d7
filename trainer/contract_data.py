"""Small datasets written in the preprocess output contract (CSV shards + ``_MANIFEST.json``).

The trainer's checks (the serving-compatibility script, the tests) use these to exercise the
real trainer without running the Beam pipeline. ``preprocess_rows`` repeats what preprocessing
does to one birth record: the record as it is, plus a copy whose sex is "Unknown" and whose
plurality is "Single(1)" or "Multiple(2+)", as it is when an ultrasound is not available.
"""

from __future__ import annotations

import json
import math
import os
import random
from typing import Iterable, Mapping, Sequence

from trainer import schema

# One preprocessed row: weight_pounds, is_male, mother_age, plurality, gestation_weeks, key.
Row = tuple[float, str, float, str, float, str]


def preprocess_rows(
    weight_pounds: float,
    is_male: bool,
    mother_age: float,
    plurality: str,
    gestation_weeks: float,
    key: str,
) -> list[Row]:
    """The two rows preprocessing writes for one birth record."""
    if plurality not in schema.PLURALITY_VALUES[:-1]:
        raise ValueError(f"unknown plurality {plurality!r}")
    unknown_plurality = "Single(1)" if plurality == "Single(1)" else "Multiple(2+)"
    return [
        (weight_pounds, str(bool(is_male)), mother_age, plurality, gestation_weeks, key),
        (weight_pounds, "Unknown", mother_age, unknown_plurality, gestation_weeks, key),
    ]


def synthetic_records(count: int, seed: int = 0) -> list[tuple[float, bool, float, str, float]]:
    """Plausible birth records (weight rises with gestation; twins are lighter), for smoke runs.

    Not a model of the natality table: only enough signal for a tiny model to learn something.
    """
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        is_male = rng.random() < 0.51
        plurality = "Twins(2)" if rng.random() < 0.03 else "Single(1)"
        gestation = min(45.0, max(22.0, round(rng.gauss(38.6, 2.5))))
        age = float(min(50, max(13, round(rng.gauss(27.4, 6.2)))))
        mean = 7.3 + 0.45 * (gestation - 39.0) + (0.24 if is_male else 0.0)
        mean -= 2.0 if plurality != "Single(1)" else 0.0
        weight = max(1.0, rng.gauss(mean, 1.0))
        records.append((round(weight, 4), is_male, age, plurality, gestation))
    return records


def _format_row(row: Row) -> str:
    weight, is_male, age, plurality, gestation, key = row
    numbers = [weight, age, gestation]
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
        raise ValueError(f"row has a non-finite number: {row!r}")
    return f"{weight!r},{is_male},{age!r},{plurality},{gestation!r},{key}"


def write_dataset(
    out_dir: str,
    rows_by_split: Mapping[str, Sequence[Row]],
    num_shards: int = 2,
    sample: Mapping | None = None,
    run_id: str = "local-check",
) -> str:
    """Write ``train``/``eval`` shards and the manifest (last) into ``out_dir``; return its path.

    Consecutive rows go to the same shard, so a record's two rows stay together as they do
    when preprocessing groups by key.
    """
    os.makedirs(out_dir, exist_ok=True)
    splits: dict[str, dict] = {}
    for split in schema.SPLITS:
        rows = list(rows_by_split.get(split, ()))
        names = [f"{split}.csv-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
        per_shard = math.ceil(len(rows) / num_shards) if rows else 0
        per_shard += per_shard % 2  # keep the two rows of a record in one shard
        for index, name in enumerate(names):
            chunk = rows[index * per_shard:(index + 1) * per_shard]
            with open(os.path.join(out_dir, name), "w", encoding="utf-8") as handle:
                handle.writelines(_format_row(row) + "\n" for row in chunk)
        splits[split] = {"shards": names, "rows": len(rows), "records": len(rows) // 2}
    manifest = {
        "format": schema.MANIFEST_FORMAT,
        "run_id": run_id,
        "source": {"kind": "sample" if sample else "files", "sample": dict(sample) if sample else None},
        "splits": splits,
    }
    path = os.path.join(out_dir, schema.MANIFEST_NAME)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
    os.replace(path + ".tmp", path)
    return path


def split_records(
    records: Iterable[tuple[float, bool, float, str, float]], eval_every: int = 4
) -> dict[str, list[Row]]:
    """Preprocess records into rows, every ``eval_every``-th record to eval, the rest to train."""
    rows: dict[str, list[Row]] = {"train": [], "eval": []}
    for index, (weight, is_male, age, plurality, gestation) in enumerate(records):
        split = "eval" if index % eval_every == eval_every - 1 else "train"
        rows[split].extend(preprocess_rows(weight, is_male, age, plurality, gestation, str(index)))
    return rows
