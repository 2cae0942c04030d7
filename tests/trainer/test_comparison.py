"""comparison.json: the candidate and the champion scored on the same eval rows, per slice."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from trainer import comparison
from trainer.task import main
from tests.trainer.test_trainer import TINY_RUN, assert_progress_and_report, synthetic_dataset

# --- the figures, by hand ---------------------------------------------------------------------

# Five rows; errors (predicted - label) 2, 0, -1, 0, 1.
FEATURES = {
    "is_male": np.array(["True", "Unknown", "False", "Unknown", "True"], dtype=object),
    "plurality": np.array(["Single(1)", "Single(1)", "Twins(2)", "Multiple(2+)", "Single(1)"], dtype=object),
    "mother_age": np.array([30.0, 30.0, 25.0, 25.0, 41.0], dtype=np.float32),
    "gestation_weeks": np.array([39.0, 36.0, 35.0, 40.0, 37.0], dtype=np.float32),
}
LABELS = np.array([7.0, 6.0, 5.0, 4.0, 8.0], dtype=np.float32)
PREDICTED = np.array([[9.0], [6.0], [4.0], [4.0], [9.0]], dtype=np.float32)  # Keras's (n, 1)


def test_slices_are_each_plurality_present_preterm_and_unknown_sex():
    masks = comparison.slice_masks(FEATURES)
    assert {name: mask.nonzero()[0].tolist() for name, mask in masks.items()} == {
        "plurality=Single(1)": [0, 1, 4],
        "plurality=Twins(2)": [2],
        "plurality=Multiple(2+)": [3],
        "gestation_weeks<37": [1, 2],  # 37 weeks is term
        "is_male=Unknown": [1, 3],
    }


def test_slices_without_rows_are_left_out():
    term_and_sexed = {name: column[[0, 4]] for name, column in FEATURES.items()}
    assert list(comparison.slice_masks(term_and_sexed)) == ["plurality=Single(1)"]


def test_score_gives_the_rmse_overall_and_of_each_slice():
    scored = comparison.score(PREDICTED, LABELS, comparison.slice_masks(FEATURES))
    assert scored["rmse"] == pytest.approx(math.sqrt((4 + 0 + 1 + 0 + 1) / 5))
    assert scored["slices"] == {
        "plurality=Single(1)": {"rmse": pytest.approx(math.sqrt(5 / 3)), "rows": 3},
        "plurality=Twins(2)": {"rmse": pytest.approx(1.0), "rows": 1},
        "plurality=Multiple(2+)": {"rmse": 0.0, "rows": 1},
        "gestation_weeks<37": {"rmse": pytest.approx(math.sqrt(1 / 2)), "rows": 2},
        "is_male=Unknown": {"rmse": 0.0, "rows": 2},
    }
    with pytest.raises(ValueError, match="cannot compare"):
        comparison.score(PREDICTED[:4], LABELS, comparison.slice_masks(FEATURES))


def test_the_document_and_the_champion_entries():
    masks = comparison.slice_masks(FEATURES)
    candidate = comparison.score(PREDICTED, LABELS, masks)
    champion = comparison.champion_score("gs://b/m/", LABELS + 1.0, LABELS, masks)
    assert champion["artifact_uri"] == "gs://b/m/" and champion["rmse"] == pytest.approx(1.0)
    assert set(champion["slices"]) == set(candidate["slices"])
    document = comparison.comparison(LABELS, 1.25, candidate, champion)
    assert document == {"format": "mlrelay-model-comparison/1", "eval_rows": 5,
                        "mean_baseline_rmse": 1.25, "candidate": candidate, "champion": champion}
    assert comparison.comparison(LABELS, 1.25, candidate, None)["champion"] is None
    json.dumps(document, allow_nan=False)  # plain JSON: ints, floats, strings

    with pytest.raises(ValueError, match="1 non-finite value"):
        comparison.champion_score("m", np.array([7.0, np.nan, 5.0, 4.0, 8.0]), LABELS, masks)
    error = comparison.champion_error("m", OSError("no such\n\n  directory: /gcs/b/m"))
    assert error == {"artifact_uri": "m", "error": "OSError: no such directory: /gcs/b/m"}
    long_error = comparison.champion_error("m", "x" * 5000)["error"]
    assert len(long_error) == comparison.MAX_ERROR_CHARS and long_error.endswith("...")


# --- runs of the trainer with and without a champion ------------------------------------------

def read_eval_rows(data_dir: Path, limit: int) -> tuple[dict[str, list], list[float]]:
    """The first ``limit`` eval rows in shard order, read with csv rather than the trainer's code."""
    columns: dict[str, list] = {"is_male": [], "plurality": [], "mother_age": [], "gestation_weeks": []}
    labels: list[float] = []
    for shard in sorted(data_dir.glob("eval.csv-*")):
        with open(shard, newline="") as handle:
            for weight, is_male, age, plurality, weeks, _key in csv.reader(handle):
                labels.append(float(weight))
                columns["is_male"].append(is_male)
                columns["plurality"].append(plurality)
                columns["mother_age"].append(float(age))
                columns["gestation_weeks"].append(float(weeks))
    return {name: values[:limit] for name, values in columns.items()}, labels[:limit]


