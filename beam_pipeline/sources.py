"""Where natality rows come from: files (Parquet or CSV, local or gs://) or BigQuery.

Each source becomes a PCollection of Arrow tables in ``records.SOURCE_SCHEMA``; everything
after the read is shared. The checks here run before a pipeline starts, so a wrong path,
format or schema is reported at once instead of failing a job minutes later.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import coders  # noqa: F401  (registers the Arrow table coder)
from beam_pipeline import records

BIGQUERY = "bigquery"
FILE = "file"
PARQUET = "parquet"
CSV = "csv"
FORMAT_BY_EXTENSION = {".parquet": PARQUET, ".pq": PARQUET, ".csv": CSV}
SAMPLE_FILE = "_SAMPLE.json"
NATALITY_TABLE = "bigquery-public-data.samples.natality"
CSV_BLOCK_BYTES = 8 << 20
# Bytes per row of a natality CSV export (7 columns), to estimate rows from file sizes.
CSV_BYTES_PER_ROW = 42
# BigQuery rows are turned into Arrow tables of at most this many rows.
BIGQUERY_BATCH_ROWS = 20_000


def bigquery_query(table: str = NATALITY_TABLE) -> str:
    """The standard-SQL query that reads the natality columns and applies the filters."""
    return (
        f"SELECT {', '.join(records.SOURCE_COLUMNS)}\n"
        f"FROM `{table}`\n"
        f"WHERE {records.VALID_ROW_SQL}"
    )


@dataclass(frozen=True)
class SourceSpec:
    """What the pipeline reads: a file pattern and its format, or a BigQuery query."""

    kind: str
    location: str
    file_format: str | None = None

    def manifest_entry(self, sample: dict | None) -> dict[str, Any]:
        """The manifest's ``source`` object."""
        if self.kind == BIGQUERY:
            return {"kind": BIGQUERY, "query": self.location, "sample": sample}
        return {"kind": FILE, "path": self.location, "format": self.file_format, "sample": sample}


def file_format(pattern: str) -> str:
    """``parquet`` or ``csv``, from the extension of a path or glob."""
    name = FileSystems.split(pattern)[1].lower()
    for extension, found in FORMAT_BY_EXTENSION.items():
        if name.endswith(extension):
            return found
    raise records.InputError(
        f"cannot tell the format of {pattern!r}: the name must end in "
        f"{', '.join(FORMAT_BY_EXTENSION)} (Parquet or CSV)"
    )


def resolve_source(source: str) -> SourceSpec:
    """The source named by ``--source``: ``bigquery`` or a file path/glob."""
    if not source or not source.strip():
        raise records.InputError("--source is empty: give 'bigquery' or a Parquet/CSV path")
    if source == BIGQUERY:
        return SourceSpec(BIGQUERY, bigquery_query())
    return SourceSpec(FILE, source, file_format(source))


def sample_path(pattern: str) -> str | None:
    """Where a ``_SAMPLE.json`` describing the files of ``pattern`` would sit, if anywhere.

    Only the directory of the files is looked at; a pattern with a wildcard in its
    directory part has no single such place.
    """
    directory = FileSystems.split(pattern)[0]
    if not directory or any(char in directory for char in "*?["):
        return None
    return FileSystems.join(directory, SAMPLE_FILE)


def read_sample_metadata(pattern: str) -> dict | None:
    """The JSON object of the ``_SAMPLE.json`` beside the source files, or None."""
    path = sample_path(pattern)
    if path is None or not FileSystems.exists(path):
        return None
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        text = handle.read()
    try:
        sample = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise records.InputError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(sample, dict):
        raise records.InputError(f"{path} must hold a JSON object, not {type(sample).__name__}")
    return sample


def matching_files(pattern: str) -> list[FileMetadata]:
    """The files a source pattern names (path and size), sorted; an error when there are none."""
    try:
        match = FileSystems.match([pattern])[0]
    except Exception as error:  # BeamIOError, permission or network problems
        raise records.InputError(f"cannot list {pattern!r}: {error}") from None
    files = sorted(
        (item for item in match.metadata_list if not item.path.endswith("/")),
        key=lambda item: item.path,
    )
    if not files:
        raise records.InputError(f"no files match {pattern!r}")
    return files


