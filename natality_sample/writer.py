"""Write a sample to a directory in the forms the preprocessing pipeline reads.

Files (names fixed; the pipeline relies on them):

- natality.parquet: one file, one row group per ROW_GROUP_ROWS rows, BigQuery's
  column types, real Arrow nulls;
- natality.csv (optional): the form of a BigQuery CSV export (unquoted header,
  true/false, empty field for NULL, integers without ".0");
- _SAMPLE.json: what was generated and how. It is removed before and written
  after the data files, so when it exists every file it lists is complete and
  belongs to it. Each file is written under a temporary name and renamed, so a
  half-written file is never visible under its final name.
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from natality_sample.generate import BIGQUERY_COLUMNS, ROW_GROUP_ROWS, SCHEMA, check_count, iter_blocks

GENERATOR = "natality_sample"
VERSION = 1  # raise whenever the model or its calibration changes the data for a seed
PARQUET_FILE = "natality.parquet"
CSV_FILE = "natality.csv"
SIDECAR_FILE = "_SAMPLE.json"


def describes_this_generator(info: Mapping) -> bool:
    """Did this generator version produce the sample ``info`` describes (a _SAMPLE.json dict)?

    Only then is its model's Bayes floor the exact floor for that data.
    """
    return info.get("generator") == GENERATOR and info.get("version") == VERSION


def sample_info(rows: int, seed: int, files: list[str]) -> dict:
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "rows": rows,
        "files": files,
        "columns": [{"name": name, "type": kind} for name, kind in BIGQUERY_COLUMNS],
    }


@contextmanager
def _atomic_path(final: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``final``, renamed onto it only if the block succeeds.

    The file itself is created by whoever writes it, so it gets the usual permissions.
    """
    temp_path = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    try:
        yield temp_path
        os.replace(temp_path, final)
    finally:
        temp_path.unlink(missing_ok=True)


def _output_dir(out_dir) -> Path:
    if not isinstance(out_dir, (str, os.PathLike)) or str(out_dir) == "":
        raise ValueError(f"out_dir must be a directory path, got {out_dir!r}")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out_dir {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise ValueError(f"cannot create out_dir {str(path)!r}: a parent is not a directory") from error
    return path


def write_sample(out_dir, rows: int, seed: int = 0, csv: bool = False) -> dict:
    """Write ``rows`` generated natality records for ``seed`` into ``out_dir``; return _SAMPLE.json's content."""
    rows = check_count(rows, "rows", 1)
    seed = check_count(seed, "seed", 0)
    if not isinstance(csv, bool):
        raise ValueError(f"csv must be True or False, got {csv!r}")
    out = _output_dir(out_dir)
    (out / SIDECAR_FILE).unlink(missing_ok=True)

    files = [PARQUET_FILE] + ([CSV_FILE] if csv else [])
    with _atomic_path(out / PARQUET_FILE) as parquet_temp, _csv_target(out, csv) as csv_temp:
        with pq.ParquetWriter(parquet_temp, SCHEMA) as parquet:
            csv_handle = open(csv_temp, "wb") if csv_temp else None
            try:
                if csv_handle:
                    csv_handle.write((",".join(SCHEMA.names) + "\n").encode())
                for block in iter_blocks(rows, seed):
                    parquet.write_table(block, row_group_size=ROW_GROUP_ROWS)
                    if csv_handle:
                        pacsv.write_csv(block, csv_handle, pacsv.WriteOptions(include_header=False))
            finally:
                if csv_handle:
                    csv_handle.close()

    info = sample_info(rows, seed, files)
    with _atomic_path(out / SIDECAR_FILE) as sidecar_temp:
        sidecar_temp.write_text(json.dumps(info, indent=2) + "\n")
    return info


@contextmanager
def _csv_target(out: Path, wanted: bool):
    if not wanted:
        yield None
        return
    with _atomic_path(out / CSV_FILE) as temp:
        yield temp
