"""The Beam preprocessing pipeline: record rules, sources, manifest, limit, options, packaging.

Beam starts slowly, so the pipeline runs are module-scoped fixtures shared by many tests:
one Parquet run, one CSV run (other files, other order, two worker processes), two
``--limit`` runs that differ in source, batching, parallelism and shard count.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import manifest, options, records, sources
from beam_pipeline.coders import ArrowTableCoder
from beam_pipeline.options import PreprocessConfig
from beam_pipeline.run import main, run_pipeline
from beam_pipeline.transforms import SmallestRecordsFn
from tests.conftest import REPO

SAMPLE_INFO = {"generator": "test", "rows": 0, "seed": 7}
PLURALITY_CYCLE = (1, 1, 1, 2, 3, 4, 5, 6, 9)
LIMIT = 100


def _valid_rows() -> list[dict]:
    """Six valid records per year-month of 2001-2008; each has a unique weight."""
    rows = []
    index = 0
    for year in range(2001, 2009):
        for month in range(1, 13):
            for _ in range(6):
                index += 1
                rows.append(
                    {
                        "year": year,
                        "month": month,
                        "weight_pounds": round(3 + index / 1000, 3),
                        "is_male": index % 2 == 0,
                        "mother_age": 15 + index % 30,
                        "plurality": PLURALITY_CYCLE[index % len(PLURALITY_CYCLE)],
                        "gestation_weeks": 30 + index % 15,
                    }
                )
    return rows


def _base_row(**changes) -> dict:
    row = {
        "year": 2005,
        "month": 6,
        "weight_pounds": 9.5,
        "is_male": True,
        "mother_age": 30,
        "plurality": 1,
        "gestation_weeks": 39,
    }
    row.update(changes)
    return row


# One row per way of failing the filters (the weight 9.xxx marks rows that must not appear).
INVALID_ROWS = {
    "year NULL": _base_row(year=None, weight_pounds=9.001),
    "year 2000": _base_row(year=2000, weight_pounds=9.002),
    "year 1990": _base_row(year=1990, weight_pounds=9.003),
    "month 0": _base_row(month=0, weight_pounds=9.004),
    "month NULL": _base_row(month=None, weight_pounds=9.005),
    "weight 0": _base_row(weight_pounds=0.0),
    "weight NULL": _base_row(weight_pounds=None),
    "weight negative": _base_row(weight_pounds=-1.5),
    "weight NaN": _base_row(weight_pounds=float("nan")),
    "mother_age 0": _base_row(mother_age=0, weight_pounds=9.006),
    "mother_age NULL": _base_row(mother_age=None, weight_pounds=9.007),
    "mother_age negative": _base_row(mother_age=-3, weight_pounds=9.008),
    "plurality 0": _base_row(plurality=0, weight_pounds=9.009),
    "plurality NULL": _base_row(plurality=None, weight_pounds=9.010),
    "gestation_weeks 0": _base_row(gestation_weeks=0, weight_pounds=9.011),
    "gestation_weeks NULL": _base_row(gestation_weeks=None, weight_pounds=9.012),
    "is_male NULL": _base_row(is_male=None, weight_pounds=9.013),
}

VALID_ROWS = _valid_rows()
ALL_ROWS = VALID_ROWS[:300] + list(INVALID_ROWS.values()) + VALID_ROWS[300:]


def _table(rows: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=records.SOURCE_SCHEMA)
    extra = pa.array([f"extra-{i}" for i in range(len(rows))])
    return table.append_column("cigarette_use", extra)


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return repr(value) if isinstance(value, float) else str(value)


def _write_bigquery_csv(path: Path, rows: list[dict]) -> None:
    """CSV as BigQuery exports it: header, true/false, empty field for NULL; an extra column."""
    columns = ["record_weight", *records.SOURCE_COLUMNS]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["x"] + [_csv_value(row[name]) for name in records.SOURCE_COLUMNS])


def _config(source, out, **settings) -> PreprocessConfig:
    return PreprocessConfig(source=str(source), out=str(out), **settings)


def _split_lines(out_dir: Path, document: dict) -> dict[str, list[str]]:
    lines = {}
    for split, entry in document["splits"].items():
        lines[split] = []
        for name in entry["shards"]:
            lines[split].extend((out_dir / name).read_text().splitlines())
    return lines


def _all_lines(out_dir: Path, document: dict) -> list[str]:
    return sorted(line for split in _split_lines(out_dir, document).values() for line in split)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("natality")
    pq.write_table(_table(ALL_ROWS), root / "natality.parquet", row_group_size=150)
    (root / "_SAMPLE.json").write_text(json.dumps(SAMPLE_INFO))
    csv_dir = root / "csv"
    csv_dir.mkdir()
    reversed_rows = list(reversed(ALL_ROWS))
    _write_bigquery_csv(csv_dir / "part-0.csv", reversed_rows[:250])
    _write_bigquery_csv(csv_dir / "part-1.csv", reversed_rows[250:])
    return root


@pytest.fixture(scope="module")
def parquet_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "preprocess"
    document = run_pipeline(_config(data_dir / "natality.parquet", out, run_id="run-parquet"))
    return out, document


@pytest.fixture(scope="module")
def csv_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "preprocess"
    document = run_pipeline(
        _config(
            data_dir / "csv" / "part-*.csv",
            out,
            num_shards=2,
            batch_rows=64,
            direct_running_mode="multi_processing",
            direct_num_workers=2,
        )
    )
    return out, document


@pytest.fixture(scope="module")
def limit_runs(data_dir, tmp_path_factory):
    first_out = tmp_path_factory.mktemp("out") / "limit-a"
    first = run_pipeline(
        _config(data_dir / "natality.parquet", first_out, limit=LIMIT, num_shards=1)
    )
    second_out = tmp_path_factory.mktemp("out") / "limit-b"
    second = run_pipeline(
        _config(
            data_dir / "csv" / "part-*.csv",
            second_out,
            limit=LIMIT,
            num_shards=3,
            batch_rows=37,
            direct_running_mode="multi_threading",
            direct_num_workers=2,
        )
    )
    return (first_out, first), (second_out, second)


# --- record rules (pure functions) -------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(INVALID_ROWS))
def test_each_kind_of_invalid_row_is_dropped(kind):
    table = pa.Table.from_pylist([_base_row(), INVALID_ROWS[kind]], schema=records.SOURCE_SCHEMA)
    assert records.valid_mask(table).tolist() == [True, False]


def test_prepare_keeps_valid_records_with_hashmonth_and_key():
    table = records.conform(_table(ALL_ROWS), "test")
    prepared = records.prepare(table)
    assert prepared.num_rows == len(VALID_ROWS)
    assert prepared.column_names == [*records.SOURCE_COLUMNS, records.HASHMONTH, records.KEY]
    first = VALID_ROWS[0]
    assert prepared[records.HASHMONTH][0].as_py() == records.fingerprint64(
        f"{first['year']}{first['month']}"
    )


def test_each_record_becomes_two_rows_keyed_by_their_text():
    rows = [
        _base_row(weight_pounds=7.25, is_male=True, mother_age=31, plurality=1, gestation_weeks=39),
        _base_row(weight_pounds=5.5, is_male=False, mother_age=24, plurality=2, gestation_weeks=36),
    ]
    table = pa.Table.from_pylist(rows, schema=records.SOURCE_SCHEMA)
    block = records.csv_block(records.prepare(table))
    texts = [
        "7.25,True,31,Single(1),39",
        "7.25,Unknown,31,Single(1),39",
        "5.5,False,24,Twins(2),36",
        "5.5,Unknown,24,Multiple(2+),36",
    ]
    assert block.decode().split("\n") == [f"{t},{records.fingerprint64(t)}" for t in texts]


@pytest.mark.parametrize(
    "plurality, known, unknown",
    [
        (1, "Single(1)", "Single(1)"),
        (3, "Triplets(3)", "Multiple(2+)"),
        (4, "Quadruplets(4)", "Multiple(2+)"),
        (5, "Quintuplets(5)", "Multiple(2+)"),
        (6, "Multiple(2+)", "Multiple(2+)"),
        (12, "Multiple(2+)", "Multiple(2+)"),
    ],
)
def test_plurality_labels_including_above_five(plurality, known, unknown):
    table = pa.Table.from_pylist([_base_row(plurality=plurality)], schema=records.SOURCE_SCHEMA)
    first, second = records.csv_block(records.prepare(table)).decode().split("\n")
    assert first.split(",")[3] == known
    assert second.split(",")[3] == unknown


def test_conform_names_the_missing_or_unreadable_column():
    table = _table(VALID_ROWS[:3]).drop_columns(["mother_age"])
    with pytest.raises(records.InputError, match="gs://b/x.parquet: missing column.*mother_age"):
        records.conform(table, "gs://b/x.parquet")
    text_months = _table(VALID_ROWS[:3]).set_column(1, "month", pa.array(["May", "1", "2"]))
    with pytest.raises(records.InputError, match="column month .* cannot be read as int64"):
        records.conform(text_months, "x.parquet")


def test_conform_accepts_narrower_types_and_ignores_extra_columns():
    narrow = pa.table(
        {
            "plurality": pa.array([1], pa.int8()),
            "year": pa.array([2003], pa.int32()),
            "month": pa.array([2], pa.int32()),
            "weight_pounds": pa.array([7.5], pa.float32()),
            "is_male": pa.array([False]),
            "mother_age": pa.array([22], pa.int16()),
            "gestation_weeks": pa.array([40], pa.int32()),
            "state": pa.array(["CA"]),
        }
    )
    conformed = records.conform(narrow, "narrow")
    assert conformed.schema == records.SOURCE_SCHEMA
    assert conformed.to_pylist()[0]["year"] == 2003


def test_smallest_records_do_not_depend_on_batching_or_order():
    prepared = records.prepare(records.conform(_table(ALL_ROWS), "test"))
    expected = records.smallest(prepared, 40)
    expected_keys = sorted(expected[records.KEY].to_pylist())
    assert expected_keys == sorted(prepared[records.KEY].to_pylist())[:40]
    combine = SmallestRecordsFn(40)
    shuffled = prepared.take(np.random.default_rng(3).permutation(prepared.num_rows))
    accumulators = []
    for batch in records.table_slices(shuffled, 23):
        accumulators.append(combine.add_input(combine.create_accumulator(), batch))
    merged = combine.merge_accumulators(accumulators)
    assert sorted(combine.extract_output(merged)[records.KEY].to_pylist()) == expected_keys
    assert combine.extract_output(combine.create_accumulator()) is None


def test_arrow_coder_sends_only_the_rows_of_a_slice():
    table = records.conform(_table(VALID_ROWS), "test")
    coder = ArrowTableCoder()
    part = table.slice(100, 10)
    encoded = coder.encode(part)
    assert coder.decode(encoded).equals(part)
    assert len(encoded) < len(coder.encode(table)) / 5


def test_arrow_coder_estimates_a_slice_by_its_rows_without_encoding(monkeypatch):
    table = records.conform(_table(VALID_ROWS), "test")
    coder = ArrowTableCoder()
    monkeypatch.setattr(ArrowTableCoder, "encode", lambda self, value: pytest.fail("encoded"))
    assert 0 < coder.estimate_size(table.slice(100, 10)) < coder.estimate_size(table) / 5
    assert coder.estimate_size(table.slice(0, 0)) == 0


def test_importing_the_pipeline_leaves_the_garbage_collector_running():
    # run.py pauses the collector while Beam is imported; a fresh process shows it resumed.
    code = "import gc, beam_pipeline.run; print(gc.isenabled(), gc.get_freeze_count() > 0)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["True", "True"]


def test_bigquery_rows_become_a_conformed_table():
    rows = [dict(row, extra="ignored") for row in VALID_ROWS[:3]] + [{"year": 2004}]
    table = sources.rows_to_table(rows)
    assert table.schema == records.SOURCE_SCHEMA
    assert table.num_rows == 4
    assert records.valid_mask(table).tolist() == [True, True, True, False]


def test_bigquery_query_selects_the_columns_and_applies_the_filters():
    query = sources.bigquery_query()
    assert "FROM `bigquery-public-data.samples.natality`" in query
    for column in records.SOURCE_COLUMNS:
        assert column in query
    for condition in ("year > 2000", "weight_pounds > 0", "mother_age > 0", "plurality > 0",
                      "gestation_weeks > 0", "month > 0"):
        assert condition in query
    assert sources.resolve_source("bigquery").kind == sources.BIGQUERY


def test_bigquery_source_reads_the_query_with_the_storage_read_api(tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.pipeline import build_pipeline

    pipeline = beam.Pipeline(options=PipelineOptions(flags=[], runner="FnApiRunner", project="p"))
    build_pipeline(pipeline, sources.resolve_source("bigquery"), str(tmp_path), limit=10,
                   num_shards=0, manifest_fields={})
    reads = []

    class FindReads(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            if isinstance(node.transform, beam.io.ReadFromBigQuery):
                reads.append(node.transform)

    pipeline.visit(FindReads())
    (read,) = reads
    assert read.method == beam.io.ReadFromBigQuery.Method.DIRECT_READ
    assert read._kwargs == {"query": sources.bigquery_query(), "use_standard_sql": True}


@pytest.mark.parametrize(
    "path, expected",
    [("gs://b/data/part-*.parquet", "parquet"), ("/d/x.PQ", "parquet"), ("x.csv", "csv")],
)
def test_source_format_comes_from_the_extension(path, expected):
    assert sources.file_format(path) == expected


def test_invalid_sample_metadata_is_reported(tmp_path):
    (tmp_path / "_SAMPLE.json").write_text("{not json")
    with pytest.raises(records.InputError, match="_SAMPLE.json is not valid JSON"):
        sources.read_sample_metadata(str(tmp_path / "natality.parquet"))
    assert sources.sample_path("gs://b/*/x.parquet") is None


# --- one pipeline run, its outputs and manifest ------------------------------------------


def test_pipeline_writes_every_valid_record_and_nothing_else(parquet_run):
    out, document = parquet_run
    lines = _all_lines(out, document)
    assert len(lines) == 2 * len(VALID_ROWS)
    weights = {float(line.split(",")[0]) for line in lines}
    assert weights == {row["weight_pounds"] for row in VALID_ROWS}
    assert document["input"] == {
        "rows_read": len(ALL_ROWS),
        "rows_dropped": len(INVALID_ROWS),
        "rows_valid": len(VALID_ROWS),
        "limit": None,
    }


def test_pipeline_writes_two_rows_per_record_with_stable_keys(parquet_run):
    out, document = parquet_run
    for split_lines in _split_lines(out, document).values():
        for known, unknown in zip(split_lines[0::2], split_lines[1::2]):
            k, u = known.split(","), unknown.split(",")
            assert k[0] == u[0] and k[2] == u[2] and k[4] == u[4]
            assert k[1] in ("True", "False") and u[1] == "Unknown"
            assert u[3] in ("Single(1)", "Multiple(2+)")
            for fields in (k, u):
                assert int(fields[5]) == records.fingerprint64(",".join(fields[:5]))
    plurality_by_weight = {row["weight_pounds"]: row["plurality"] for row in VALID_ROWS}
    labels = {line.split(",")[3] for line in _all_lines(out, document)
              if plurality_by_weight[float(line.split(",")[0])] in (6, 9)}
    assert labels == {"Multiple(2+)"}


def test_pipeline_splits_by_year_month(parquet_run):
    out, document = parquet_run
    month_of = {row["weight_pounds"]: (row["year"], row["month"]) for row in VALID_ROWS}
    found = {
        split: {month_of[float(line.split(",")[0])] for line in lines}
        for split, lines in _split_lines(out, document).items()
    }
    assert not found["train"] & found["eval"]
    assert {(2001, 1), (2001, 4), (2001, 5), (2001, 8), (2002, 10)} <= found["eval"]
    assert {(2001, 2), (2001, 3), (2002, 1)} <= found["train"]
    expected_eval = {
        (y, m) for (y, m) in set(month_of.values())
        if records.split_of(records.fingerprint64(f"{y}{m}")) == records.EVAL
    }
    assert found["eval"] == expected_eval


def test_manifest_lists_exactly_the_shards_present_and_counts_add_up(parquet_run):
    out, document = parquet_run
    listed = {name for entry in document["splits"].values() for name in entry["shards"]}
    present = set(os.listdir(out)) - {manifest.MANIFEST_NAME}
    assert listed == present
    lines = _split_lines(out, document)
    total_records = 0
    for split, entry in document["splits"].items():
        assert entry["shards"]
        assert all(re.fullmatch(rf"{split}\.csv-\d{{5}}-of-\d{{5}}", n) for n in entry["shards"])
        assert entry["rows"] == len(lines[split]) == 2 * entry["records"]
        total_records += entry["records"]
    counts = document["input"]
    assert counts["rows_read"] == counts["rows_dropped"] + counts["rows_valid"]
    assert total_records == counts["rows_valid"]


def test_manifest_is_written_after_every_shard(parquet_run):
    out, document = parquet_run
    manifest_time = (out / manifest.MANIFEST_NAME).stat().st_mtime_ns
    for entry in document["splits"].values():
        for name in entry["shards"]:
            assert (out / name).stat().st_mtime_ns <= manifest_time


def test_manifest_writer_refuses_a_missing_shard(parquet_run, tmp_path):
    out, document = parquet_run
    for name in document["splits"]["eval"]["shards"]:
        shutil.copy(out / name, tmp_path / name)
    with pytest.raises(manifest.ManifestError, match="train shard .* is missing"):
        manifest.write_manifest(str(tmp_path), document)
    assert not (tmp_path / manifest.MANIFEST_NAME).exists()


def test_manifest_describes_the_run(parquet_run, data_dir):
    out, document = parquet_run
    assert json.loads((out / manifest.MANIFEST_NAME).read_text()) == document
    assert document["format"] == "mlrelay.preprocess/v1"
    assert document["run_id"] == "run-parquet"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["created"])
    assert document["source"] == {
        "kind": "file",
        "path": str(data_dir / "natality.parquet"),
        "format": "parquet",
        "sample": SAMPLE_INFO,
    }
    assert [c["name"] for c in document["columns"]] == [
        "weight_pounds", "is_male", "mother_age", "plurality", "gestation_weeks", "key"
    ]
    # A small input runs in one in-process worker (options.PARALLEL_FROM_ROWS).
    assert document["options"] == {
        "runner": "FnApiRunner", "direct_running_mode": "in_memory", "direct_num_workers": 1
    }


def test_csv_source_gives_the_same_rows_as_parquet(parquet_run, csv_run):
    parquet_out, parquet_doc = parquet_run
    csv_out, csv_doc = csv_run
    assert _all_lines(csv_out, csv_doc) == _all_lines(parquet_out, parquet_doc)
    assert csv_doc["input"] == parquet_doc["input"]
    assert len(csv_doc["splits"]["train"]["shards"]) == 2
    assert csv_doc["source"]["format"] == "csv" and csv_doc["source"]["sample"] is None


# --- --limit -----------------------------------------------------------------------------


def test_limit_keeps_the_same_records_whatever_the_source_batching_and_parallelism(limit_runs):
    (first_out, first), (second_out, second) = limit_runs
    assert _all_lines(first_out, first) == _all_lines(second_out, second)
    for document in (first, second):
        records_written = sum(entry["records"] for entry in document["splits"].values())
        assert records_written == LIMIT
        assert document["input"]["limit"] == LIMIT
        assert document["input"]["rows_valid"] == len(VALID_ROWS)
    assert len(second["splits"]["train"]["shards"]) == 3


def test_limit_keeps_the_records_with_the_smallest_keys(limit_runs, parquet_run):
    (limit_out, limited), _ = limit_runs
    full_out, full = parquet_run
    def first_row_keys(out, document):
        return sorted(int(line.split(",")[5]) for line in _all_lines(out, document)
                      if line.split(",")[1] != "Unknown")
    assert first_row_keys(limit_out, limited) == first_row_keys(full_out, full)[:LIMIT]


# --- bad input: a clear message, a non-zero exit, no manifest ----------------------------


def _run_main(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.parquet", None, "no files match"),
        ("natality.txt", b"year,month\n", "cannot tell the format"),
        ("broken.parquet", b"this is not parquet", "cannot read .*broken.parquet as parquet"),
        ("short.csv", b"year,month,weight_pounds\n2001,1,7.5\n", "header lacks column.*is_male"),
        ("empty.csv", b"", "is empty"),
    ],
)
def test_bad_source_gives_a_clear_error_and_no_output(capsys, tmp_path, name, content, message):
    source = tmp_path / name
    if content is not None:
        source.write_bytes(content)
    out = tmp_path / "out"
    code, err = _run_main(capsys, "--source", str(source), "--out", str(out))
    assert code == 2
    assert re.search(message, err), err
    assert not out.exists()


def test_source_without_valid_rows_fails_without_a_manifest(capsys, tmp_path):
    source = tmp_path / "invalid.parquet"
    pq.write_table(_table(list(INVALID_ROWS.values())), source)
    out = tmp_path / "out"
    out.mkdir()
    (out / manifest.MANIFEST_NAME).write_text("{}")  # left by an earlier run
    # Worker processes report the error as text; it must still reach the user.
    code, err = _run_main(
        capsys, "--source", str(source), "--out", str(out),
        "--direct-running-mode", "multi_processing",
    )
    assert code == 2
    assert f"no valid rows in {source}" in err
    assert f"{len(INVALID_ROWS)} row(s) read" in err
    assert not (out / manifest.MANIFEST_NAME).exists()


def test_a_bad_value_in_a_later_file_fails_the_run_with_its_name(capsys, tmp_path):
    good, bad = tmp_path / "part-0.csv", tmp_path / "part-1.csv"
    _write_bigquery_csv(good, VALID_ROWS[:5])
    _write_bigquery_csv(bad, VALID_ROWS[5:10])
    bad.write_text(bad.read_text().replace(",false,", ",maybe,", 1))
    out = tmp_path / "out"
    code, err = _run_main(capsys, "--source", str(tmp_path / "part-*.csv"), "--out", str(out))
    assert code == 2
    assert re.search(rf"cannot read {re.escape(str(bad))} as natality CSV: .*maybe", err), err
    assert not (out / manifest.MANIFEST_NAME).exists()


def test_bad_settings_are_rejected_before_running(capsys, tmp_path):
    source = tmp_path / "x.parquet"
    code, err = _run_main(capsys, "--source", str(source), "--out", str(tmp_path), "--limit", "0")
    assert code == 2 and "--limit must be a positive" in err
    code, err = _run_main(capsys, "--out", str(tmp_path))
    assert code == 2 and "--source" in err


# --- Dataflow and DirectRunner options ---------------------------------------------------


def test_dataflow_options_are_built_from_the_configuration():
    config = PreprocessConfig(
        source="bigquery",
        out="gs://bucket/runs/2024-05-01T12:00:00Z_ab12/preprocess",
        run_id="2024-05-01T12:00:00Z_AB12",
        runner="DataflowRunner",
        project="proj",
        region="europe-west1",
        temp_location="gs://bucket/tmp/",
        max_num_workers=8,
        service_account_email="df@proj.iam.gserviceaccount.com",
    )
    built = options.beam_options(config)
    assert built == {
        "runner": "DataflowRunner",
        "project": "proj",
        "region": "europe-west1",
        "temp_location": "gs://bucket/tmp",
        "staging_location": "gs://bucket/tmp/staging",
        "setup_file": options.SETUP_FILE,
        "labels": ["app=mlrelay", "run_id=2024-05-01t12-00-00z_ab12"],
        "job_name": "mlrelay-preprocess-2024-05-01t12-00-00z-ab12",
        "max_num_workers": 8,
        "service_account_email": "df@proj.iam.gserviceaccount.com",
    }
    assert Path(built["setup_file"]) == REPO / "beam_pipeline" / "setup.py"
    assert json.loads(json.dumps(built)) == built
    assert not config.waits


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"region": None}, "--region is required"),
        ({"temp_location": "/tmp/x"}, "--temp-location must be a gs:// path"),
        ({"out": "/local/out"}, "--out must be a gs:// path"),
        ({"job_name": "Bad_Name"}, "not a Dataflow job name"),
        ({"project": None}, "--project"),
    ],
)
def test_dataflow_options_reject_incomplete_settings(changes, message):
    settings = dict(
        source="gs://b/data/*.parquet", out="gs://b/out", runner="DataflowRunner", project="p",
        region="us-central1", temp_location="gs://b/tmp",
    )
    settings.update(changes)
    with pytest.raises(options.ConfigError, match=message):
        options.beam_options(PreprocessConfig(**settings))


@pytest.mark.parametrize(
    "mode, workers, rows, cpus, expected",
    [
        ("auto", None, 200_000, 2, ("in_memory", 1)),
        ("auto", None, 3_999_999, 2, ("in_memory", 1)),
        ("auto", None, 4_000_000, 2, ("multi_processing", 2)),
        ("auto", None, None, 2, ("multi_processing", 2)),  # a BigQuery query
        ("auto", None, 50_000_000, 1, ("in_memory", 1)),
        ("auto", None, 50_000_000, 8, ("multi_processing", 8)),
        ("multi_threading", None, 100, 1, ("multi_threading", 2)),
        ("multi_processing", 3, 100, 2, ("multi_processing", 3)),
        ("in_memory", None, 10**9, 2, ("in_memory", 1)),
    ],
)
def test_direct_runner_execution_depends_on_the_input_size(mode, workers, rows, cpus, expected):
    assert options.direct_execution(mode, workers, rows, cpus) == expected


def test_direct_runner_options_for_a_large_input_use_both_cores():
    config = options.parse_args(["--source", "x.parquet", "--out", "o", "--limit", "5"])
    assert config.limit == 5 and config.waits
    assert options.beam_options(config, estimated_rows=5_000_000, cpu_count=2) == {
        "runner": "FnApiRunner",
        "direct_running_mode": "multi_processing",
        "direct_num_workers": 2,
    }


def test_cli_maps_every_cloud_flag():
    config = options.parse_args([
        "--source", "bigquery", "--out", "gs://b/o", "--runner", "DataflowRunner",
        "--run-id", "r1", "--project", "p", "--region", "r", "--temp-location", "gs://b/tmp",
        "--job-name", "job-1", "--max-workers", "3", "--service-account", "sa@p.iam",
        "--num-shards", "4", "--wait",
    ])
    assert (config.project, config.region, config.temp_location, config.job_name) == (
        "p", "r", "gs://b/tmp", "job-1")
    assert (config.max_num_workers, config.service_account_email, config.num_shards) == (
        3, "sa@p.iam", 4)
    assert config.waits


# --- the setup file for Dataflow workers -------------------------------------------------


def test_setup_file_builds_an_sdist_with_the_pipeline_modules(tmp_path):
    package = tmp_path / "beam_pipeline"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "beam_pipeline", package, ignore=ignore)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist)],
        cwd=package, check=True, capture_output=True,
    )
    (tarball,) = dist.glob("*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = {Path(name).name for name in archive.getnames()}
        requires = next(n for n in archive.getnames() if n.endswith("requires.txt"))
        assert archive.extractfile(requires).read().decode().split() == ["pyfarmhash==0.5.1"]
    modules = {p.name for p in (REPO / "beam_pipeline").glob("*.py")}
    assert {"records.py", "sources.py", "transforms.py", "run.py"} <= modules <= names
