"""The composite transforms shared by every source: batch, prepare, limit, split, write.

Elements are Arrow tables of many records; each transform hands a whole batch to a pure
function of ``records``. Counts for the manifest travel as ``(name, number)`` pairs summed
by a combine (Beam metrics are not reliable on every runner for control flow).
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
import pyarrow as pa

from beam_pipeline import coders, manifest, records
from beam_pipeline.manifest import ROWS_READ, ROWS_VALID, records_count_name
from beam_pipeline.options import DEFAULT_BATCH_ROWS as BATCH_ROWS


class Rebatch(beam.PTransform):
    """Cuts tables into slices of at most ``max_rows`` rows, where they are (no shuffle).

    Parallelism comes from the read: Parquet splits by row group, BigQuery by read stream,
    CSV by file. Reshuffling the slices as well cost about 1 s of CPU per million rows
    (measured; the whole run takes about 2.5 s) for no gain when the source already splits.
    """

    def __init__(self, max_rows: int = BATCH_ROWS):
        super().__init__()
        self._max_rows = max_rows

    def expand(self, tables):
        return tables | "Slice" >> beam.FlatMap(
            records.table_slices, self._max_rows
        ).with_output_types(pa.Table)


def _count(table: pa.Table, name: str) -> tuple[str, int]:
    return name, table.num_rows


class PrepareRecords(beam.PTransform):
    """Valid records with hashmonth and key; also counts the rows read and kept.

    Returns a dict: ``records`` (Arrow tables) and ``counts`` ((name, n) pairs).
    """

    def expand(self, tables):
        prepared = tables | "Prepare" >> beam.Map(records.prepare).with_output_types(pa.Table)
        counts = (
            tables | "CountRead" >> beam.Map(_count, ROWS_READ),
            prepared | "CountValid" >> beam.Map(_count, ROWS_VALID),
        ) | "Counts" >> beam.Flatten()
        return {"records": prepared, "counts": counts}


class SmallestRecordsFn(beam.CombineFn):
    """Keeps the ``count`` records first in ``records.LIMIT_ORDER``, seen in any order.

    The accumulator is a list of tables, reduced to ``count`` rows whenever it holds more
    than twice that, so memory stays bounded by about ``2 * count`` records per worker.
    """

    def __init__(self, count: int):
        super().__init__()
        self._count = count

    def create_accumulator(self) -> list[pa.Table]:
        return []

    def _bounded(self, tables: list[pa.Table]) -> list[pa.Table]:
        if sum(table.num_rows for table in tables) <= 2 * self._count:
            return tables
        return [records.smallest(pa.concat_tables(tables), self._count)]

    def add_input(self, accumulator: list[pa.Table], table: pa.Table) -> list[pa.Table]:
        accumulator.append(records.smallest(table, self._count))
        return self._bounded(accumulator)

    def merge_accumulators(self, accumulators: Iterable[list[pa.Table]]) -> list[pa.Table]:
        return self._bounded([table for accumulator in accumulators for table in accumulator])

    def extract_output(self, accumulator: list[pa.Table]) -> pa.Table | None:
        tables = [table for table in accumulator if table.num_rows]
        if not tables:
            return None
        return records.smallest(pa.concat_tables(tables), self._count)

    def get_accumulator_coder(self):
        return beam.coders.ListCoder(coders.ArrowTableCoder())


def _slices_of_result(table: pa.Table | None, max_rows: int) -> list[pa.Table]:
    return [] if table is None else records.table_slices(table, max_rows)


class KeepSmallest(beam.PTransform):
    """``--limit``: keeps the ``count`` records first in ``records.LIMIT_ORDER``.

    That order (the key of the record's first row, then year and month) depends only on
    the records, so every run keeps the same records whatever the batching, read order or
    parallelism; and as the key is a hash, the kept records are a pseudo-random sample.
    Applied before the split, as the original LIMIT was.
    """

    def __init__(self, count: int, max_rows: int = BATCH_ROWS):
        super().__init__()
        self._count = count
        self._max_rows = max_rows

    def expand(self, prepared):
        kept = prepared | "Smallest" >> beam.CombineGlobally(SmallestRecordsFn(self._count))
        return (
            kept
            | "Slice" >> beam.FlatMap(_slices_of_result, self._max_rows).with_output_types(
                pa.Table
            )
            | "Spread" >> beam.Reshuffle()
        )


class _FormatSplitsFn(beam.DoFn):
    def process(self, table: pa.Table):
        for split, part in records.split_records(table).items():
            if part.num_rows:
                yield beam.pvalue.TaggedOutput(split, (records.csv_block(part), part.num_rows))


def _text(element: tuple[bytes, int]) -> bytes:
    return element[0]


def _records_count(element: tuple[bytes, int], name: str) -> tuple[str, int]:
    return name, element[1]


class WriteSplits(beam.PTransform):
    """Splits prepared records into train/eval, writes their CSV shards, counts the records.

    Each element written is the text of one batch of a split (many lines). Returns a dict:
    one PCollection of finalized shard paths per split, and ``counts``.
    """

    def __init__(self, out_dir: str, num_shards: int = 0):
        super().__init__()
        self._out_dir = out_dir
        self._num_shards = num_shards

    def expand(self, prepared):
        formatted = prepared | "Format" >> beam.ParDo(_FormatSplitsFn()).with_outputs(
            *records.SPLITS
        )
        outputs = {}
        counts = []
        for split in records.SPLITS:
            lines = formatted[split]
            outputs[split] = (
                lines
                | f"{split}Text" >> beam.Map(_text).with_output_types(bytes)
                | f"Write{split}" >> beam.io.WriteToText(
                    beam.io.filesystems.FileSystems.join(self._out_dir, f"{split}.csv"),
                    shard_name_template="-SSSSS-of-NNNNN",
                    num_shards=self._num_shards,
                )
            )
            counts.append(
                lines | f"Count{split}" >> beam.Map(_records_count, records_count_name(split))
            )
        outputs["counts"] = tuple(counts) | "Counts" >> beam.Flatten()
        return outputs


class WriteManifestFn(beam.DoFn):
    """Writes ``_MANIFEST.json`` once, from the finalized shard names and the counts."""

    def __init__(self, out_dir: str, manifest_fields: dict):
        super().__init__()
        self._out_dir = out_dir
        self._fields = manifest_fields

    def process(self, unused_element, train_files, eval_files, counts):
        document = manifest.build_manifest(
            out_dir=self._out_dir,
            shard_paths={records.TRAIN: list(train_files), records.EVAL: list(eval_files)},
            counts=dict(counts),
            created=manifest.utc_now(),
            **self._fields,
        )
        yield manifest.write_manifest(self._out_dir, document)


class WriteManifest(beam.PTransform):
    """Writes the manifest after every shard is final (its inputs are the written files).

    Input: a dict with the shard-path PCollections of each split and ``counts`` pairs from
    every stage. ``manifest_fields`` are the fields known before the run (run id, source,
    limit, options). Returns the manifest's path.
    """

    def __init__(self, out_dir: str, manifest_fields: dict):
        super().__init__()
        self._out_dir = out_dir
        self._fields = manifest_fields

    def expand(self, inputs):
        totals = inputs["counts"] | "Sum" >> beam.CombinePerKey(sum)
        return (
            inputs[records.TRAIN].pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.ParDo(
                WriteManifestFn(self._out_dir, self._fields),
                beam.pvalue.AsList(inputs[records.TRAIN]),
                beam.pvalue.AsList(inputs[records.EVAL]),
                beam.pvalue.AsDict(totals),
            )
        )
