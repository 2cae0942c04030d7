"""The trainer: where it reads and writes, what it learns, what it reports, how it fails."""

from __future__ import annotations

import csv
import json
import math
import sys
import types
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from trainer import contract_data, evaluation, schema
from trainer.inputs import TrainerInputError, complete_shard_sets, discover_data, parse_manifest
from trainer.paths import resolve_output_locations, to_local_path
from trainer.task import main, steps_per_evaluation
from tests.conftest import SHARED

REAL_ROWS = SHARED / "data" / "natality_real_rows.csv"
METRIC_FIELDS = {
    "eval_rmse", "baseline_rmse", "bayes_floor", "best_possible_rmse", "train_examples_seen", "eval_examples",
    "wall_time_s", "history", "args", "model_dir",
}
# Two evaluations, so that what is reported per evaluation is seen more than once.
TINY_RUN = ["--num-train-examples", "2048", "--num-evals", "2", "--batch-size", "256"]
GATE_SLICES = {"gestation_weeks<37", "is_male=Unknown"}  # and plurality=<value> for each value


def synthetic_dataset(directory: Path, records: int = 400, sample: dict | None = None) -> Path:
    rows = contract_data.split_records(contract_data.synthetic_records(records, seed=3))
    return Path(contract_data.write_dataset(str(directory), rows, num_shards=2, sample=sample))


# --- where the trainer reads and writes -------------------------------------------------------

def test_gcs_uris_map_to_the_vertex_fuse_mount():
    assert to_local_path("gs://bucket/runs/r1/preprocess") == "/gcs/bucket/runs/r1/preprocess"
    assert to_local_path("gs://bucket") == "/gcs/bucket"
    assert to_local_path("/tmp/local/dir") == "/tmp/local/dir"
    assert to_local_path("relative/dir") == "relative/dir"
    with pytest.raises(ValueError, match="no bucket"):
        to_local_path("gs:///x")


def test_aip_model_dir_wins_and_metrics_go_to_the_job_dir():
    env = {"AIP_MODEL_DIR": "gs://b/runs/r1/train/model/", "AIP_TENSORBOARD_LOG_DIR": "gs://b/logs"}
    both = resolve_output_locations("gs://b/runs/r1/train", env)
    assert both.model_dir == "/gcs/b/runs/r1/train/model"
    assert both.metrics_path == "/gcs/b/runs/r1/train/metrics.json"
    assert both.progress_path == "/gcs/b/runs/r1/train/progress.json"
    assert both.report_path == "/gcs/b/runs/r1/train/training_report.json"
    assert both.tensorboard_dir == "/gcs/b/logs"
    only_aip = resolve_output_locations(None, {"AIP_MODEL_DIR": "gs://b/base/model/"})
    assert only_aip.metrics_path == "/gcs/b/base/metrics.json"
    only_job_dir = resolve_output_locations("/tmp/job", {})
    assert (only_job_dir.model_dir, only_job_dir.tensorboard_dir) == ("/tmp/job/model", None)
    with pytest.raises(ValueError, match="--job-dir or set AIP_MODEL_DIR"):
        resolve_output_locations(None, {})


# --- which shards it reads --------------------------------------------------------------------

def test_shard_sets_must_be_complete():
    names = ["train.csv-00000-of-00002", "train.csv-00001-of-00002", "eval.csv-00000-of-00001", "x"]
    assert complete_shard_sets(names) == {
        "train": ("train.csv-00000-of-00002", "train.csv-00001-of-00002"),
        "eval": ("eval.csv-00000-of-00001",),
    }
    with pytest.raises(TrainerInputError, match=r"train shards are incomplete.*\[1\]"):
        complete_shard_sets(["train.csv-00000-of-00002", "eval.csv-00000-of-00001"])
    with pytest.raises(TrainerInputError, match="no eval"):
        complete_shard_sets(["train.csv-00000-of-00001"])


def test_manifest_is_validated_and_resolved_against_its_directory():
    doc = {
        "format": schema.MANIFEST_FORMAT, "run_id": "r1",
        "source": {"kind": "sample", "sample": {"generator": "natality_sample", "version": 1}},
        "splits": {"train": {"shards": ["train.csv-00000-of-00001"], "rows": 2, "records": 1},
                   "eval": {"shards": ["eval.csv-00000-of-00001"], "rows": 2, "records": 1}},
    }
    spec = parse_manifest(doc, "/data/run")
    assert spec.train_files == ("/data/run/train.csv-00000-of-00001",)
    assert (spec.run_id, spec.sample["generator"]) == ("r1", "natality_sample")
    with pytest.raises(TrainerInputError, match="format"):
        parse_manifest({**doc, "format": "other/v9"}, "/data/run")
    with pytest.raises(TrainerInputError, match="splits.eval.shards"):
        parse_manifest({**doc, "splits": {**doc["splits"], "eval": {"shards": []}}}, "/data/run")


