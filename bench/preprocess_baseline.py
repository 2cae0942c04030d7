"""The preprocessing transform without Beam: one process reading Parquet batches with pyarrow.

The per-record rules (filters, hashmonth split, the two CSV rows and their keys) are the pure
functions of ``beam_pipeline.records``: they are already vectorised Arrow code, and calling
them here makes the benchmark measure what Beam's machinery (bundles, coders, WriteToText's
temporary files, the manifest's side inputs) adds to the same work, not two different row
formatters. Reading, batching, splitting into shards and writing are this module's own.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipeline import records

SHARD_NAME = "{split}.csv-00000-of-00001"


def preprocess(source: str | Path, out_dir: str | Path, batch_rows: int = 50_000) -> dict:
    """Write the train/eval shards of a Parquet natality file to ``out_dir``; return the counts.

    One shard per split, each record's two lines adjacent, lines ending in a newline as
    WriteToText ends them.
    """
    if batch_rows <= 0:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    source = str(source)
    try:
        parquet = pq.ParquetFile(source)
    except (OSError, pa.ArrowInvalid) as error:
        raise records.InputError(f"cannot read {source} as Parquet: {error}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"rows_read": 0, "rows_valid": 0, **{f"{split}_records": 0 for split in records.SPLITS}}
    handles = {split: open(out / SHARD_NAME.format(split=split), "wb") for split in records.SPLITS}
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(records.SOURCE_COLUMNS)):
            table = records.conform(pa.Table.from_batches([batch]), source)
            prepared = records.prepare(table)
            counts["rows_read"] += table.num_rows
            counts["rows_valid"] += prepared.num_rows
            for split, part in records.split_records(prepared).items():
                if part.num_rows:
                    handles[split].write(records.csv_block(part))
                    handles[split].write(b"\n")
                    counts[f"{split}_records"] += part.num_rows
    finally:
        for handle in handles.values():
            handle.close()
    return counts


def output_lines(out_dir: str | Path, split: str) -> list[bytes]:
    """Every line of a split's shards in ``out_dir`` (any shard naming), sorted: a multiset."""
    lines: list[bytes] = []
    for shard in sorted(Path(out_dir).glob(f"{split}.csv-*")):
        lines.extend(line for line in shard.read_bytes().split(b"\n") if line)
    lines.sort()
    return lines


def same_rows(first_dir: str | Path, second_dir: str | Path) -> dict[str, bool]:
    """Per split: do the two output directories hold the same rows, counted with multiplicity?"""
    return {split: output_lines(first_dir, split) == output_lines(second_dir, split) for split in records.SPLITS}
