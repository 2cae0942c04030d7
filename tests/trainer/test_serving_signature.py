"""The exported SavedModel serves raw features through ``serving_default``, without Keras.

Vertex AI's prebuilt TensorFlow prediction container loads the model with plain TensorFlow and
feeds each JSON instance's fields as batched 1-D tensors; these tests do the same in a fresh
process (``python -m trainer.serving_check``, which imports only TensorFlow).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import contract_data
from trainer.serving_check import SAMPLE_BATCH
from trainer.task import main
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serving")
    rows = contract_data.split_records(contract_data.synthetic_records(2000, seed=1))
    contract_data.write_dataset(str(root / "data"), rows, num_shards=2)
    status = main(["--data-dir", str(root / "data"), "--job-dir", str(root / "job"),
                   "--num-train-examples", "30000", "--num-evals", "1", "--batch-size", "256"])
    assert status == 0
    return root / "job" / "model"


def load_and_predict_in_fresh_process(model_dir: Path) -> tuple[int, dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, "-m", "trainer.serving_check", str(model_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    return completed.returncode, report


@pytest.fixture(scope="module")
def fresh_process_report(exported_model) -> dict:
    status, report = load_and_predict_in_fresh_process(exported_model)
    assert status == 0, report
    return report


def test_serving_default_predicts_a_weight_per_instance(fresh_process_report):
    assert "Unknown" in SAMPLE_BATCH["is_male"] and "Multiple(2+)" in SAMPLE_BATCH["plurality"]
    predictions = fresh_process_report["predictions"]
    assert len(predictions) == len(SAMPLE_BATCH["is_male"])
    assert all(math.isfinite(p) and 1.0 < p < 15.0 for p in predictions), predictions
    # A full-term single boy (39 weeks) outweighs premature triplets (32 weeks).
    full_term_single, premature_triplets = predictions[0], predictions[4]
    assert full_term_single > premature_triplets + 1.0, predictions


def test_signature_returns_only_weight_and_agrees_across_processes(exported_model, fresh_process_report):
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    loaded = tf.saved_model.load(str(exported_model))
    outputs = loaded.signatures["serving_default"](
        is_male=tf.constant(SAMPLE_BATCH["is_male"]),
        plurality=tf.constant(SAMPLE_BATCH["plurality"]),
        mother_age=tf.constant(SAMPLE_BATCH["mother_age"], dtype=tf.float32),
        gestation_weeks=tf.constant(SAMPLE_BATCH["gestation_weeks"], dtype=tf.float32),
    )
    assert set(outputs) == {"weight"} and outputs["weight"].shape == (len(SAMPLE_BATCH["is_male"]),)
    np.testing.assert_allclose(outputs["weight"].numpy(), fresh_process_report["predictions"], rtol=1e-6)


def test_check_fails_on_a_directory_that_is_not_a_saved_model(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"not a protocol buffer")
    status, report = load_and_predict_in_fresh_process(tmp_path)
    assert status == 1
    assert report["ok"] is False and "tf.saved_model.load" in report["error"]