def test_data_dir_without_manifest_uses_complete_shard_sets(tmp_path):
    synthetic_dataset(tmp_path, records=40)
    (tmp_path / schema.MANIFEST_NAME).unlink()
    spec = discover_data(str(tmp_path))
    assert [Path(p).name for p in spec.eval_files] == ["eval.csv-00000-of-00002", "eval.csv-00001-of-00002"]
    assert not spec.sample


def test_training_length_must_allow_one_batch_per_evaluation():
    assert steps_per_evaluation(10_000, 100, 4) == 25
    with pytest.raises(ValueError, match="needs at least 1024"):
        steps_per_evaluation(1000, 256, 4)


# --- the figures in metrics.json --------------------------------------------------------------

def test_baseline_is_the_rmse_of_predicting_the_training_mean():
    assert evaluation.baseline_rmse(7.0, np.array([6.0, 8.0, 7.0, 7.0])) == pytest.approx(np.sqrt(0.5))
    with pytest.raises(ValueError, match="cannot compare"):
        evaluation.rmse(np.zeros(3), np.zeros(2))


def test_bayes_floor_only_for_natality_sample_data(monkeypatch):
    features = {"is_male": np.array(["True"], dtype=object), "plurality": np.array(["Single(1)"], dtype=object),
                "mother_age": np.array([30.0]), "gestation_weeks": np.array([39.0])}
    assert evaluation.bayes_floor(None, features) is None
    assert evaluation.bayes_floor({"generator": "something_else"}, features) is None
    assert evaluation.best_possible_rmse({"generator": "something_else"}, features, np.array([7.0])) is None
    monkeypatch.setitem(sys.modules, "natality_sample", None)  # import fails: the package is absent
    assert evaluation.bayes_floor({"generator": "natality_sample"}, features) is None
    assert evaluation.best_possible_rmse({"generator": "natality_sample"}, features, np.array([7.0])) is None


def test_best_possible_rmse_scores_the_generators_own_prediction_on_the_eval_rows(monkeypatch):
    features = {"is_male": np.array(["True", "Unknown"], dtype=object),
                "plurality": np.array(["Single(1)", "Single(1)"], dtype=object),
                "mother_age": np.array([30.0, 30.0]), "gestation_weeks": np.array([39.0, 39.0])}
    seen = []

    def conditional_mean(is_male, plurality, mother_age, gestation_weeks):
        seen.append(list(is_male))
        return np.array([7.5, 7.0])

    def broken(*columns):
        raise ValueError("row 0 cannot come from the generator")

    sample = {"generator": "natality_sample"}
    monkeypatch.setitem(sys.modules, "natality_sample", types.SimpleNamespace(conditional_mean=conditional_mean))
    assert evaluation.best_possible_rmse(sample, features, np.array([7.0, 8.0])) == pytest.approx(np.sqrt(0.625))
    assert seen == [["True", "Unknown"]]
    monkeypatch.setitem(sys.modules, "natality_sample", types.SimpleNamespace(conditional_mean=broken))
    assert evaluation.best_possible_rmse(sample, features, np.array([7.0, 8.0])) is None  # logged, not raised


# --- runs of the trainer ----------------------------------------------------------------------

