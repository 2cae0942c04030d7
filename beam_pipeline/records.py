"""What preprocessing does to birth records, as pure functions over Arrow tables.

Every rule of the babyweight preprocessing lives here once: which rows are valid, the
``hashmonth`` that decides the train/eval split (bit-exact with BigQuery's FARM_FINGERPRINT),
the two CSV rows written per record and their keys, and the deterministic ``--limit`` order.
The Beam transforms only move batches between these functions, so a plain pyarrow/pandas
run (a benchmark baseline, a test) gets exactly the same output from the same input.

The work is vectorised per batch: Arrow kernels for filtering and joining, and each value
is formatted once per distinct value (a batch holds few distinct weights, ages, weeks and
year-months). Only the per-row key needs one farmhash call per row.
"""

from __future__ import annotations

import functools
from typing import Callable

import farmhash
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# The columns read from the natality table, with BigQuery's types (all nullable).
SOURCE_SCHEMA = pa.schema(
    [
        ("year", pa.int64()),
        ("month", pa.int64()),
        ("weight_pounds", pa.float64()),
        ("is_male", pa.bool_()),
        ("mother_age", pa.int64()),
        ("plurality", pa.int64()),
        ("gestation_weeks", pa.int64()),
    ]
)
SOURCE_COLUMNS = tuple(SOURCE_SCHEMA.names)

# The columns of every output CSV row (no header), with the type a reader should parse.
OUTPUT_COLUMNS = (
    ("weight_pounds", "float"),
    ("is_male", "string"),
    ("mother_age", "float"),
    ("plurality", "string"),
    ("gestation_weeks", "float"),
    ("key", "string"),
)

# Columns that :func:`prepare` adds to the valid records.
HASHMONTH = "hashmonth"
KEY = "key"

# The same labels as natality_sample.labels and trainer.schema: each deployable part (Dataflow
# workers, the Vertex trainer) carries its own copy of the data contract rather than the others'.
PLURALITY_LABELS = {
    1: "Single(1)",
    2: "Twins(2)",
    3: "Triplets(3)",
    4: "Quadruplets(4)",
    5: "Quintuplets(5)",
}
MULTIPLE_LABEL = "Multiple(2+)"
UNKNOWN_SEX = "Unknown"

TRAIN = "train"
EVAL = "eval"
SPLITS = (TRAIN, EVAL)
# A record is in eval when abs(hashmonth) % HASH_BUCKETS == EVAL_BUCKET (one month in four).
HASH_BUCKETS = 4
EVAL_BUCKET = 3

# The order that --limit keeps the smallest of: the record's key, then year and month. Two
# records equal on all three write identical rows to the same split, so ties never change
# the output.
LIMIT_ORDER = ((KEY, "ascending"), ("year", "ascending"), ("month", "ascending"))

# The SQL form of the filters, for sources that can apply them before reading.
VALID_ROW_SQL = (
    "year > 2000 AND weight_pounds > 0 AND mother_age > 0 AND plurality > 0 "
    "AND gestation_weeks > 0 AND month > 0"
)


class InputError(ValueError):
    """Source data that cannot be read as natality rows; the message says what is wrong."""


def conform(table: pa.Table, origin: str) -> pa.Table:
    """Select the natality columns of ``table`` with their BigQuery types, dropping the rest.

    Sources differ in integer widths or may hold numbers as text; every value that converts
    without loss is accepted. ``origin`` names the file or query in error messages.
    """
    missing = [name for name in SOURCE_COLUMNS if name not in table.column_names]
    if missing:
        raise InputError(
            f"{origin}: missing column(s) {', '.join(missing)}; "
            f"natality rows need {', '.join(SOURCE_COLUMNS)}"
        )
    columns = []
    for field in SOURCE_SCHEMA:
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise InputError(
                    f"{origin}: column {field.name} holds {column.type} values that cannot "
                    f"be read as {field.type}: {error}"
                ) from None
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=SOURCE_SCHEMA)