def inspect_file(file: FileMetadata, fmt: str) -> int:
    """Check that one file holds natality rows; return how many rows it holds (about).

    Reads only the Parquet footer (exact row count) or the CSV header line (rows estimated
    from the file size).
    """
    path = file.path
    try:
        if fmt == PARQUET:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                metadata = pq.read_metadata(handle)
            records.conform(metadata.schema.to_arrow_schema().empty_table(), path)
            return metadata.num_rows
        with FileSystems.open(path) as handle:
            header = handle.readline().decode("utf-8-sig")
    except records.InputError:
        raise
    except Exception as error:
        raise records.InputError(f"cannot read {path} as {fmt}: {error}") from None
    if not header.strip():
        raise records.InputError(f"{path} is empty: a CSV source needs a header row")
    names = next(csv.reader(io.StringIO(header)))
    missing = [name for name in records.SOURCE_COLUMNS if name not in names]
    if missing:
        raise records.InputError(
            f"{path}: header lacks column(s) {', '.join(missing)}; "
            f"natality rows need {', '.join(records.SOURCE_COLUMNS)}"
        )
    return file.size_in_bytes // CSV_BYTES_PER_ROW


def inspect_source(pattern: str, fmt: str) -> int:
    """Check every file of a source (see :func:`inspect_file`); return its rows (about)."""
    return sum(inspect_file(file, fmt) for file in matching_files(pattern))


def csv_convert_options() -> pa_csv.ConvertOptions:
    """How BigQuery's CSV export reads: ``true``/``false``, empty field = NULL, typed columns."""
    return pa_csv.ConvertOptions(
        column_types={field.name: field.type for field in records.SOURCE_SCHEMA},
        include_columns=list(records.SOURCE_COLUMNS),
        true_values=["true", "True", "TRUE"],
        false_values=["false", "False", "FALSE"],
        null_values=[""],
        strings_can_be_null=True,
    )


def read_csv_tables(handle, origin: str, block_bytes: int = CSV_BLOCK_BYTES) -> Iterator[pa.Table]:
    """The rows of one CSV file (an open binary file), as conformed tables of one block each."""
    try:
        reader = pa_csv.open_csv(
            handle,
            read_options=pa_csv.ReadOptions(block_size=block_bytes, use_threads=False),
            convert_options=csv_convert_options(),
        )
        for batch in reader:
            yield records.conform(pa.Table.from_batches([batch]), origin)
    except (pa.ArrowInvalid, pa.ArrowKeyError, pa.ArrowTypeError) as error:
        raise records.InputError(f"cannot read {origin} as natality CSV: {error}") from None


def _read_csv_file(readable: fileio.ReadableFile) -> Iterator[pa.Table]:
    with readable.open() as handle:
        yield from read_csv_tables(handle, readable.metadata.path)


def rows_to_table(rows: list[dict]) -> pa.Table:
    """BigQuery result rows (dicts) as one conformed table."""
    try:
        return pa.Table.from_pylist(rows, schema=records.SOURCE_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise records.InputError(f"BigQuery returned rows of an unexpected type: {error}") from None


class ReadNatality(beam.PTransform):
    """Reads a source as Arrow tables of natality rows (``records.SOURCE_SCHEMA``).

    Parquet row groups come from ``ReadFromParquetBatched`` (workers share the row groups);
    CSV files are spread over workers and parsed by pyarrow in blocks; BigQuery rows
    (Storage Read API streams) are grouped with ``BatchElements``.
    """

    def __init__(self, source: SourceSpec):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        source = self._source
        if source.kind == BIGQUERY:
            tables = (
                pbegin
                | "Query" >> beam.io.ReadFromBigQuery(
                    query=source.location,
                    use_standard_sql=True,
                    method=beam.io.ReadFromBigQuery.Method.DIRECT_READ,
                )
                | "Batch" >> beam.BatchElements(
                    min_batch_size=BIGQUERY_BATCH_ROWS // 4, max_batch_size=BIGQUERY_BATCH_ROWS
                )
                | "ToArrow" >> beam.Map(rows_to_table).with_output_types(pa.Table)
            )
        elif source.file_format == PARQUET:
            tables = (
                pbegin
                | "ReadParquet" >> beam.io.ReadFromParquetBatched(
                    source.location, columns=list(records.SOURCE_COLUMNS)
                )
                | "Conform" >> beam.Map(records.conform, source.location).with_output_types(
                    pa.Table
                )
            )
        else:
            tables = (
                pbegin
                | "Match" >> fileio.MatchFiles(source.location)
                | "SpreadFiles" >> beam.Reshuffle()
                | "Open" >> fileio.ReadMatches()
                | "ReadCsv" >> beam.FlatMap(_read_csv_file).with_output_types(pa.Table)
            )
        return tables
