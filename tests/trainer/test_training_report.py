"""progress.json, training_report.json and the TensorBoard summaries, without training a model.

The documents are built from hand-made histories and predictions, and the Keras callbacks are
driven by hand as ``fit`` would drive them; the trainer's own runs check the files it writes
(tests/trainer/test_trainer.py, tests/trainer/test_comparison.py).
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from trainer import evaluation, report

PROGRESS_FIELDS = {"format", "examples_seen", "examples_total", "evaluations_done", "evaluations_total",
                   "last_eval_rmse", "updated"}
SAMPLE_FIELDS = {"true", "predicted", "gestation_weeks", "plurality", "is_male", "mother_age"}


def eval_rows(count: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Eval columns as :func:`trainer.data.read_split` returns them: strings as objects, numbers float32."""
    index = np.arange(count)
    features = {
        "is_male": np.array(["True", "Unknown", "False", "Unknown"] * (count // 4 + 1), dtype=object)[:count],
        "plurality": np.where(index % 10 == 0, "Twins(2)", "Single(1)").astype(object),
        "mother_age": (20 + index % 20).astype(np.float32),
        "gestation_weeks": (30 + index % 12).astype(np.float32),
    }
    return features, (5.0 + (index % 7) * 0.3).astype(np.float32)


def test_progress_says_how_far_the_run_is():
    moment = datetime(2026, 12, 1, 16, 40, 0, 123456, tzinfo=timezone.utc)
    document = report.progress(2048, 6144, 2, 6, np.float32(1.25), updated=moment)
    assert document == {"format": "mlrelay.training-progress/v1", "examples_seen": 2048,
                        "examples_total": 6144, "evaluations_done": 2, "evaluations_total": 6,
                        "last_eval_rmse": 1.25, "updated": "2026-12-01T16:40:00.123Z"}
    assert set(document) == PROGRESS_FIELDS
    assert report.progress(0, 6144, 0, 6, None)["last_eval_rmse"] is None  # before the first evaluation
    assert report.progress(2048, 6144, 1, 6, float("nan"))["last_eval_rmse"] is None  # diverged
    now = datetime.fromisoformat(report.progress(0, 1, 0, 1, None)["updated"])
    assert now.tzinfo is not None and abs((datetime.now(timezone.utc) - now).total_seconds()) < 60


def test_one_entry_per_evaluation_from_the_keras_history():
    history = {"loss": [2.0, 1.5, 1.2], "rmse": [1.4, 1.2, 1.1], "val_loss": [1.8, 1.4, float("nan")],
               "val_rmse": [1.34, 1.18, 1.05]}
    assert report.evaluations(history, 1024) == [
        {"examples_seen": 1024, "train_loss": 2.0, "eval_loss": 1.8, "eval_rmse": 1.34},
        {"examples_seen": 2048, "train_loss": 1.5, "eval_loss": 1.4, "eval_rmse": 1.18},
        {"examples_seen": 3072, "train_loss": 1.2, "eval_loss": None, "eval_rmse": 1.05},
    ]
    with pytest.raises(ValueError, match="history lengths differ"):
        report.evaluations({**history, "val_rmse": [1.34]}, 1024)


def test_the_sample_is_at_most_500_rows_the_same_every_time_in_row_order():
    features, labels = eval_rows(1200)
    predicted = (labels + 0.5).reshape(-1, 1)  # Keras predicts (n, 1)
    rows = report.sample(features, labels, predicted)
    assert len(rows) == report.MAX_SAMPLE_ROWS == 500
    assert rows == report.sample(features, labels, predicted)
    chosen = report.sample_indices(1200)
    assert len(set(chosen.tolist())) == 500 and list(chosen) == sorted(chosen) and chosen[-1] < 1200
    first = int(chosen[0])
    assert rows[0] == {
        "true": float(str(labels[first])), "predicted": float(str(np.float32(labels[first] + 0.5))),
        "gestation_weeks": float(30 + first % 12), "plurality": features["plurality"][first],
        "is_male": features["is_male"][first], "mother_age": float(20 + first % 20),
    }
    assert all(set(row) == SAMPLE_FIELDS for row in rows)
    assert {row["plurality"] for row in rows} == {"Single(1)", "Twins(2)"}

    small_features, small_labels = eval_rows(30)
    small = report.sample(small_features, small_labels, small_labels)
    assert [row["true"] for row in small] == [float(str(value)) for value in small_labels]  # all, in order
    with pytest.raises(ValueError, match="cannot pair"):
        report.sample(small_features, small_labels, small_labels[:29])


def test_sample_floats_are_short_and_finite():
    features, labels = eval_rows(4)
    labels = np.array([7.3, 6.1, 8.0, 5.5], dtype=np.float32)
    rows = report.sample(features, labels, np.array([7.25, np.nan, 8.0, np.inf], dtype=np.float32))
    assert [row["true"] for row in rows] == [7.3, 6.1, 8.0, 5.5]  # not 7.300000190734863
    assert [row["predicted"] for row in rows] == [7.25, None, 8.0, None]


def test_the_report_document_is_strict_json():
    features, labels = eval_rows(40)
    predicted = labels + 0.1
    slices = {"plurality=Single(1)": {"rmse": 0.1, "rows": 36},
              "plurality=Twins(2)": {"rmse": math.nan, "rows": 4}}
    history = {"loss": [1.5, 1.2], "val_loss": [1.4, 1.3], "val_rmse": [1.18, 1.14]}
    document = report.training_report(history, 512, slices, features, labels, predicted)
    assert set(document) == {"format", "evaluations", "slices", "sample"}
    assert document["format"] == "mlrelay.training-report/v1"
    assert [entry["examples_seen"] for entry in document["evaluations"]] == [512, 1024]
    assert document["slices"] == {"plurality=Single(1)": {"rows": 36, "rmse": 0.1},
                                  "plurality=Twins(2)": {"rows": 4, "rmse": None}}
    assert len(document["sample"]) == 40
    json.dumps(document, allow_nan=False)


def test_a_strict_write_refuses_nan_and_leaves_nothing(tmp_path):
    path = tmp_path / "out" / "progress.json"
    with pytest.raises(ValueError):
        evaluation.write_json_atomically(str(path), {"x": float("nan")}, allow_nan=False)
    assert not path.parent.exists() or list(path.parent.iterdir()) == []
    evaluation.write_json_atomically(str(path), {"x": 1.5}, allow_nan=False)
    assert json.loads(path.read_text()) == {"x": 1.5}
    assert [p.name for p in path.parent.iterdir()] == ["progress.json"]


# --- the Keras callbacks, driven as fit drives them -------------------------------------------

def test_progress_is_written_at_the_start_and_after_each_evaluation(tmp_path, caplog):
    from trainer.monitoring import TrainingProgress  # noqa: PLC0415 (imports Keras)

    path = tmp_path / "progress.json"
    callback = TrainingProgress(str(path), examples_per_evaluation=1024, evaluations_total=3)
    with caplog.at_level(logging.INFO, logger="trainer"):
        callback.on_train_begin()
        at_start = json.loads(path.read_text())
        callback.on_epoch_end(0, {"loss": 1.9, "rmse": 1.38, "val_loss": 1.6, "val_rmse": 1.26})
        after_one = json.loads(path.read_text())
    assert (at_start["examples_seen"], at_start["examples_total"], at_start["evaluations_done"],
            at_start["evaluations_total"], at_start["last_eval_rmse"]) == (0, 3072, 0, 3, None)
    assert (after_one["examples_seen"], after_one["evaluations_done"], after_one["last_eval_rmse"]) == (
        1024, 1, pytest.approx(1.26))
    assert set(after_one) == PROGRESS_FIELDS
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["evaluation 1/3: 1024 of 3072 examples; "
                     "train loss 1.9000, eval loss 1.6000, eval RMSE 1.2600"]
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


def test_a_progress_write_that_fails_does_not_stop_training(tmp_path, caplog):
    from trainer.monitoring import TrainingProgress  # noqa: PLC0415 (imports Keras)

    (tmp_path / "not-a-directory").write_text("")
    callback = TrainingProgress(str(tmp_path / "not-a-directory" / "progress.json"), 1024, 3)
    with caplog.at_level(logging.WARNING, logger="trainer"):
        callback.on_train_begin()
        callback.on_epoch_end(0, {"loss": 1.9, "val_loss": 1.6, "val_rmse": 1.26})
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(w.startswith("progress not written to ") for w in warnings)


def read_scalars(log_dir: Path) -> dict[tuple[str, str, int], float]:
    """{(run, tag, step): value} of every scalar summary under ``log_dir``."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow.core.util import event_pb2  # noqa: PLC0415

    scalars = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(events)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                scalars[(events.parent.name, value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    return scalars


def test_epoch_scalars_are_written_as_keras_names_them(tmp_path):
    from trainer.monitoring import EpochScalars  # noqa: PLC0415 (imports TensorFlow)

    callback = EpochScalars(str(tmp_path / "logs"))
    callback.on_train_begin()
    callback.on_epoch_end(0, {"loss": 1.5, "rmse": 1.22, "val_loss": 1.25, "val_rmse": 1.12})
    callback.on_epoch_end(1, {"loss": 1.0, "rmse": 1.0, "val_loss": 1.21, "val_rmse": 1.1})
    callback.on_train_end()
    assert read_scalars(tmp_path / "logs") == {
        ("train", "epoch_loss", 0): 1.5, ("train", "epoch_rmse", 0): pytest.approx(1.22),
        ("validation", "epoch_loss", 0): 1.25, ("validation", "epoch_rmse", 0): pytest.approx(1.12),
        ("train", "epoch_loss", 1): 1.0, ("train", "epoch_rmse", 1): 1.0,
        ("validation", "epoch_loss", 1): pytest.approx(1.21),
        ("validation", "epoch_rmse", 1): pytest.approx(1.1),
    }


def test_keras_tensorboard_callback_where_tensorboard_is_installed(monkeypatch, tmp_path):
    import keras  # noqa: PLC0415

    from trainer import monitoring  # noqa: PLC0415

    monkeypatch.setattr(monitoring, "tensorboard_installed", lambda: True)
    with_package = monitoring.tensorboard_callback(str(tmp_path))
    assert isinstance(with_package, keras.callbacks.TensorBoard)
    assert (with_package.log_dir, with_package.update_freq, with_package.histogram_freq,
            with_package.write_graph) == (str(tmp_path), "epoch", 0, False)
    monkeypatch.setattr(monitoring, "tensorboard_installed", lambda: False)
    assert isinstance(monitoring.tensorboard_callback(str(tmp_path)), monitoring.EpochScalars)
    assert list(tmp_path.iterdir()) == []  # nothing is written before training starts
