"""`mlrelay status RUN` and `--follow` against a Cloud Storage bucket (a local GCS emulator): the same
run store, the same view."""
from __future__ import annotations

import json
import socket
from datetime import datetime, timezone

import pytest

from events.ledger import LedgerEvent
from functions.run_store import RunStore, metrics_name, request_name
from mlrelay.cli import main
from mlrelay.run_view import progress_name
from tests.fakes.fake_gcs import gcs_emulator

BUCKET = "status-bucket"
RUN = "run-20261127-060000-0123456789"
TRAINING = "run-20261127-070000-abcdefabcd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs():
    with pytest.MonkeyPatch.context() as patch, gcs_emulator(_free_port(), BUCKET) as url:
        patch.setenv("STORAGE_EMULATOR_HOST", url)
        from functions.gcp_adapters import GcsStorage

        yield RunStore(GcsStorage(BUCKET), BUCKET)


def test_status_of_one_run_reads_the_cloud_bucket(runs, capsys):
    runs.storage.write(request_name(RUN), json.dumps({"origin": {"kind": "message"}, "request": {"limit": 9}}).encode())
    for state, stage, minute, details in (
            ("requested", "request", 0, {}), ("preprocessing", "preprocess", 1, {}),
            ("training", "train", 3, {"rows": {"train": 80, "eval": 20}, "input": {"rows_read": 100}}),
            ("failed", "train", 9, {"reason": "CustomJob 51 failed:\nOOM"})):
        runs.append(LedgerEvent(RUN, stage, state, datetime(2026, 11, 27, 6, minute, tzinfo=timezone.utc),
                                details=details))
    runs.storage.write(metrics_name(RUN), b"not json")  # unreadable: no figures, no error
    assert main(["status", RUN, "--bucket", f"gs://{BUCKET}"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {RUN}: failed\n  reason: CustomJob 51 failed: OOM\n")
    assert "rows: read 100; train 80, eval 20" in text and "RMSE" not in text
    assert main(["status", RUN, "--bucket", f"gs://{BUCKET}", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["request"] == {"limit": 9} and view["stages"]["train"]["seconds"] == 360.0 and "eval" not in view
    assert main(["status", RUN, "--bucket", f"gs://{BUCKET}", "--follow", "--json"]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["changes"][-1] == "run ended failed: CustomJob 51 failed: OOM"


def test_a_training_run_in_the_cloud_bucket_shows_its_progress(runs, capsys):
    runs.append(LedgerEvent(TRAINING, "train", "training", datetime(2026, 11, 27, 7, 0, tzinfo=timezone.utc)))
    runs.storage.write(progress_name(TRAINING), json.dumps({
        "format": "mlrelay.training-progress/v1", "examples_seen": 512, "examples_total": 2048,
        "evaluations_done": 1, "evaluations_total": 4, "last_eval_rmse": 1.2}).encode())
    assert main(["status", TRAINING, "--bucket", f"gs://{BUCKET}"]) == 0
    assert "training: 512 of 2,048 examples (25%), evaluation 1 of 4, last eval RMSE 1.2000" in capsys.readouterr().out