def valid_mask(table: pa.Table) -> np.ndarray:
    """Which rows pass the babyweight filters (a NULL fails every comparison, as in SQL).

    The filters are those of the original pipeline's query, ``VALID_ROW_SQL``. A row whose
    ``is_male`` is NULL is dropped too: it cannot yield the row that states the sex.
    """
    conditions = [
        pc.greater(table["year"], 2000),
        pc.greater(table["weight_pounds"], 0),
        pc.greater(table["mother_age"], 0),
        pc.greater(table["plurality"], 0),
        pc.greater(table["gestation_weeks"], 0),
        pc.greater(table["month"], 0),
        pc.is_valid(table["is_male"]),
    ]
    mask = functools.reduce(pc.and_kleene, conditions)
    return np.asarray(pc.fill_null(mask, False).combine_chunks(), dtype=bool)


def fingerprint64(text: str) -> int:
    """BigQuery's ``FARM_FINGERPRINT(text)``: farmhash Fingerprint64 of the UTF-8 bytes, signed."""
    value = farmhash.fingerprint64(text)
    return value - (1 << 64) if value >= (1 << 63) else value


def fingerprints(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``FARM_FINGERPRINT`` of every string of ``texts`` (no NULLs), as an int64 array."""
    values = texts.to_pylist()
    unsigned = np.fromiter(map(farmhash.fingerprint64, values), dtype=np.uint64, count=len(values))
    return unsigned.view(np.int64)


@functools.lru_cache(maxsize=4096)
def _year_month_fingerprint(text: str) -> int:
    return fingerprint64(text)


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values


def _format_each_distinct(values: pa.Array | pa.ChunkedArray, to_text: Callable) -> pa.Array:
    """``to_text`` applied to each distinct value once, spread back over ``values`` (no NULLs)."""
    encoded = pc.dictionary_encode(_as_array(values))
    texts = pa.array([to_text(value) for value in encoded.dictionary.to_pylist()], pa.string())
    return texts.take(encoded.indices)


def hashmonth(year: pa.Array | pa.ChunkedArray, month: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``FARM_FINGERPRINT(CONCAT(CAST(year AS STRING), CAST(month AS STRING)))`` per row.

    The text is unpadded ("20011" for January 2001). Each distinct year-month is hashed once.
    """
    text = pc.binary_join_element_wise(
        pc.cast(_as_array(year), pa.string()), pc.cast(_as_array(month), pa.string()), ""
    )
    encoded = pc.dictionary_encode(text)
    distinct = np.array(
        [_year_month_fingerprint(value) for value in encoded.dictionary.to_pylist()],
        dtype=np.int64,
    )
    return distinct[np.asarray(encoded.indices, dtype=np.int64)]


def split_of(hashmonth_value: int) -> str:
    """The split of a record with this hashmonth: eval when abs(h) % 4 == 3, else train.

    The absolute value matters: Python's and numpy's ``h % 4`` of a negative h differ from it.
    """
    return EVAL if abs(int(hashmonth_value)) % HASH_BUCKETS == EVAL_BUCKET else TRAIN


def eval_mask(hashmonths: np.ndarray) -> np.ndarray:
    """Which records go to eval, given their hashmonths (exact for every int64, even -2**63)."""
    values = np.asarray(hashmonths, dtype=np.int64)
    as_unsigned = values.view(np.uint64)
    magnitude = np.where(values < 0, ~as_unsigned + np.uint64(1), as_unsigned)
    return magnitude % np.uint64(HASH_BUCKETS) == np.uint64(EVAL_BUCKET)


def plurality_label(plurality: int) -> str:
    """The plurality as the original pipeline wrote it when the ultrasound is known.

    Above 5 (the original mapping stops at quintuplets) the label is ``Multiple(2+)``.
    """
    return PLURALITY_LABELS.get(plurality, MULTIPLE_LABEL)


def plurality_label_without_ultrasound(plurality: int) -> str:
    """The plurality as known without an ultrasound: single or multiple."""
    return PLURALITY_LABELS[1] if plurality == 1 else MULTIPLE_LABEL


def _sex_label(is_male: bool) -> str:
    return "True" if is_male else "False"


def row_texts(records: pa.Table, with_ultrasound: bool) -> pa.Array:
    """The CSV text of one of a record's two rows, without the key.

    ``with_ultrasound`` True: the row as recorded (is_male True/False, exact plurality).
    False: the row a user without an ultrasound would send (is_male Unknown, plurality
    single or multiple).
    """
    weight = _format_each_distinct(records["weight_pounds"], repr)
    mother_age = _format_each_distinct(records["mother_age"], str)
    gestation = _format_each_distinct(records["gestation_weeks"], str)
    if with_ultrasound:
        sex = _format_each_distinct(records["is_male"], _sex_label)
        plurality = _format_each_distinct(records["plurality"], plurality_label)
    else:
        sex = UNKNOWN_SEX
        plurality = _format_each_distinct(
            records["plurality"], plurality_label_without_ultrasound
        )
    return pc.binary_join_element_wise(weight, sex, mother_age, plurality, gestation, ",")


def prepare(table: pa.Table) -> pa.Table:
    """The valid records of a conformed batch, with their ``hashmonth`` and ``key`` columns.

    ``key`` is the FARM_FINGERPRINT of the record's first CSV row (without the key): it is
    that row's key and the record's place in the ``--limit`` order.
    """
    records = table.filter(pa.array(valid_mask(table))).combine_chunks()
    if records.num_rows == 0:
        return records.append_column(HASHMONTH, pa.array([], pa.int64())).append_column(
            KEY, pa.array([], pa.int64())
        )
    months = hashmonth(records["year"], records["month"])
    keys = fingerprints(row_texts(records, with_ultrasound=True))
    return records.append_column(HASHMONTH, pa.array(months)).append_column(KEY, pa.array(keys))


def smallest(records: pa.Table, count: int) -> pa.Table:
    """The ``count`` prepared records first in ``LIMIT_ORDER`` (all of them if fewer).

    The result does not depend on how the records were batched or ordered, which makes
    ``--limit`` deterministic whatever the runner's parallelism.
    """
    if records.num_rows <= count:
        return records
    indices = pc.select_k_unstable(records, k=count, sort_keys=list(LIMIT_ORDER))
    return records.take(indices)


def split_records(records: pa.Table) -> dict[str, pa.Table]:
    """The prepared records of each split (train, eval), by their hashmonth."""
    to_eval = eval_mask(np.asarray(records[HASHMONTH].combine_chunks(), dtype=np.int64))
    return {
        TRAIN: records.filter(pa.array(~to_eval)),
        EVAL: records.filter(pa.array(to_eval)),
    }


def _line(texts: pa.Array, keys: pa.Array) -> pa.Array:
    """``text,key`` and a newline, per row."""
    key_texts = pc.binary_join_element_wise(pc.cast(keys, pa.string()), "", "\n")
    return pc.binary_join_element_wise(texts, key_texts, ",")


def csv_block(records: pa.Table) -> bytes:
    """The output rows of prepared records as UTF-8 text: two lines per record, no final newline.

    Each line is ``weight_pounds,is_male,mother_age,plurality,gestation_weeks,key`` where key
    is FARM_FINGERPRINT of the line's text before the key, so it is stable across runs. A
    record's two lines are adjacent: the row as recorded, then the row without ultrasound.
    """
    count = records.num_rows
    if count == 0:
        return b""
    known = row_texts(records, with_ultrasound=True)
    unknown = row_texts(records, with_ultrasound=False)
    known_keys = records[KEY].combine_chunks()
    unknown_keys = pa.array(fingerprints(unknown))
    # Every line ends with a newline, so the lines' data buffer is the whole block.
    lines = pa.concat_arrays([_line(known, known_keys), _line(unknown, unknown_keys)])
    order = np.empty(2 * count, dtype=np.int64)
    order[0::2] = np.arange(count)
    order[1::2] = np.arange(count, 2 * count)
    interleaved = lines.take(pa.array(order))
    offsets = np.frombuffer(interleaved.buffers()[1], dtype=np.int32)
    first = int(offsets[interleaved.offset])
    last = int(offsets[interleaved.offset + len(interleaved)])
    return interleaved.buffers()[2].slice(first, last - first - 1).to_pybytes()


def table_slices(table: pa.Table, max_rows: int) -> list[pa.Table]:
    """``table`` cut into consecutive slices of at most ``max_rows`` rows (no copy)."""
    if max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    return [table.slice(start, max_rows) for start in range(0, table.num_rows, max_rows)]