def rmse_through_the_signature(model_dir: Path, columns: dict[str, list], labels: list[float]) -> float:
    import tensorflow as tf  # noqa: PLC0415

    loaded = tf.saved_model.load(str(model_dir))
    weight = loaded.signatures["serving_default"](
        is_male=tf.constant(columns["is_male"]),
        plurality=tf.constant(columns["plurality"]),
        mother_age=tf.constant(columns["mother_age"], dtype=tf.float32),
        gestation_weeks=tf.constant(columns["gestation_weeks"], dtype=tf.float32),
    )["weight"].numpy().astype(np.float64)
    return float(np.sqrt(np.mean(np.square(weight - np.array(labels)))))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("comparison") / "data"
    synthetic_dataset(directory)
    return directory


@pytest.fixture(scope="module")
def champion_job(data_dir) -> Path:
    """A first run without a champion, whose model is the next runs' champion.

    Run from its own directory without ``AIP_TENSORBOARD_LOG_DIR``: no TensorBoard events may
    appear anywhere, not even in a ``logs/`` of the working directory (Keras's default).
    """
    job_dir = data_dir.parent / "champion"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("AIP_TENSORBOARD_LOG_DIR", raising=False)
        patch.chdir(data_dir.parent)
        assert main(["--data-dir", str(data_dir), "--job-dir", str(job_dir), *TINY_RUN]) == 0
    return job_dir


def read_outputs(job_dir: Path) -> tuple[dict, dict]:
    return (json.loads((job_dir / "comparison.json").read_text()),
            json.loads((job_dir / "metrics.json").read_text()))


@pytest.mark.slow
def test_without_a_champion_the_candidate_is_still_scored_per_slice(champion_job):
    compared, metrics = read_outputs(champion_job)
    assert compared["format"] == "mlrelay-model-comparison/1" and compared["champion"] is None
    assert compared["eval_rows"] == metrics["eval_examples"]
    assert compared["candidate"]["rmse"] == metrics["eval_rmse"]
    assert compared["mean_baseline_rmse"] == metrics["baseline_rmse"]


@pytest.mark.slow
def test_the_training_report_shows_the_slices_the_gate_reads(champion_job):
    compared, metrics = read_outputs(champion_job)
    report = json.loads((champion_job / "training_report.json").read_text())
    assert report["slices"] == {name: {"rows": entry["rows"], "rmse": entry["rmse"]}
                                for name, entry in compared["candidate"]["slices"].items()}
    assert_progress_and_report(champion_job, metrics, evaluations=2)
    assert list(champion_job.parent.rglob("events.out.tfevents.*")) == []  # no AIP_TENSORBOARD_LOG_DIR


@pytest.mark.slow
def test_the_champion_is_scored_on_the_candidates_eval_rows(data_dir, champion_job, tmp_path):
    job_dir = tmp_path / "job"
    eval_rows = 150  # fewer than the 200 eval rows: the champion must see exactly these
    status = main(["--data-dir", str(data_dir), "--job-dir", str(job_dir), *TINY_RUN, "--seed", "2",
                   "--num-eval-examples", str(eval_rows),
                   "--champion-model-dir", str(champion_job / "model")])
    assert status == 0
    compared, metrics = read_outputs(job_dir)
    assert compared["eval_rows"] == metrics["eval_examples"] == eval_rows
    assert compared["candidate"]["rmse"] == metrics["eval_rmse"]
    assert compared["mean_baseline_rmse"] == metrics["baseline_rmse"]

    champion = compared["champion"]
    assert champion["artifact_uri"] == str(champion_job / "model")
    columns, labels = read_eval_rows(data_dir, eval_rows)
    assert champion["rmse"] == pytest.approx(
        rmse_through_the_signature(champion_job / "model", columns, labels), abs=1e-6)
    assert champion["rmse"] != pytest.approx(compared["candidate"]["rmse"], abs=1e-6)  # two models

    for entry in (compared["candidate"], champion):
        slices = entry["slices"]
        assert sum(s["rows"] for name, s in slices.items() if name.startswith("plurality=")) == eval_rows
        assert slices["is_male=Unknown"]["rows"] == columns["is_male"].count("Unknown") == eval_rows // 2
        assert slices["gestation_weeks<37"]["rows"] == sum(w < 37 for w in columns["gestation_weeks"])
        assert all(s["rows"] > 0 and s["rmse"] >= 0 for s in slices.values())
    assert set(champion["slices"]) == set(compared["candidate"]["slices"])
    assert {f"plurality={p}" for p in columns["plurality"]} <= set(champion["slices"])


@pytest.mark.slow
def test_a_champion_that_cannot_be_loaded_is_recorded_and_the_run_succeeds(data_dir, tmp_path):
    job_dir = tmp_path / "job"
    missing = tmp_path / "no-such-model"
    status = main(["--data-dir", str(data_dir), "--job-dir", str(job_dir), *TINY_RUN,
                   "--champion-model-dir", str(missing)])
    assert status == 0
    compared, metrics = read_outputs(job_dir)
    assert (job_dir / "model" / "saved_model.pb").is_file()
    assert compared["champion"]["artifact_uri"] == str(missing)
    assert set(compared["champion"]) == {"artifact_uri", "error"}
    assert str(missing) in compared["champion"]["error"] and "\n" not in compared["champion"]["error"]
    assert compared["candidate"]["rmse"] == metrics["eval_rmse"]
    assert [p.name for p in job_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_a_malformed_champion_uri_is_a_bad_argument(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "--job-dir", str(tmp_path / "job"),
                 "--champion-model-dir", "gs:///model"]) == 2
    assert "no bucket name" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "--champion-model-dir", ""]) == 2
    assert not (tmp_path / "job").exists()