def read_real_records(every: int = 8) -> dict[str, list]:
    """Every ``every``-th real record, preprocessed, split by abs(hashmonth) % 4 == 3 into eval."""
    rows: dict[str, list] = {"train": [], "eval": []}
    with open(REAL_ROWS, newline="") as handle:
        for index, record in enumerate(csv.DictReader(handle)):
            if index % every:
                continue
            split = "eval" if abs(int(record["hashmonth"])) % 4 == 3 else "train"
            rows[split].extend(contract_data.preprocess_rows(
                float(record["weight_pounds"]), record["is_male"] == "True",
                float(record["mother_age"]), record["plurality"],
                float(record["gestation_weeks"]), str(index)))
    return rows


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ROWS.exists(), reason="needs the shared real natality rows")
def test_training_learns_on_real_rows_and_reports_it(tmp_path):
    rows = read_real_records()
    contract_data.write_dataset(str(tmp_path / "data"), rows, num_shards=2)
    job_dir = tmp_path / "job"
    status = main(["--data-dir", str(tmp_path / "data"), "--job-dir", str(job_dir),
                   "--num-train-examples", "120000", "--num-evals", "2", "--batch-size", "256"])
    assert status == 0

    metrics = json.loads((job_dir / "metrics.json").read_text())
    assert METRIC_FIELDS <= set(metrics)
    # Predicting the mean scores ~1.31 lb on these rows; a model that learned scores well below.
    assert metrics["eval_rmse"] < 0.9 * metrics["baseline_rmse"]
    assert metrics["bayes_floor"] is None and metrics["best_possible_rmse"] is None  # real data: no generator
    assert metrics["eval_examples"] == len(rows["eval"])
    assert metrics["train_examples_seen"] == 2 * (120000 // (256 * 2)) * 256
    assert len(metrics["history"]) == 2
    assert metrics["history"][-1] == pytest.approx(metrics["eval_rmse"], abs=1e-3)
    assert metrics["model_dir"] == str(job_dir / "model")
    assert metrics["args"]["batch_size"] == 256
    assert (job_dir / "model" / "saved_model.pb").is_file()
    assert [p.name for p in job_dir.iterdir() if p.name.endswith(".tmp")] == []
    assert_progress_and_report(job_dir, metrics, evaluations=2)  # 500 of the eval rows sampled


@pytest.mark.slow
def test_aip_model_dir_is_honoured_and_the_bayes_floor_recorded(tmp_path, monkeypatch):
    manifest = synthetic_dataset(tmp_path / "data", sample={"generator": "natality_sample", "version": 1})
    calls = []

    def fake_bayes_floor(is_male, plurality, mother_age, gestation_weeks):
        calls.append((list(is_male), list(plurality), len(mother_age), len(gestation_weeks)))
        return 0.987

    def fake_conditional_mean(is_male, plurality, mother_age, gestation_weeks):
        return np.full(len(mother_age), 7.0)

    monkeypatch.setitem(sys.modules, "natality_sample", types.SimpleNamespace(
        bayes_floor=fake_bayes_floor, conditional_mean=fake_conditional_mean))
    monkeypatch.setenv("AIP_MODEL_DIR", str(tmp_path / "base" / "model") + "/")
    monkeypatch.setenv("AIP_TENSORBOARD_LOG_DIR", str(tmp_path / "base" / "logs") + "/")  # as the local cloud
    monkeypatch.setenv("CLOUD_ML_JOB_ID", "1234")

    assert main(["--manifest", str(manifest), *TINY_RUN]) == 0

    assert (tmp_path / "base" / "model" / "saved_model.pb").is_file()
    metrics = json.loads((tmp_path / "base" / "metrics.json").read_text())
    assert metrics["model_dir"] == str(tmp_path / "base" / "model")
    assert metrics["bayes_floor"] == 0.987
    assert metrics["best_possible_rmse"] > 0  # the fake's constant 7.0 lb, scored on the eval labels
    assert metrics["job_id"] == "1234"
    (sexes, pluralities, ages, weeks), = calls
    assert ages == weeks == len(sexes) == metrics["eval_examples"]
    assert {"True", "False", "Unknown"} >= set(sexes) and "Unknown" in sexes
    assert "Multiple(2+)" in pluralities or "Single(1)" in pluralities

    assert_progress_and_report(tmp_path / "base", metrics, evaluations=2)
    events = sorted((tmp_path / "base" / "logs").rglob("events.out.tfevents.*"))
    assert [path.parent.name for path in events] == ["train", "validation"]
    assert all(path.stat().st_size > 0 for path in events)


def reject_constant(name: str):
    raise AssertionError(f"{name} in strict JSON")


def assert_progress_and_report(job_dir: Path, metrics: dict, evaluations: int) -> None:
    """progress.json says the run finished; training_report.json holds what a person would plot."""
    progress = json.loads((job_dir / "progress.json").read_text(), parse_constant=reject_constant)
    assert set(progress) == {"format", "examples_seen", "examples_total", "evaluations_done",
                             "evaluations_total", "last_eval_rmse", "updated"}
    assert progress["format"] == "mlrelay.training-progress/v1"
    assert progress["evaluations_done"] == progress["evaluations_total"] == evaluations
    assert progress["examples_seen"] == progress["examples_total"] == metrics["train_examples_seen"]
    assert progress["last_eval_rmse"] == pytest.approx(metrics["history"][-1])
    assert datetime.fromisoformat(progress["updated"]).tzinfo is not None

    report = json.loads((job_dir / "training_report.json").read_text(), parse_constant=reject_constant)
    assert set(report) == {"format", "evaluations", "slices", "sample"}
    assert report["format"] == "mlrelay.training-report/v1"
    entries = report["evaluations"]
    assert [entry["examples_seen"] for entry in entries] == [
        metrics["train_examples_seen"] * (index + 1) // evaluations for index in range(evaluations)]
    assert all(set(entry) == {"examples_seen", "train_loss", "eval_loss", "eval_rmse"} for entry in entries)
    assert all(math.isfinite(entry[name]) and entry[name] > 0
               for entry in entries for name in ("train_loss", "eval_loss", "eval_rmse"))
    assert [entry["eval_rmse"] for entry in entries] == pytest.approx(metrics["history"])

    eval_rows = metrics["eval_examples"]
    sample = report["sample"]
    assert len(sample) == min(eval_rows, 500)
    for row in sample:
        assert set(row) == {"true", "predicted", "gestation_weeks", "plurality", "is_male", "mother_age"}
        assert all(math.isfinite(row[name])
                   for name in ("true", "predicted", "gestation_weeks", "mother_age"))
        assert isinstance(row["plurality"], str) and isinstance(row["is_male"], str)
    slices = report["slices"]
    if len(sample) == eval_rows:  # every eval row is in the sample: the slices can be counted from it
        assert set(slices) == {f"plurality={row['plurality']}" for row in sample} | GATE_SLICES
        assert slices["gestation_weeks<37"]["rows"] == sum(row["gestation_weeks"] < 37 for row in sample)
        assert slices["is_male=Unknown"]["rows"] == sum(row["is_male"] == "Unknown" for row in sample)
    assert GATE_SLICES <= set(slices)
    assert sum(entry["rows"] for name, entry in slices.items() if name.startswith("plurality=")) == eval_rows
    assert all(0 < entry["rows"] <= eval_rows and math.isfinite(entry["rmse"]) for entry in slices.values())


# --- bad input: a clear error, exit status 1, nothing written ---------------------------------

def run_expecting_failure(args: list[str], job_dir: Path, capsys) -> str:
    assert main([*args, "--job-dir", str(job_dir), *TINY_RUN]) == 1
    assert not job_dir.exists() or list(job_dir.iterdir()) == []
    return capsys.readouterr().err


def test_no_shards_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = run_expecting_failure(["--data-dir", str(tmp_path / "empty")], tmp_path / "job", capsys)
    assert "no train.csv-SSSSS-of-NNNNN shards found" in err


def test_unreadable_manifest_is_a_clear_error(tmp_path, capsys):
    manifest = synthetic_dataset(tmp_path / "data", records=40)
    manifest.write_text('{"format": "mlrelay.preprocess/v1", "splits": ')
    err = run_expecting_failure(["--manifest", str(manifest)], tmp_path / "job", capsys)
    assert "cannot read manifest" in err and str(manifest) in err


def test_manifest_listing_a_missing_shard_is_a_clear_error(tmp_path, capsys):
    manifest = synthetic_dataset(tmp_path / "data", records=40)
    (tmp_path / "data" / "train.csv-00001-of-00002").unlink()
    err = run_expecting_failure(["--manifest", str(manifest)], tmp_path / "job", capsys)
    assert "do not exist" in err and "train.csv-00001-of-00002" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad_line, problem",
    [("7.5,True,30,Single(1),39", "expected 6 fields"),
     ("seven,True,30,Single(1),39,k", "weight_pounds is not a number: 'seven'"),
     ("7.5,True,30,Single(1),nan,k", "gestation_weeks is not finite")],
)
def test_malformed_csv_line_is_named_with_its_file_and_line(tmp_path, capsys, bad_line, problem):
    synthetic_dataset(tmp_path / "data", records=40)
    shard = tmp_path / "data" / "train.csv-00001-of-00002"
    lines = shard.read_text().splitlines()
    lines.insert(3, bad_line)
    shard.write_text("\n".join(lines) + "\n")
    err = run_expecting_failure(["--data-dir", str(tmp_path / "data")], tmp_path / "job", capsys)
    assert f"{shard}:4: {problem}" in err


def test_bad_arguments_exit_with_status_2(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "--batch-size", "0"]) == 2
    assert "must be a positive integer" in capsys.readouterr().err
    assert main(["--job-dir", str(tmp_path)]) == 2  # neither --data-dir nor --manifest


def test_too_few_training_examples_is_a_clear_error(tmp_path, capsys):
    synthetic_dataset(tmp_path / "data", records=40)
    assert main(["--data-dir", str(tmp_path / "data"), "--job-dir", str(tmp_path / "job"),
                 "--num-train-examples", "100", "--batch-size", "64", "--num-evals", "2"]) == 1
    assert "needs at least 128" in capsys.readouterr().err
    assert not (tmp_path / "job").exists()


def test_no_output_location_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AIP_MODEL_DIR", raising=False)
    synthetic_dataset(tmp_path / "data", records=40)
    assert main(["--data-dir", str(tmp_path / "data"), *TINY_RUN]) == 1
    assert "pass --job-dir or set AIP_MODEL_DIR" in capsys.readouterr().err


def test_default_training_length_follows_the_data_within_bounds():
    from trainer.task import MAX_DEFAULT_TRAIN_EXAMPLES, default_train_examples

    assert default_train_examples(53_032, 512, 6) == 6 * 53_032  # the real rows: six passes
    assert default_train_examples(311_990, 512, 6) == MAX_DEFAULT_TRAIN_EXAMPLES  # capped
    assert default_train_examples(10, 512, 6) == 512 * 6  # at least one batch per evaluation
